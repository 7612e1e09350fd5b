"""approvals schedules templates

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 13:20:00.321802
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "pipeline_templates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("slug", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("difficulty", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("is_public", sa.Boolean(), nullable=False),
        sa.Column("installation_count", sa.Integer(), nullable=False),
        sa.Column("rating_average", sa.Double(), nullable=False),
        sa.Column("rating_count", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "slug"),
    )
    with op.batch_alter_table("pipeline_templates", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pipeline_templates_account_id"), ["account_id"], unique=False)

    op.create_table(
        "pipeline_template_ratings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("rating", sa.Integer(), nullable=False),
        sa.Column("review", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["template_id"], ["pipeline_templates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("template_id", "account_id"),
    )
    with op.batch_alter_table("pipeline_template_ratings", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_template_ratings_template_id"), ["template_id"], unique=False
        )

    op.create_table(
        "pipeline_template_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("template_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(length=50), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("changelog", sa.Text(), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["template_id"], ["pipeline_templates.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("template_id", "version"),
    )
    with op.batch_alter_table("pipeline_template_versions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pipeline_template_versions_template_id"), ["template_id"], unique=False
        )

    op.create_table(
        "schedules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("pipeline_id", sa.Integer(), nullable=False),
        sa.Column("cron", sa.String(length=100), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("last_run_id", sa.Integer(), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["pipeline_id"], ["pipelines.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_schedules_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_schedules_pipeline_id"), ["pipeline_id"], unique=False)

    op.create_table(
        "approval_decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("decision", sa.String(length=20), nullable=False),
        sa.Column("decided_by", sa.String(length=320), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("token_id", sa.Integer(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["pipeline_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_approval_decisions_account_id"), ["account_id"], unique=False)
        batch_op.create_index("ix_approval_decisions_run_step", ["run_id", "step_id"], unique=False)

    op.create_table(
        "step_approval_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("step_id", sa.String(length=100), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["pipeline_runs.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    with op.batch_alter_table("step_approval_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_step_approval_tokens_account_id"), ["account_id"], unique=False)
        batch_op.create_index("ix_step_approval_tokens_run_step", ["run_id", "step_id"], unique=False)

    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("template_version_id", sa.Integer(), nullable=True))


def downgrade() -> None:

    with op.batch_alter_table("pipelines", schema=None) as batch_op:
        batch_op.drop_column("template_version_id")

    with op.batch_alter_table("step_approval_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_step_approval_tokens_run_step")
        batch_op.drop_index(batch_op.f("ix_step_approval_tokens_account_id"))

    op.drop_table("step_approval_tokens")
    with op.batch_alter_table("approval_decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_approval_decisions_run_step")
        batch_op.drop_index(batch_op.f("ix_approval_decisions_account_id"))

    op.drop_table("approval_decisions")
    with op.batch_alter_table("schedules", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_schedules_pipeline_id"))
        batch_op.drop_index(batch_op.f("ix_schedules_account_id"))

    op.drop_table("schedules")
    with op.batch_alter_table("pipeline_template_versions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_template_versions_template_id"))

    op.drop_table("pipeline_template_versions")
    with op.batch_alter_table("pipeline_template_ratings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_template_ratings_template_id"))

    op.drop_table("pipeline_template_ratings")
    with op.batch_alter_table("pipeline_templates", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pipeline_templates_account_id"))

    op.drop_table("pipeline_templates")
