"""each stored CARD-CERT keeps its joint key's comb powers (modp)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # nullable: certificates stored before keep none and are verified as before
    op.add_column("certs", sa.Column("key_powers", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("certs") as batch:
        batch.drop_column("key_powers")
