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

import hashlib
import secrets
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Final

from jointpay.crypto.certs import CardMode
from jointpay.domain.money import format_amount
from jointpay.domain.records import CardRecord, Leg, StatementRecord, Transfer
from jointpay.service.errors import BadInput, Refused
from jointpay.storage.base import Conflict, InsufficientFunds, UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import Bank

REPAY_KIND = "repay"


def settle(bank: Bank, until: int | None = None) -> dict[str, Any]:
    """One settlement run up to ``until`` (now by default)."""
    from jointpay.service.bank import income_account

    now = bank.clock()
    end = now if until is None else until
    if end > now:
        raise BadInput("bad_time", "a settlement period cannot end in the future")
    with bank.store.transaction() as tx:
        # The run locks the accounts it reads and posts to in id order, as every posting
        # locks its accounts, so that it cannot deadlock with a deposit, a withdrawal or a
        # repayment: the bank's income first (interest is posted to it; a second run at
        # the same time waits here for the first to commit), then each card's credit
        # account ("card:..."), then the merchants' accounts ("merchant:..."). So the
        # statements come before the releases. (Releases first held a merchant's accounts
        # while the interest waited for the income, which a deposit with a fee to that
        # merchant held while it waited for them: PostgreSQL killed one of the two.)
        tx.get_balances([income_account(bank.currency)], lock=True)
        statements: list[StatementRecord] = []
        cards = tx.list_cards(mode=CardMode.CREDIT.value)
        for card in sorted(cards, key=lambda c: c.float_account):
            st = _statement(bank, tx, card, end)
            if st is not None:
                statements.append(st)
        released = _release_clearing(bank, tx, now)
    cur = bank.currency
    return {
        "released": {sid: format_amount(v, cur) for sid, v in sorted(released.items())},
        "statements": [_statement_json(st, cur) for st in statements],
    }


def _release_clearing(bank: Bank, tx: UnitOfWork, now: int) -> dict[str, int]:
    """Pay merchants the credit payments deposited at least the clearing delay ago."""
    from jointpay.service.bank import clearing_account

    cutoff = now - bank.policy.credit_clearing_delay
    merchants = {clearing_account(m.sid): m for m in tx.list_merchants()}
    waiting_in = tx.get_balances(sorted(merchants))  # the clearing accounts that exist
    # What is due is read under a lock (a second run released it again, or took what
    # was not due yet), and each merchant's account with it: one sorted query, as the
    # release posts to both and a deposit locks them in id order.
    pairs = {acc: merchants[acc].account_id for acc in waiting_in}
    held = tx.get_balances(sorted({*pairs, *pairs.values()}), lock=True)
    out: dict[str, int] = {}
    for acc, merchant_account in sorted(pairs.items()):
        sid = merchants[acc].sid
        waiting = tx.account_flow_since(acc, cutoff, "deposit")  # not yet due
        due = held[acc] - max(0, waiting)
        if due <= 0:
            continue
        tx.post(
            Transfer(
                f"release:{sid}:{now}:{secrets.token_hex(4)}",
                "release",
                bank.currency,
                (Leg(acc, -due), Leg(merchant_account, due)),
                f"credit payments cleared up to {cutoff}",
                now,
            )
        )
        out[sid] = due
    return out


def _posted_since(tx: UnitOfWork, account_id: str, moment: int) -> int:
    """What the entries posted to a credit account at ``moment`` or later add up to, of
    every kind (a statement sees the account as of its period's end by taking them
    back)."""
    return tx.account_flow_since(account_id, moment - 1)


def _statement(bank: Bank, tx: UnitOfWork, card: CardRecord, end: int) -> StatementRecord | None:
    """The card's statement for ``[last period end, end)``, once a period has passed.

    Everything on it is as of ``end``: the payments accepted before it, and the balance
    due is what the holder owed then (payments and repayments booked later, by a run
    with ``until`` in the past or in the run's own second, are the next statement's).
    So each statement asks the previous one's balance due, plus its charges, interest
    and late interest, less what was repaid in its period (unless the account was in
    credit). Late interest is on what the previous statement asked and was not repaid
    from its period's end to its due date (both included). A statement is not drawn
    before the previous one, if it asked for anything, has fallen due, so that each
    statement's lateness is judged by the next, whatever the grace and the period.
    """
    from jointpay.service.bank import income_account

    policy = bank.policy
    card_number, credit_account = card.card_number, card.float_account
    prev = tx.last_statement(card_number)
    # Periods are half-open, [start, end), at the clock's one-second resolution: a
    # payment accepted in the very second of a run falls in the next period.
    start = prev.period_end if prev is not None else card.created_at
    if end - start < policy.credit_period:
        return None
    if prev is not None and prev.balance_due > 0 and end <= prev.due_at:
        return None  # the previous statement is not due yet (credit_grace >= credit_period)
    # the account under a lock (in id order, see settle): a repayment or a deposit
    # committed between the two reads below would be counted in one and not the other
    balance = tx.get_balances([credit_account], lock=True).get(credit_account, 0)
    owed = -(balance - _posted_since(tx, credit_account, end))  # as of the period's end
    payments = tx.card_payments_between(card_number, start - 1, end - 1)
    charges = sum(p.amount for p in payments)
    interest = sum(policy.basis_points(p.amount, policy.credit_interest_bp) for p in payments)
    late = 0
    if prev is not None and prev.balance_due > 0:  # and its due date is before end
        repaid = tx.account_flow_since(
            credit_account, prev.period_end - 1, REPAY_KIND
        ) - tx.account_flow_since(credit_account, prev.due_at, REPAY_KIND)
        late = policy.basis_points(max(0, prev.balance_due - repaid), policy.late_interest_bp)
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


TRANSFER_ID_MAX: Final = 128
"""The width of a transfer's id (``transfers.id`` in storage/tables.py)."""


def _repay_id(holder: str, reference: str) -> str:
    """A repayment's transfer id, the same for the same holder and reference (that is
    what makes it idempotent). A holder and a reference of 64 characters each make
    135, past the column's 128 (PostgreSQL refused it with a raw DataError; SQLite
    does not check): such a pair is named by its digest instead."""
    plain = f"repay:{holder}:{reference}"
    if len(plain) <= TRANSFER_ID_MAX:
        return plain
    return "repay:#" + hashlib.sha256(f"{holder}\0{reference}".encode()).hexdigest()


def repay(
    bank: Bank, holder: str, amount: int, *, ref: str | None = None, from_account: bool = False
) -> dict[str, Any]:
    """A holder's settlement made by other means, spread over its credit cards' debts
    (in the order of :func:`_allocate`).

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
        cards = tx.list_cards(holder=holder, mode=CardMode.CREDIT.value)  # by number
        if not cards:
            raise Refused("unknown_holder", f"holder {holder!r} has no credit card")
        source = holder_account(holder) if from_account else equity_account(bank.currency)
        # The debts are read under a lock on every account the posting touches, taken in
        # one sorted query (the posting's own order, and the deposit's): two repayments
        # of one holder at once read the same debts and both paid the same card.
        floats = {c.float_account for c in cards}
        balances = tx.get_balances(sorted({*floats, source}), lock=True)
        parts = _allocate(tx, cards, balances, amount)
        legs = [Leg(acc, part) for acc, part in sorted(parts.items())]
        legs.append(Leg(source, -amount))
        try:
            tx.post(
                Transfer(
                    _repay_id(holder, reference),
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
        owed = {
            c.card_number: max(
                0, -(balances.get(c.float_account, 0) + parts.get(c.float_account, 0))
            )
            for c in cards
        }
    cur = bank.currency
    return {
        "holder": holder,
        "paid": format_amount(amount, cur),
        "ref": reference,
        "owed": {n: format_amount(v, cur) for n, v in owed.items()},
    }


def _allocate(
    tx: UnitOfWork, cards: list[CardRecord], balances: dict[str, int], amount: int
) -> dict[str, int]:
    """``amount`` spread over the cards' credit accounts: first what their last
    statements ask and was not repaid yet, the earliest due date first, then the debt no
    statement asked for yet, the card whose current period began first first (its
    statement comes first); ties by card number. More than is owed stays as credit on
    the card with the lowest number (``cards`` are in card-number order)."""
    asked: list[tuple[int, str, str, int]] = []
    unbilled: list[tuple[int, str, str, int]] = []
    for card in cards:
        acc = card.float_account
        debt = max(0, -balances.get(acc, 0))
        last = tx.last_statement(card.card_number)
        billed = 0
        if last is not None and last.balance_due > 0:
            repaid = tx.account_flow_since(acc, last.period_end - 1, REPAY_KIND)
            billed = min(debt, max(0, last.balance_due - repaid))
            if billed:
                asked.append((last.due_at, card.card_number, acc, billed))
        if debt > billed:
            since = last.period_end if last is not None else card.created_at
            unbilled.append((since, card.card_number, acc, debt - billed))
    parts: dict[str, int] = {}
    left = amount
    for _, _, acc, owed in sorted(asked) + sorted(unbilled):
        part = min(owed, left)
        if part:
            parts[acc] = parts.get(acc, 0) + part
            left -= part
    if left:  # more than is owed
        parts[cards[0].float_account] = parts.get(cards[0].float_account, 0) + left
    return parts


def _statement_json(st: StatementRecord, currency: str) -> dict[str, Any]:
    d: dict[str, Any] = asdict(st)
    for k in ("charges", "interest", "late_interest", "balance_due"):
        d[k] = format_amount(d[k], currency)
    d["card"] = d.pop("card_number")
    return d
