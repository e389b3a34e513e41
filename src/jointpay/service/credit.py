"""Credit cards after the payments: the settlement run and repayments (``bank settle``).

A credit card's payments are booked at deposit against its credit account (which goes
below zero: what the holder owes), and the merchant is paid out of the bank's money,
less the merchant service charge, possibly after a clearing delay. Here:

* :func:`settle` pays merchants the credit payments whose clearing delay has run,
  then draws up one statement per credit card whose billing period has passed since
  its last one (or since its issue):
  the period's payments, interest per credit transaction, interest on what the
  previous statement asked for and was not paid by its due date, the balance due and
  the due date. Interest is income, posted against the card's credit account.
* :func:`repay` books a settlement made by other means (a cheque, a transfer) against
  the holder's credit accounts. The card's usable limit (its C_balance) is raised at
  its next contact with the bank, by the FIG. 10 exchange (``withdraw``, or a
  merchant's on-line terminal during a payment); no money moves then.

Each run is one unit of work: it commits whole or not at all.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from jointpay.crypto.certs import CardMode
from jointpay.domain.money import format_amount
from jointpay.domain.records import CardRecord, Leg, StatementRecord, Transfer
from jointpay.service.errors import BadInput, Refused
from jointpay.storage.base import Conflict, InsufficientFunds, NotFound, UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import Bank

REPAY_KIND = "repay"


def settle(bank: Bank, until: int | None = None) -> dict[str, Any]:
    """One settlement run up to ``until`` (now by default)."""
    now = bank.clock()
    end = now if until is None else until
    if end > now:
        raise BadInput("bad_time", "a settlement period cannot end in the future")
    with bank.store.transaction() as tx:
        released = _release_clearing(bank, tx, now)
        statements: list[StatementRecord] = []
        for card in tx.list_cards():
            if card.mode == CardMode.CREDIT.value:
                st = _statement(bank, tx, card, end)
                if st is not None:
                    statements.append(st)
    cur = bank.currency
    return {
        "released": {sid: format_amount(v, cur) for sid, v in sorted(released.items())},
        "statements": [_statement_json(st, cur) for st in statements],
    }


def _release_clearing(bank: Bank, tx: UnitOfWork, now: int) -> dict[str, int]:
    """Pay merchants the credit payments deposited at least the clearing delay ago."""
    from jointpay.service.bank import clearing_account

    cutoff = now - bank.policy.credit_clearing_delay
    out: dict[str, int] = {}
    for m in tx.list_merchants():
        try:
            acc = tx.get_account(clearing_account(m.sid))
        except NotFound:
            continue
        waiting = tx.account_flow_since(acc.id, cutoff, "deposit")  # not yet due
        due = acc.balance - max(0, waiting)
        if due <= 0:
            continue
        tx.post(
            Transfer(
                f"release:{m.sid}:{now}:{secrets.token_hex(4)}",
                "release",
                bank.currency,
                (Leg(acc.id, -due), Leg(m.account_id, due)),
                f"credit payments cleared up to {cutoff}",
                now,
            )
        )
        out[m.sid] = due
    return out


def _statement(bank: Bank, tx: UnitOfWork, card: CardRecord, end: int) -> StatementRecord | None:
    """The card's statement for ``(last period end, end]``, once a period has passed."""
    from jointpay.service.bank import income_account

    policy = bank.policy
    card_number, credit_account = card.card_number, card.float_account
    prev = tx.last_statement(card_number)
    # Periods are half-open, [start, end), at the clock's one-second resolution: a
    # payment accepted in the very second of a run falls in the next period.
    start = prev.period_end if prev is not None else card.created_at
    if end - start < policy.credit_period:
        return None
    payments = tx.card_payments_between(card_number, start - 1, end - 1)
    charges = sum(p.amount for p in payments)
    interest = sum(policy.basis_points(p.amount, policy.credit_interest_bp) for p in payments)
    late = 0
    if prev is not None and prev.balance_due > 0 and end > prev.due_at:
        repaid = tx.account_flow_since(credit_account, prev.period_end - 1, REPAY_KIND)
        late = policy.basis_points(max(0, prev.balance_due - repaid), policy.late_interest_bp)
    owed = -tx.get_account(credit_account).balance
    if not payments and not late and owed <= 0:
        return None  # nothing happened and nothing is owed: no statement
    number = 1 if prev is None else prev.number + 1
    if interest + late:
        tx.post(
            Transfer(
                f"interest:{card_number}:{number}",
                "interest",
                bank.currency,
                (
                    Leg(credit_account, -(interest + late)),
                    Leg(income_account(bank.currency), interest + late),
                ),
                f"statement {number}",
                end,
            )
        )
    st = StatementRecord(
        card_number,
        number,
        start,
        end,
        charges,
        interest,
        late,
        max(0, owed + interest + late),
        end + policy.credit_grace,
    )
    tx.add_statement(st)
    return st


def repay(
    bank: Bank, holder: str, amount: int, *, ref: str | None = None, from_account: bool = False
) -> dict[str, Any]:
    """A holder's settlement made by other means, spread over its credit cards' debts.

    ``ref`` (a cheque number, a transfer reference) makes the booking idempotent: the
    same reference again is refused as a ``duplicate`` and moves nothing. The money
    comes from outside the bank (``from_account`` False: it arrives through the bank's
    equity, as cash paid in) or from the holder's own account at the bank.
    """
    from jointpay.service.bank import equity_account, holder_account

    if amount <= 0:
        raise BadInput("bad_amount", "a repayment must be positive")
    reference = ref if ref is not None else secrets.token_hex(8)
    if not 1 <= len(reference) <= 64 or not reference.isprintable():
        raise BadInput("bad_ref", "a reference is 1-64 printable characters")
    now = bank.clock()
    with bank.store.transaction() as tx:
        cards = [
            c for c in tx.list_cards() if c.holder == holder and c.mode == CardMode.CREDIT.value
        ]
        if not cards:
            raise Refused("unknown_holder", f"holder {holder!r} has no credit card")
        debts = {c.float_account: max(0, -tx.get_account(c.float_account).balance) for c in cards}
        parts: dict[str, int] = {}
        left = amount
        for acc, debt in debts.items():
            parts[acc] = min(debt, left)
            left -= parts[acc]
        parts[cards[0].float_account] += left  # more than is owed stays as credit
        legs = [Leg(acc, part) for acc, part in parts.items() if part]
        source = holder_account(holder) if from_account else equity_account(bank.currency)
        legs.append(Leg(source, -amount))
        try:
            tx.post(
                Transfer(
                    f"repay:{holder}:{reference}",
                    REPAY_KIND,
                    bank.currency,
                    tuple(legs),
                    f"settlement by {'account' if from_account else 'other means'}",
                    now,
                )
            )
        except Conflict as exc:
            raise Refused("duplicate", f"repayment {reference!r} was booked before") from exc
        except InsufficientFunds as exc:
            raise Refused(
                "insufficient_funds", f"holder {holder!r}'s account cannot pay this"
            ) from exc
        owed = {c.card_number: max(0, -tx.get_account(c.float_account).balance) for c in cards}
    cur = bank.currency
    return {
        "holder": holder,
        "paid": format_amount(amount, cur),
        "ref": reference,
        "owed": {n: format_amount(v, cur) for n, v in owed.items()},
    }


def _statement_json(st: StatementRecord, currency: str) -> dict[str, Any]:
    d: dict[str, Any] = asdict(st)
    for k in ("charges", "interest", "late_interest", "balance_due"):
        d[k] = format_amount(d[k], currency)
    d["card"] = d.pop("card_number")
    return d
