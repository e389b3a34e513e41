"""the on-line checks each merchant asked about each card, for the policy's limit

Yes or no to many amounts brackets a card's balance: the bank now counts the checks
one merchant (its bank and S_id) asks about one card within a sliding window
(``online_checks`` within ``online_checks_window``) and refuses past it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "online_checks",
        sa.Column("card_number", sa.String(length=19), nullable=False),
        sa.Column("bank_id", sa.String(length=64), nullable=False),
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("at", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("asks", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("card_number", "bank_id", "sid", "at"),
    )
    op.create_index("online_checks_at", "online_checks", ["at"])


def downgrade() -> None:
    op.drop_index("online_checks_at", table_name="online_checks")
    op.drop_table("online_checks")
