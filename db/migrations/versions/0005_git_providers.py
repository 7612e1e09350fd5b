"""git_providers and git_provider_credentials (issue 4: providers and credentials)

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "git_providers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("provider_type", sa.String(length=20), nullable=False),
        sa.Column("base_url", sa.String(length=2000), nullable=True),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "name"),
    )
    with op.batch_alter_table("git_providers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_git_providers_account_id"), ["account_id"], unique=False)

    op.create_table(
        "git_provider_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("provider_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("auth_type", sa.String(length=20), nullable=False),
        sa.Column("encrypted_token", sa.LargeBinary(), nullable=False),
        sa.Column("username", sa.String(length=200), nullable=True),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("last_tested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_ok", sa.Boolean(), nullable=True),
        sa.Column("last_test_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["provider_id"], ["git_providers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("provider_id", "name"),
    )
    with op.batch_alter_table("git_provider_credentials", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_git_provider_credentials_account_id"), ["account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_git_provider_credentials_provider_id"), ["provider_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("git_provider_credentials", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_git_provider_credentials_provider_id"))
        batch_op.drop_index(batch_op.f("ix_git_provider_credentials_account_id"))
    op.drop_table("git_provider_credentials")
    with op.batch_alter_table("git_providers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_git_providers_account_id"))
    op.drop_table("git_providers")
