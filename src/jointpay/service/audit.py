"""The audit: every ledger invariant, checked, with each violation said in words.

Invariants (docs/operations.md lists them with the harness that tests each):

1. every transfer's legs sum to zero, and the entries sum to zero per currency;
2. each account's cached balance equals the sum of its entries;
3. no account that may not go negative is below zero (card floats, holders, merchants);
4. no (card, ser) is credited twice (the payments table's key; re-checked here), and
   no card's accepted ser is above the highest ser recorded on the card (a deposit
   looks for earlier records only at or below it);
5. each cash card's float equals its loads (withdrawals) minus its accepted payments;
   each credit card spent no more than the C_balance it was granted, and its credit
   account carries exactly its accepted payments;
6. each merchant account (with its clearing account) equals what its accepted
   payments credited, when the bank charges no fees;
7. open breach alerts are reported (they are not ledger violations, but an auditor
   must see them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from jointpay.domain.money import format_amount
from jointpay.domain.records import Account, AccountKind, CardRecord
from jointpay.storage.base import UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import AuditReport, Bank


def run_audit(bank: Bank, tx: UnitOfWork) -> AuditReport:
    from jointpay.service.bank import AuditReport, clearing_account, income_account

    violations: list[str] = []
    cur = bank.currency
    for tid in tx.audit_unbalanced_transfers():
        violations.append(f"transfer {tid} does not sum to zero")
    for currency, total in sorted(tx.audit_currency_sums().items()):
        if total != 0:
            violations.append(f"entries in {currency} sum to {total}, not zero")
    sums = tx.audit_entry_sums()
    accounts = tx.list_accounts()
    for account in accounts:
        actual = sums.get(account.id, 0)
        if actual != account.balance:
            violations.append(
                f"account {account.id}: balance {account.balance} but entries sum to {actual}"
            )
        if not account.allow_negative and account.balance < 0:
            violations.append(f"account {account.id} is negative ({account.balance})")
    loads: dict[str, int] = defaultdict(int)
    for w in tx.iter_withdrawals():
        loads[w.card_number] += w.amount
    spent: dict[str, int] = defaultdict(int)
    per_merchant: dict[str, int] = defaultdict(int)
    seen: set[tuple[str, int]] = set()
    top_ser: dict[str, int] = {}
    via: dict[str, int] = defaultdict(int)
    n_payments = 0
    for p in tx.iter_payments():
        n_payments += 1
        if (p.card_number, p.ser) in seen:
            violations.append(f"payment {p.card_number}/{p.ser} credited twice")
        seen.add((p.card_number, p.ser))
        top_ser[p.card_number] = max(top_ser.get(p.card_number, -1), p.ser)
        spent[p.card_number] += p.amount
        if p.deposit_id.startswith("ib:"):  # our card at another bank's merchant
            via[p.deposit_id.split(":")[1]] += p.amount
        else:
            per_merchant[p.sid] += p.amount
    for r in tx.list_interbank():  # another bank's card at our merchant
        if r.acquirer == bank.bank_id:
            per_merchant[r.sid] += r.amount
            via[r.clearing_house] -= r.amount
    for account in accounts:  # each house account: issued minus acquired plus settled
        if account.id.startswith("interbank:"):
            ch = account.id.split(":", 1)[1]
            settled = tx.account_flow_since(account.id, -1, "interbank_settlement")
            if account.balance != via[ch] + settled:
                violations.append(
                    f"{account.id}: balance {account.balance} but cleared payments "
                    f"{via[ch]} and settlements {settled}"
                )
    by_id = {a.id: a for a in accounts}
    cards = tx.list_cards()
    for card in cards:
        if top_ser.get(card.card_number, -1) > card.highest_ser:
            violations.append(
                f"card {card.card_number}: payment ser {top_ser[card.card_number]} above "
                f"its highest recorded ser {card.highest_ser}"
            )
    credit = _credit_checks(cards, tx, violations, by_id, loads, spent)
    for card in cards:
        if card.mode != "cash":
            continue
        acc = by_id.get(card.float_account)
        expected = loads[card.card_number] - spent[card.card_number]
        if acc is None:
            violations.append(f"card {card.card_number} has no float account")
        elif acc.balance != expected:
            violations.append(
                f"card {card.card_number}: float {acc.balance} but loads minus "
                f"accepted payments is {expected}"
            )
    no_fees = bank.policy.payment_fee == 0 and bank.policy.credit_fee_bp == 0
    for m in tx.list_merchants():
        acc = by_id.get(m.account_id)
        waiting = by_id.get(clearing_account(m.sid))
        held = acc.balance + (waiting.balance if waiting else 0) if acc else 0
        if acc is None:
            violations.append(f"merchant {m.sid} has no account")
        elif no_fees and held != per_merchant[m.sid]:
            violations.append(
                f"merchant {m.sid}: balance {held} (with clearing) but accepted payments "
                f"total {per_merchant[m.sid]}"
            )
    alerts = tx.list_alerts()
    figures: dict[str, Any] = {
        "accounts": len(accounts),
        "payments": n_payments,
        "alerts": len(alerts),
        "float_total": format_amount(
            sum(a.balance for a in accounts if a.kind == AccountKind.CARD_FLOAT), cur
        ),
        "income": format_amount(
            sum(a.balance for a in accounts if a.id.startswith("bank:income:")), cur
        ),
        "interest": format_amount(tx.account_flow_since(income_account(cur), -1, "interest"), cur),
        "credit_owed": format_amount(credit["owed"], cur),
        "credit_exposure": format_amount(credit["exposure"], cur),
        "merchant_clearing": format_amount(
            sum(a.balance for a in accounts if a.id.endswith(":clearing")), cur
        ),
        "bounced_cheques": sum(1 for a in alerts if a.kind == "bounced_cheque"),
        "interbank": {
            a.id.split(":", 1)[1]: format_amount(a.balance, cur)
            for a in accounts
            if a.id.startswith("interbank:")
        },
    }
    return AuditReport(not violations, violations, figures)


def _credit_checks(
    cards: list[CardRecord],
    tx: UnitOfWork,
    violations: list[str],
    by_id: dict[str, Account],
    granted: dict[str, int],
    spent: dict[str, int],
) -> dict[str, int]:
    """Each credit card spent no more C_balance than it was granted, and its credit
    account carries exactly its accepted payments; returns what is owed and the
    bank's exposure (owed plus the C_balance the cards may still spend)."""
    owed = exposure = 0
    for card in cards:
        if card.mode != "credit":
            continue
        acc = by_id.get(card.float_account)
        n = card.card_number
        if acc is None:
            violations.append(f"credit card {n} has no credit account")
            continue
        if spent[n] > granted[n]:
            violations.append(f"credit card {n}: payments {spent[n]} above its grants {granted[n]}")
        booked = -tx.account_flow_since(acc.id, -1, "deposit")
        if booked != spent[n]:
            violations.append(
                f"credit card {n}: deposits booked {booked} but accepted payments total {spent[n]}"
            )
        owed += max(0, -acc.balance)
        exposure += max(0, -acc.balance) + granted[n] - spent[n]
    return {"owed": owed, "exposure": exposure}
