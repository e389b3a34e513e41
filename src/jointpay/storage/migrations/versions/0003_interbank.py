"""payments across banks (acquirer and clearing house)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "interbank",
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("card_number", sa.String(length=19), nullable=False),
        sa.Column("ser", sa.String(length=20), nullable=False),  # U64: ordered text
        sa.Column("acquirer", sa.String(length=64), nullable=False),
        sa.Column("clearing_house", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("spec", sa.LargeBinary(), nullable=False),
        sa.Column("ref", sa.String(length=160), nullable=False),
        sa.Column("accepted_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "card_number", "ser"),
    )


def downgrade() -> None:
    op.drop_table("interbank")
