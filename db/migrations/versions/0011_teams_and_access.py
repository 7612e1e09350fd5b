"""Teams and access (issue 13): user profile/notification/operator/deactivation columns,
invitations, the audit log

Revision ID: 0011
Revises: 0010

"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('name', sa.String(length=200), nullable=False, server_default=''))
        batch.add_column(sa.Column('notify_slack_url', sa.String(length=2000), nullable=True))
        batch.add_column(sa.Column('notify_email', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('is_operator', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('deactivated_at', sa.DateTime(timezone=True), nullable=True))
    # The first admin of the first account (the one bootstrap created) operates the install.
    op.execute("UPDATE users SET is_operator = true WHERE id = (SELECT min(u.id) FROM users u "
               "WHERE u.role = 'admin' AND u.account_id = (SELECT min(id) FROM accounts))")

    op.create_table('invitations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=False),
    sa.Column('role', sa.String(length=20), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('invited_by', sa.Integer(), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('user_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['invited_by'], ['users.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    op.create_index('ix_invitations_account_id', 'invitations', ['account_id'])

    op.create_table('audit_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('action', sa.String(length=100), nullable=False),
    sa.Column('actor_user_id', sa.Integer(), nullable=True),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.Column('token_id', sa.Integer(), nullable=True),
    sa.Column('target_type', sa.String(length=50), nullable=False),
    sa.Column('target_id', sa.String(length=100), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('ip', sa.String(length=64), nullable=False),
    sa.Column('user_agent', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_audit_events_account_created', 'audit_events', ['account_id', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_audit_events_account_created', table_name='audit_events')
    op.drop_table('audit_events')
    op.drop_index('ix_invitations_account_id', table_name='invitations')
    op.drop_table('invitations')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('deactivated_at')
        batch.drop_column('is_operator')
        batch.drop_column('notify_email')
        batch.drop_column('notify_slack_url')
        batch.drop_column('name')
