"""audit_log: one successor per entry (prev_hash unique), so concurrent appends cannot fork it

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 12:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("uq_audit_prev_hash", "audit_log", ["prev_hash"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_audit_prev_hash", table_name="audit_log")
