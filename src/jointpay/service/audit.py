"""The audit: every ledger invariant, checked, with each violation said in words.

Invariants (docs/operations.md lists them):

1. every transfer's legs sum to zero, and the entries sum to zero per currency; each
   entry is in its transfer's currency and its account's, and each account in the
   bank's;
2. each account's cached balance equals the sum of its entries, and every entry's
   transfer and account exist;
3. no account that may not go negative is below zero (card floats, holders, merchants);
4. no (card, ser) is credited twice (the payments table's key; re-checked here), each
   card's highest recorded ser is its highest accepted one (a deposit looks for
   earlier records only at or below it), and each payment's row says what the signed
   spec stored with it says: its merchant, amount, currency and CARD-CERT (and, made
   at one of our merchants, our bank);
5. each card's seq is its last recorded withdrawal's, with one recorded (applied or
   refused) for every seq up to it; each cash card's float equals its loads
   (withdrawals) minus its accepted payments; each credit card spent no more than
   the C_balance it was granted, its credit account carries exactly its accepted
   payments and its statements' interest; each holder's account was debited exactly
   its cash cards' withdrawals with their fees, and its cheque cards' accepted
   payments;
6. each merchant account (with its clearing account) equals what its accepted
   payments credited: their amounts less the fees recorded with them; every deposit
   session's payments have its deposit record and its posting (``deposit:<id>``),
   which credits the merchant and the bank's income exactly that; each merchant's
   last deposit sequence is its last recorded deposit's;
7. the bank's income is exactly the payments' recorded fees, the withdrawals' fees and
   the statements' interest; each clearing house account carries exactly the payments
   cleared through it and the settlements;
8. each account is moved only by the kinds of posting that may move it;
9. open breach alerts are reported (they are not ledger violations, but an auditor
   must see them).

Every sum is taken in the database (:class:`~jointpay.storage.base.UnitOfWork`'s
``audit_*`` methods), never by loading the payment rows.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from jointpay.crypto.errors import CryptoError
from jointpay.domain.money import format_amount
from jointpay.domain.records import AccountKind, MerchantRecord
from jointpay.protocol.spec import PaymentSpec
from jointpay.storage.base import CardPayments, CardWithdrawals, Totals, UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import AuditReport, Bank

MAY_MOVE: dict[AccountKind, frozenset[str]] = {
    AccountKind.EQUITY: frozenset({"cash_in", "repay", "interbank_settlement"}),
    AccountKind.INCOME: frozenset({"deposit", "withdrawal", "interest"}),
    AccountKind.HOLDER: frozenset({"cash_in", "withdrawal", "deposit", "repay"}),
    AccountKind.CARD_FLOAT: frozenset({"withdrawal", "deposit"}),
    AccountKind.CREDIT: frozenset({"deposit", "interest", "repay"}),
    AccountKind.MERCHANT: frozenset({"deposit", "release"}),
    AccountKind.CLEARING: frozenset({"deposit", "interbank_settlement"}),
}
"""The kinds of posting that may move each kind of account (a new kind of posting
must be added here, and its amounts checked against the records that make them)."""

DEPOSIT_POSTING = "deposit:"
"""The id of a deposit session's posting: this, then the session's deposit id."""

SPEC_DETAILS = 50
"""Payments disagreeing with their spec that are described field by field; past
these, each is named only (a bank whose rows were rewritten wholesale)."""

_NO_PAYMENTS = CardPayments(0, 0, -1)
_NO_WITHDRAWALS = CardWithdrawals(0, 0, 0, 0)


def run_audit(bank: Bank, tx: UnitOfWork) -> AuditReport:
    from jointpay.service.bank import AuditReport

    return AuditReport(*_Audit(bank, tx).run())


class _Audit:
    """One audit: the books read once (as sums), then each invariant checked."""

    def __init__(self, bank: Bank, tx: UnitOfWork) -> None:
        self.bank, self.tx = bank, tx
        self.cur, self.own = bank.currency, bank.bank_id
        self.violations: list[str] = []
        self.accounts = tx.list_accounts()
        self.by_id = {a.id: a for a in self.accounts}
        self.flows = tx.audit_flows()
        self.cards = tx.list_cards()
        self.payments = tx.audit_payments_by_card()
        self.deposits = tx.audit_payments_by_deposit()
        self.acquired = tx.audit_interbank_acquired(self.own)
        self.withdrawals = tx.audit_withdrawals_by_card()
        self.interest: dict[str, int] = defaultdict(int)
        for st in tx.list_statements():
            self.interest[st.card_number] += st.interest + st.late_interest

    def flow(self, account_id: str, kind: str) -> int:
        return self.flows.get((account_id, kind), 0)

    def run(self) -> tuple[bool, list[str], dict[str, Any]]:
        self._ledger()
        self._kinds()
        self._payments()
        self._withdrawals()
        self._floats()
        credit = self._credit()
        self._holders()
        self._merchants()
        self._deposits()
        self._income()
        self._houses()
        figures = self._figures(credit)
        return not self.violations, self.violations, figures

    # -- 1-3: the ledger itself ----------------------------------------------------------
    def _ledger(self) -> None:
        v, tx = self.violations, self.tx
        for tid in tx.audit_unbalanced_transfers():
            v.append(f"transfer {tid} does not sum to zero")
        for currency, total in sorted(tx.audit_currency_sums().items()):
            if total != 0:
                v.append(f"entries in {currency} sum to {total}, not zero")
        for tid, acc in tx.audit_currency_mismatches():
            v.append(
                f"transfer {tid}: its leg on {acc} is not in its transfer's and its "
                "account's currency"
            )
        sums: dict[str, int] = defaultdict(int)
        for (acc, kind), amount in sorted(
            self.flows.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            sums[acc] += amount
            if kind is None:
                v.append(f"account {acc}: entries of {amount} belong to no transfer")
        for acc in sorted(sums.keys() - self.by_id.keys()):
            v.append(f"entries of {sums[acc]} name account {acc}, which does not exist")
        for account in self.accounts:
            if account.currency != self.cur:
                v.append(
                    f"account {account.id} is in {account.currency}, not the bank's {self.cur}"
                )
            actual = sums.get(account.id, 0)
            if actual != account.balance:
                v.append(
                    f"account {account.id}: balance {account.balance} but entries sum to {actual}"
                )
            if not account.allow_negative and account.balance < 0:
                v.append(f"account {account.id} is negative ({account.balance})")

    def _kinds(self) -> None:
        for (acc, kind), amount in sorted(
            self.flows.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")
        ):
            account = self.by_id.get(acc)
            if kind is None or account is None:
                continue  # said above
            allowed = MAY_MOVE.get(account.kind)
            if allowed is not None and kind not in allowed:
                self.violations.append(
                    f"account {acc}: {amount} posted by {kind!r} transfers, which never "
                    f"move a {account.kind.value} account"
                )

    # -- 4: the payments -----------------------------------------------------------------
    def _payments(self) -> None:
        v = self.violations
        known = {c.card_number for c in self.cards}
        for n in sorted(self.payments.keys() - known):
            v.append(f"card {n}: {self.payments[n].rows} accepted payments, but no such card")
        for card in self.cards:
            top = self.payments.get(card.card_number, _NO_PAYMENTS).top_ser
            if top > card.highest_ser:
                v.append(
                    f"card {card.card_number}: payment ser {top} above "
                    f"its highest recorded ser {card.highest_ser}"
                )
            elif top < card.highest_ser:
                v.append(
                    f"card {card.card_number}: highest recorded ser {card.highest_ser} but "
                    + ("no accepted payment" if top < 0 else f"its highest accepted is {top}")
                )
        v += self.tx.audit_row_misfits()
        for i, (n, ser) in enumerate(self.tx.audit_spec_mismatches(self.own, self.cur)):
            v.append(
                f"payment {n}/{ser}: "
                + (
                    self._spec_detail(n, ser)
                    if i < SPEC_DETAILS
                    else "its row is not what its signed spec says"
                )
            )

    def _spec_detail(self, card_number: str, ser: int) -> str:
        p = self.tx.get_payment(card_number, ser)
        if p is None:  # pragma: no cover - it was there a moment ago, in this snapshot
            return "its row is not what its signed spec says"
        row = f"its row says {p.amount} {p.currency} to {p.sid}"
        try:
            spec = PaymentSpec.decode(p.spec)
        except CryptoError:
            return f"{row}, and its signed spec cannot be read"
        said = f"its signed spec {spec.amount} {spec.currency} to {spec.sid}"
        if spec.card_cert_id != p.cert_id:
            said += f" under CARD-CERT {spec.card_cert_id.hex()}, not {p.cert_id.hex()}"
        if spec.bank_id != self.own and not p.deposit_id.startswith("ib:"):
            said += f" at bank {spec.bank_id}"
        if p.currency != self.cur:
            said += f" (the bank keeps {self.cur})"
        return f"{row}, {said}"

    # -- 5: the cards --------------------------------------------------------------------
    def _withdrawals(self) -> None:
        v = self.violations
        known = {c.card_number for c in self.cards}
        for n in sorted(self.withdrawals.keys() - known):
            v.append(f"card {n}: {self.withdrawals[n].rows} withdrawals recorded, but no such card")
        for card in self.cards:
            w = self.withdrawals.get(card.card_number, _NO_WITHDRAWALS)
            if card.seq != w.top_seq:
                v.append(
                    f"card {card.card_number}: seq {card.seq} but its last recorded "
                    f"withdrawal is seq {w.top_seq}"
                )
            elif w.rows != w.top_seq:
                v.append(
                    f"card {card.card_number}: {w.rows} withdrawals recorded for seq 1 to "
                    f"{w.top_seq}"
                )

    def _floats(self) -> None:
        for card in self.cards:
            if card.mode != "cash":
                continue
            n = card.card_number
            acc = self.by_id.get(card.float_account)
            loads = self.withdrawals.get(n, _NO_WITHDRAWALS).amount
            expected = loads - self.payments.get(n, _NO_PAYMENTS).amount
            if acc is None:
                self.violations.append(f"card {n} has no float account")
            elif acc.balance != expected:
                self.violations.append(
                    f"card {n}: float {acc.balance} but loads minus accepted payments is {expected}"
                )

    def _credit(self) -> dict[str, int]:
        """Each credit card spent no more C_balance than it was granted, and its credit
        account carries exactly its accepted payments and its statements' interest;
        returns what is owed and the bank's exposure (owed plus the C_balance the cards
        may still spend)."""
        v = self.violations
        owed = exposure = 0
        for card in self.cards:
            if card.mode != "credit":
                continue
            acc = self.by_id.get(card.float_account)
            n = card.card_number
            if acc is None:
                v.append(f"credit card {n} has no credit account")
                continue
            granted = self.withdrawals.get(n, _NO_WITHDRAWALS).amount
            spent = self.payments.get(n, _NO_PAYMENTS).amount
            if spent > granted:
                v.append(f"credit card {n}: payments {spent} above its grants {granted}")
            booked = -self.flow(acc.id, "deposit")
            if booked != spent:
                v.append(
                    f"credit card {n}: deposits booked {booked} but accepted payments total {spent}"
                )
            charged = -self.flow(acc.id, "interest")
            if charged != self.interest.get(n, 0):
                v.append(
                    f"credit card {n}: interest booked {charged} but its statements charge "
                    f"{self.interest.get(n, 0)}"
                )
            owed += max(0, -acc.balance)
            exposure += max(0, -acc.balance) + granted - spent
        for n in sorted(
            self.interest.keys() - {c.card_number for c in self.cards if c.mode == "credit"}
        ):
            v.append(f"statements charge interest to {n}, which is no credit card")
        return {"owed": owed, "exposure": exposure}

    def _holders(self) -> None:
        """Each holder's account: debited its cash cards' withdrawals with their fees,
        and its cheque cards' accepted payments, exactly (what else moves it, opening
        balances and repayments, comes from outside the bank's records)."""
        loads: dict[str, int] = defaultdict(int)
        cheques: dict[str, int] = defaultdict(int)
        for card in self.cards:
            n = card.card_number
            if card.mode == "cash":
                w = self.withdrawals.get(n, _NO_WITHDRAWALS)
                loads[card.holder_account] += w.amount + w.fee
            elif card.mode == "cheque":
                cheques[card.holder_account] += self.payments.get(n, _NO_PAYMENTS).amount
            if card.holder_account not in self.by_id:
                self.violations.append(
                    f"card {n}: its holder's account {card.holder_account} does not exist"
                )
        holders = {a.id for a in self.accounts if a.kind == AccountKind.HOLDER}
        holders |= {c.holder_account for c in self.cards}
        for acc in sorted(holders):
            paid = -self.flow(acc, "withdrawal")
            if paid != loads.get(acc, 0):
                self.violations.append(
                    f"holder account {acc}: withdrawals debited {paid} but its cash cards' "
                    f"withdrawals and their fees total {loads.get(acc, 0)}"
                )
            paid = -self.flow(acc, "deposit")
            if paid != cheques.get(acc, 0):
                self.violations.append(
                    f"holder account {acc}: cheques debited {paid} but its cheque cards' "
                    f"accepted payments total {cheques.get(acc, 0)}"
                )

    # -- 6: the merchants and their deposits ---------------------------------------------
    def _merchants(self) -> None:
        from jointpay.service.bank import clearing_account

        v = self.violations
        credited: dict[str, int] = defaultdict(int)
        for (dep, sid), t in self.deposits.items():
            if not dep.startswith("ib:"):  # our cards at another bank's merchant
                credited[sid] += t.amount - t.fee
        for (_, sid, _), t in self.acquired.items():  # another bank's cards at ours
            credited[sid] += t.amount - t.fee
        merchants = self.tx.list_merchants()
        for sid in sorted(credited.keys() - {m.sid for m in merchants}):
            v.append(
                f"payments credited {credited[sid]} to {sid}, which is no merchant of the bank"
            )
        for m in merchants:
            acc = self.by_id.get(m.account_id)
            waiting = self.by_id.get(clearing_account(m.sid))
            if acc is None:
                v.append(f"merchant {m.sid} has no account")
                continue
            held = acc.balance + (waiting.balance if waiting else 0)
            if held != credited[m.sid]:
                v.append(
                    f"merchant {m.sid}: balance {held} (with clearing) but accepted payments "
                    f"less their fees total {credited[m.sid]}"
                )
        self._last_seqs(merchants)

    def _last_seqs(self, merchants: list[MerchantRecord]) -> None:
        top: dict[str, int] = defaultdict(int)
        for sid, seq in self.tx.audit_deposit_rows().values():
            top[sid] = max(top[sid], seq)
        for m in merchants:
            if m.last_seq != top[m.sid]:
                self.violations.append(
                    f"merchant {m.sid}: last deposit sequence {m.last_seq} but its recorded "
                    f"deposits reach {top[m.sid]}"
                )

    def _deposits(self) -> None:
        """Each deposit session: its record, its posting, and the posting's credits to the
        merchant and to the bank's income against what its payments record."""
        records = self.tx.audit_deposit_rows()
        postings = {
            tid[len(DEPOSIT_POSTING) :]: legs
            for tid, legs in self.tx.audit_legs("deposit", DEPOSIT_POSTING).items()
        }
        sessions: dict[str, Totals] = {}
        merchants: dict[str, set[str]] = defaultdict(set)
        rows = [
            ((dep, sid), t) for (dep, sid), t in self.deposits.items() if not dep.startswith("ib:")
        ]
        rows += [((dep, sid), t) for (dep, sid, _), t in self.acquired.items()]
        for (dep, sid), t in rows:
            had = sessions.get(dep, Totals(0, 0, 0))
            sessions[dep] = Totals(had.rows + t.rows, had.amount + t.amount, had.fee + t.fee)
            merchants[dep].add(sid)
        for dep in sorted(sessions.keys() | postings.keys()):
            self._session(dep, sessions.get(dep), merchants[dep], postings.get(dep), records)

    def _session(
        self,
        dep: str,
        t: Totals | None,
        sids: set[str],
        legs: dict[str, int] | None,
        records: dict[str, tuple[str, int]],
    ) -> None:
        v = self.violations
        posting = f"{DEPOSIT_POSTING}{dep}"
        record = records.get(dep)
        if record is None:
            what = f"{t.rows} accepted payments" if t is not None else f"posting {posting}"
            v.append(f"deposit {dep}: {what} but no deposit record")
        elif t is not None and sids != {record[0]}:
            to = ", ".join(sorted(sids))
            v.append(f"deposit {dep} is recorded for {record[0]} but its payments are to {to}")
        if t is None:
            v.append(f"posting {posting} credits payments of which none is recorded")
            return
        if legs is None:
            v.append(f"deposit {dep}: {t.rows} accepted payments but no posting {posting}")
            return
        fees = legs.get(AccountKind.INCOME.value, 0)
        if fees != t.fee:
            v.append(
                f"posting {posting}: fees {fees} but its payments' recorded fees total {t.fee}"
            )
        paid = legs.get(AccountKind.MERCHANT.value, 0)
        if paid != t.amount - t.fee:
            v.append(
                f"posting {posting}: merchant credited {paid} but its payments less their "
                f"fees total {t.amount - t.fee}"
            )

    # -- 7: income and the clearing houses -----------------------------------------------
    def _income(self) -> None:
        from jointpay.service.bank import income_account

        inc = income_account(self.cur)
        expected = {
            "deposit": (
                "payment fees",
                sum(t.fee for t in self.deposits.values())
                + sum(t.fee for t in self.acquired.values()),
                "the accepted payments' recorded fees",
            ),
            "withdrawal": (
                "withdrawal fees",
                sum(w.fee for w in self.withdrawals.values()),
                "the recorded withdrawals' fees",
            ),
            "interest": ("interest", sum(self.interest.values()), "the statements' interest"),
        }
        for kind, (what, total, source) in expected.items():
            booked = self.flow(inc, kind)
            if booked != total:
                self.violations.append(f"{inc}: {what} booked {booked} but {source} total {total}")

    def _houses(self) -> None:
        """Each clearing house account: what our cards paid at other banks' merchants
        through it, less what other banks' cards paid at ours, plus the settlements."""
        v = self.violations
        houses = sorted(
            (a.id.split(":", 1)[1] for a in self.accounts if a.id.startswith("interbank:")),
            key=len,
            reverse=True,
        )
        via: dict[str, int] = defaultdict(int)
        for (dep, _), t in self.deposits.items():
            if dep.startswith("ib:"):
                ch = next((h for h in houses if dep.startswith(f"ib:{h}:")), None)
                if ch is None:
                    v.append(
                        f"payments of {dep} came through a clearing house the bank has no "
                        "account with"
                    )
                else:
                    via[ch] += t.amount
        for (_, _, ch), t in self.acquired.items():
            via[ch] -= t.amount
        for ch in sorted(via.keys() - set(houses)):
            v.append(f"payments cleared through {ch}, with which the bank has no account")
        for ch in houses:
            acc = self.by_id[f"interbank:{ch}"]
            settled = self.flow(acc.id, "interbank_settlement")
            if acc.balance != via[ch] + settled:
                v.append(
                    f"{acc.id}: balance {acc.balance} but cleared payments "
                    f"{via[ch]} and settlements {settled}"
                )

    def _figures(self, credit: dict[str, int]) -> dict[str, Any]:
        from jointpay.service.bank import income_account

        cur, accounts = self.cur, self.accounts
        alerts = self.tx.list_alerts()
        return {
            "accounts": len(accounts),
            "payments": sum(p.rows for p in self.payments.values()),
            "alerts": len(alerts),
            "float_total": format_amount(
                sum(a.balance for a in accounts if a.kind == AccountKind.CARD_FLOAT), cur
            ),
            "income": format_amount(
                sum(a.balance for a in accounts if a.id.startswith("bank:income:")), cur
            ),
            "interest": format_amount(self.flow(income_account(cur), "interest"), cur),
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
