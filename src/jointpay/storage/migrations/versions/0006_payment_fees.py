"""each payment keeps the fee the bank kept of it

``payments.fee`` and ``interbank.fee`` (the acquirer's fee on another bank's card): the
audit checks each merchant's account against its payments less their fees, and the
bank's fee income against the fees, whatever the fee policy says today.

Rows written before this migration recorded no fee. What the bank charged on them is
in the ledger, as the income leg of each deposit's posting (``deposit:<deposit id>``;
a payment a clearing house brought to the card's bank was charged nothing). That
total is spread over the deposit's rows (its payments and its other banks' payments),
evenly, as far as each row's amount allows: a flat fee on payments above it comes
back exactly, and a mix of credit fees comes back with the deposit's total right,
which is all the audit compares. A deposit posted without an income leg keeps 0. So
an old row's fee is what the ledger said the deposit charged when the bank was
upgraded: a fee skimmed before that moment (the merchant's leg lowered and the
income's raised by as much) cannot be told from a fee. Each deposit is filled once
(one whose rows carry fees already is left alone), so running this again changes
nothing.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("payments", "interbank")
_DEPOSIT = "deposit:"


def upgrade() -> None:
    bind = op.get_bind()
    have = sa.inspect(bind)
    for table in _TABLES:
        if "fee" not in {c["name"] for c in have.get_columns(table)}:
            op.add_column(
                table, sa.Column("fee", sa.BigInteger(), nullable=False, server_default="0")
            )
    _backfill(bind)


def _backfill(bind: sa.Connection) -> None:
    """Each deposit's fee income, spread over its rows (see the module's text)."""
    income = bind.execute(
        sa.text(
            "SELECT e.transfer_id, SUM(e.amount) FROM entries e"
            " JOIN accounts a ON a.id = e.account_id"
            " JOIN transfers t ON t.id = e.transfer_id"
            " WHERE a.kind = 'income' AND t.kind = 'deposit'"
            " AND substr(t.id, 1, 8) = :prefix"
            " GROUP BY e.transfer_id"
        ),
        {"prefix": _DEPOSIT},
    ).all()
    charged = {tid[len(_DEPOSIT) :]: int(total) for tid, total in income if int(total) > 0}
    if not charged:
        return  # the bank never charged a payment fee: 0 is every row's fee
    rows: dict[str, list[tuple[int, str, tuple[str, ...]]]] = defaultdict(list)
    filled: set[str] = set()
    for dep, card, ser, amount, fee in bind.execute(
        sa.text("SELECT deposit_id, card_number, ser, amount, fee FROM payments")
    ):
        if dep in charged:
            rows[dep].append((int(amount), "payments", (card, ser)))
            if fee:
                filled.add(dep)
    for ref, issuer, card, ser, amount, fee in bind.execute(
        sa.text("SELECT ref, issuer, card_number, ser, amount, fee FROM interbank")
    ):
        if ref in charged:
            rows[ref].append((int(amount), "interbank", (issuer, card, ser)))
            if fee:
                filled.add(ref)
    updates: dict[str, list[dict[str, object]]] = {table: [] for table in _TABLES}
    for dep, items in rows.items():
        if dep in filled:
            continue
        items.sort()
        left = charged[dep]
        for i, (amount, table, key) in enumerate(items):
            fee = min(amount, -(-left // (len(items) - i)))  # an even share, rounded up
            left -= fee
            if fee:
                names = ("c", "s") if table == "payments" else ("i", "c", "s")
                updates[table].append({"f": fee, **dict(zip(names, key, strict=True))})
    if updates["payments"]:
        bind.execute(
            sa.text("UPDATE payments SET fee = :f WHERE card_number = :c AND ser = :s"),
            updates["payments"],
        )
    if updates["interbank"]:
        bind.execute(
            sa.text(
                "UPDATE interbank SET fee = :f WHERE issuer = :i AND card_number = :c AND ser = :s"
            ),
            updates["interbank"],
        )


def downgrade() -> None:
    for table in _TABLES:
        op.drop_column(table, "fee")
