"""cards are found by their holder (a repayment's credit cards) through an index

A repayment looked for its holder's credit cards among every card of the bank, read
whole into the bank process: a second and more for a bank of a million cards.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if "cards_holder" not in {i["name"] for i in sa.inspect(op.get_bind()).get_indexes("cards")}:
        op.create_index("cards_holder", "cards", ["holder"])


def downgrade() -> None:
    op.drop_index("cards_holder", table_name="cards")
