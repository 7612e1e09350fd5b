"""AI configs, prompt templates and usage; the Integration Framework (templates, credentials,
instances, executions); A2A task links on runs and container instances (issue 14)

Revision ID: 0012
Revises: 0011

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ai_configs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('provider', sa.String(length=30), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('encrypted_api_key', sa.LargeBinary(), nullable=True),
    sa.Column('base_url', sa.String(length=2000), nullable=True),
    sa.Column('max_tokens', sa.Integer(), nullable=False),
    sa.Column('temperature', sa.Float(), nullable=True),
    sa.Column('run_token_budget', sa.Integer(), nullable=True),
    sa.Column('monthly_token_budget', sa.Integer(), nullable=True),
    sa.Column('input_cost_per_mtok', sa.Float(), nullable=True),
    sa.Column('output_cost_per_mtok', sa.Float(), nullable=True),
    sa.Column('is_default', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'name')
    )
    with op.batch_alter_table('ai_configs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ai_configs_account_id'), ['account_id'], unique=False)

    op.create_table('integration_credentials',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('credential_type', sa.String(length=30), nullable=False),
    sa.Column('encrypted_data', sa.LargeBinary(), nullable=False),
    sa.Column('field_names', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'name')
    )
    with op.batch_alter_table('integration_credentials', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_integration_credentials_account_id'), ['account_id'], unique=False)

    op.create_table('integration_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('slug', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('integration_type', sa.String(length=30), nullable=False),
    sa.Column('category', sa.String(length=30), nullable=False),
    sa.Column('version', sa.String(length=50), nullable=False),
    sa.Column('configuration_schema', sa.JSON(), nullable=False),
    sa.Column('input_schema', sa.JSON(), nullable=False),
    sa.Column('output_schema', sa.JSON(), nullable=False),
    sa.Column('credential_requirements', sa.JSON(), nullable=False),
    sa.Column('default_configuration', sa.JSON(), nullable=False),
    sa.Column('is_public', sa.Boolean(), nullable=False),
    sa.Column('is_featured', sa.Boolean(), nullable=False),
    sa.Column('install_count', sa.Integer(), nullable=False),
    sa.Column('usage_count', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'slug')
    )
    with op.batch_alter_table('integration_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_integration_templates_account_id'), ['account_id'], unique=False)

    op.create_table('prompt_templates',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('category', sa.String(length=50), nullable=False),
    sa.Column('current_version', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'name')
    )
    with op.batch_alter_table('prompt_templates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompt_templates_account_id'), ['account_id'], unique=False)

    op.create_table('integration_instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('credential_id', sa.Integer(), nullable=True),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('configuration', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('execution_count', sa.Integer(), nullable=False),
    sa.Column('success_count', sa.Integer(), nullable=False),
    sa.Column('failure_count', sa.Integer(), nullable=False),
    sa.Column('last_executed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['credential_id'], ['integration_credentials.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['template_id'], ['integration_templates.id'], ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('account_id', 'name')
    )
    with op.batch_alter_table('integration_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_integration_instances_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_integration_instances_template_id'), ['template_id'], unique=False)

    op.create_table('prompt_template_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('template_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('system', sa.Text(), nullable=True),
    sa.Column('variables_schema', sa.JSON(), nullable=False),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['template_id'], ['prompt_templates.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('template_id', 'version')
    )
    with op.batch_alter_table('prompt_template_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_prompt_template_versions_template_id'), ['template_id'], unique=False)

    op.create_table('ai_usage',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('ai_config_id', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('step_id', sa.String(length=100), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('provider', sa.String(length=30), nullable=False),
    sa.Column('model', sa.String(length=200), nullable=False),
    sa.Column('input_tokens', sa.Integer(), nullable=False),
    sa.Column('output_tokens', sa.Integer(), nullable=False),
    sa.Column('cost_estimate', sa.Float(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('stop_reason', sa.String(length=50), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['ai_config_id'], ['ai_configs.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('ai_usage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ai_usage_account_id'), ['account_id'], unique=False)
        batch_op.create_index('ix_ai_usage_config_created', ['ai_config_id', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_ai_usage_run_id'), ['run_id'], unique=False)

    op.create_table('integration_executions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('instance_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('trigger_type', sa.String(length=20), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('step_id', sa.String(length=100), nullable=True),
    sa.Column('input', sa.JSON(), nullable=False),
    sa.Column('output', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('workflow_id', sa.String(length=200), nullable=True),
    sa.Column('created_by_user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('duration_ms', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['instance_id'], ['integration_instances.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('integration_executions', schema=None) as batch_op:
        batch_op.create_index('ix_integration_executions_account_id_id', ['account_id', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_integration_executions_instance_id'), ['instance_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_integration_executions_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_integration_executions_status'), ['status'], unique=False)

    with op.batch_alter_table('container_instances', schema=None) as batch_op:
        batch_op.add_column(sa.Column('a2a_task_id', sa.String(length=200), nullable=True))

    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('a2a_task_id', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('a2a_callback_url', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('a2a_callback_secret', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('a2a_callback_status', sa.String(length=100), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('pipeline_runs', schema=None) as batch_op:
        batch_op.drop_column('a2a_callback_status')
        batch_op.drop_column('a2a_callback_secret')
        batch_op.drop_column('a2a_callback_url')
        batch_op.drop_column('a2a_task_id')

    with op.batch_alter_table('container_instances', schema=None) as batch_op:
        batch_op.drop_column('a2a_task_id')

    with op.batch_alter_table('integration_executions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_integration_executions_status'))
        batch_op.drop_index(batch_op.f('ix_integration_executions_run_id'))
        batch_op.drop_index(batch_op.f('ix_integration_executions_instance_id'))
        batch_op.drop_index('ix_integration_executions_account_id_id')

    op.drop_table('integration_executions')
    with op.batch_alter_table('ai_usage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ai_usage_run_id'))
        batch_op.drop_index('ix_ai_usage_config_created')
        batch_op.drop_index(batch_op.f('ix_ai_usage_account_id'))

    op.drop_table('ai_usage')
    with op.batch_alter_table('prompt_template_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompt_template_versions_template_id'))

    op.drop_table('prompt_template_versions')
    with op.batch_alter_table('integration_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_integration_instances_template_id'))
        batch_op.drop_index(batch_op.f('ix_integration_instances_account_id'))

    op.drop_table('integration_instances')
    with op.batch_alter_table('prompt_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_prompt_templates_account_id'))

    op.drop_table('prompt_templates')
    with op.batch_alter_table('integration_templates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_integration_templates_account_id'))

    op.drop_table('integration_templates')
    with op.batch_alter_table('integration_credentials', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_integration_credentials_account_id'))

    op.drop_table('integration_credentials')
    with op.batch_alter_table('ai_configs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ai_configs_account_id'))

    op.drop_table('ai_configs')
