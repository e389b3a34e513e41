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

With ``signatures`` (``bank audit --signatures``), in the same snapshot, the audit also
verifies what the bank signed and what was signed to it (:class:`_Signatures`):

10. every stored CARD-CERT bears the bank's signature, is stored under its own id and
    validity for the card it names, with its key's comb powers, and says what its
    card's record says (mode, currency, group, joint key); each card's current
    CARD-CERT is one of them;
11. every accepted payment's PAYMENT-CERT ``(ser, spec, b, r)`` verifies strictly
    (CONTRACT section 2, the deposit's own path: :func:`verify_pool.parse_and_verify`)
    under the joint key of the CARD-CERT it was accepted with, a certificate of its
    own card, valid at the payment's time;
12. every merchant's MERCHANT-CERT bears the bank's signature over the S_id and key
    its deposits are checked with, and a scheme member's BANK-CERT is the scheme's
    over the bank's own key.

Both tables are read a page at a time, each page verified in the verification pool
(:class:`~jointpay.service.verify_pool.Verifier`) while the next is read, so memory
stays flat whatever the number of payments.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from jointpay.crypto.certs import BankRole, CardCert, MerchantCert, VerifyKey
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.group import COMB_ROWS, GroupResolver, ModpGroup, ModpParams, resolver
from jointpay.domain.money import format_amount
from jointpay.domain.records import AccountKind, CardRecord, CertRecord, MerchantRecord
from jointpay.protocol.spec import PaymentSpec
from jointpay.service import verify_pool
from jointpay.service.scheme import SCHEME_CONFIG_KEY, Membership
from jointpay.service.verify_pool import Answer, JobHead, RawJob, modp_params, parse_and_verify
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


SIGNATURE_PAGE: Final = verify_pool.CHUNK
"""Payments, and certificates, read in one query and verified as one chunk by the
signature audit."""
CERT_CACHE: Final = 4096
"""CARD-CERTs the signature audit keeps decoded while it walks the payments (in card
order, so a card's few certificates are read once); past this it starts afresh."""


def run_audit(
    bank: Bank, tx: UnitOfWork, *, signatures: bool = False, bank_key: bytes | None = None
) -> AuditReport:
    """The audit of the books in ``tx``; with ``signatures``, of every signature too,
    under the bank's key in the database or ``bank_key``, the one the auditor holds."""
    from jointpay.service.bank import AuditReport

    return AuditReport(*_Audit(bank, tx, signatures=signatures, bank_key=bank_key).run())


class _Audit:
    """One audit: the books read once (as sums), then each invariant checked."""

    def __init__(
        self,
        bank: Bank,
        tx: UnitOfWork,
        *,
        signatures: bool = False,
        bank_key: bytes | None = None,
    ) -> None:
        self.signatures, self.bank_key = signatures, bank_key
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
        if self.signatures:
            figures["signatures"] = _Signatures(self, self.bank_key).run()
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


# -- 10-12: the signatures -------------------------------------------------------------
CardTerms = tuple[str, str, str, str | None, bytes]
"""What a card's record says that its CARD-CERTs sign: mode, currency, suite, group
name and joint key (encoded)."""

CertJob = tuple[tuple[str, bytes, tuple[ModpParams, ...]], CertRecord, CardTerms | None]
"""One stored CARD-CERT to check (:func:`check_card_certs`): (the bank's id, the key
to verify under, its own modp groups), the stored record, and the terms of the card it
is stored for (None: no such card). The first is one object shared by a chunk's jobs,
so it is pickled once a chunk."""


class CertVerdict(NamedTuple):
    """A stored CARD-CERT's check: what is wrong with it, in words (empty: nothing),
    whether the bank's signature holds (then its joint key may be trusted, as the bank
    checked it before signing), and whether its stored comb powers are its key's."""

    faults: tuple[str, ...]
    signed: bool
    powers_ok: bool


def check_card_certs(jobs: list[CertJob], /, *, deposit: int | None = None) -> list[CertVerdict]:
    """Each stored CARD-CERT checked against the bank's key, its record and its card's
    record: runs in a verification worker or in process (``deposit`` is the pool's
    parameter, and means nothing here)."""
    del deposit
    out = []
    resolvers: dict[tuple[ModpParams, ...], GroupResolver] = {}
    for (bank_id, raw_key, own), rec, terms in jobs:
        resolve = resolvers.get(own)
        if resolve is None:
            resolve = resolvers[own] = resolver({p.name: p for p in own})
        out.append(_check_card_cert(VerifyKey(bank_id, raw_key), resolve, rec, terms))
    return out


def _check_card_cert(
    key: VerifyKey,
    resolve: GroupResolver,
    rec: CertRecord,
    terms: CardTerms | None,
) -> CertVerdict:
    try:  # known: signed by the bank, its keys were checked before it signed
        cert = CardCert.decode(rec.encoded, resolve, known=True)
    except CryptoError as exc:
        return CertVerdict((f"cannot be read ({exc})",), False, False)
    faults = []
    try:
        cert.verify(key)
        signed = True
    except CryptoError as exc:
        faults.append(f"does not verify under the bank's key {key.fingerprint} ({exc})")
        signed = False
    if cert.card_number != rec.card_number:
        faults.append(f"names card {cert.card_number}")
    if cert.cert_id != rec.cert_id:
        faults.append(f"is certificate {cert.id_hex}")
    if (cert.not_before, cert.not_after) != (rec.not_before, rec.not_after):
        faults.append(
            f"its stored validity [{rec.not_before}, {rec.not_after}) is not its signed "
            f"[{cert.not_before}, {cert.not_after})"
        )
    group = cert.group
    powers_ok = True
    if rec.key_powers is not None:
        want = group.key_powers(cert.joint_key) if isinstance(group, ModpGroup) else None
        if rec.key_powers not in _sound_powers(want):
            faults.append("its stored key powers are not its joint key's")
            powers_ok = False
    if terms is None:
        faults.append("its card is no card of the bank")
    elif cert.card_number == rec.card_number:  # (else the record is another card's)
        signed_terms = (
            cert.mode.value,
            cert.currency,
            cert.suite,
            group.name,
            cert.joint_key.encoded,
        )
        names = ("mode", "currency", "suite", "group", "joint key")
        faults += [
            f"its {what} is not the one its card's record says"
            for what, mine, theirs in zip(names, signed_terms, terms, strict=True)
            if mine != theirs
        ]
    return CertVerdict(tuple(faults), signed, powers_ok)


def _sound_powers(want: bytes | None) -> tuple[bytes, ...]:
    """The comb powers a sound bank may have stored for a key whose powers are ``want``
    (:meth:`~jointpay.crypto.group.ModpGroup.key_powers`, seven residues Y^(2^(32 j))):
    those, or the three the first comb stored (migration 0005's, commit 2b8d62a),
    Y^(2^64), Y^(2^128) and Y^(2^192), which today's comb declines (their payments are
    verified by exponentiation) and the backfill leaves, so a bank upgraded from then
    still holds them. None (secp256k1): no powers at all."""
    if want is None:
        return ()
    n = len(want) // (COMB_ROWS - 1)
    return want, want[n : 2 * n] + want[3 * n : 4 * n] + want[5 * n : 6 * n]


class _Signed(NamedTuple):
    """A CARD-CERT as the payments under it are verified: the workers' job head, the
    card it names and its validity."""

    head: JobHead
    cert_id: bytes
    card_number: str
    not_before: int
    not_after: int


_Entry = tuple[str, int, _Signed | str]
"""A payment of a chunk: card number, ser, and the CARD-CERT it is verified under (or
why it is not verified)."""


class _Signatures:
    """The signature audit (10-12), adding its violations to ``audit``'s."""

    def __init__(self, audit: _Audit, pinned: bytes | None) -> None:
        self.audit = audit
        self.bank, self.tx = audit.bank, audit.tx
        self.own = audit.own
        self.v = audit.violations
        held = self.bank.verify_key
        self.key = held
        if pinned is not None and pinned != held.raw:
            self.key = VerifyKey(self.own, pinned)
            self.v.append(
                f"the bank's key in the database is {held.fingerprint}, not the given "
                f"{self.key.fingerprint}: every signature is verified under the given key"
            )
        params = modp_params(self.bank.group)
        self.context = (self.own, self.key.raw, () if params is None else (params,))
        self.verifier = self.bank.verifier
        self.depth = max(1, self.verifier.workers) + 1
        """Chunks in flight: every worker busy while the next page is read."""
        self.unsigned: set[bytes] = set()
        """Stored CARD-CERTs without the bank's signature (normally none)."""
        self.bad_powers: set[bytes] = set()
        """Stored CARD-CERTs whose comb powers are not their key's (normally none)."""

    def run(self) -> dict[str, Any]:
        merchants = self._merchant_certs()
        bank_cert = self._bank_cert()
        certs, cards = self._card_certs()
        payments = self._payments()
        return {
            "bank_key": self.key.raw.hex(),
            "card_certs": certs,
            "cards": cards,
            "payments": payments,
            "merchant_certs": merchants,
            "bank_cert": bank_cert,
        }

    # -- 12: MERCHANT-CERTs and the bank's BANK-CERT --------------------------------------
    def _merchant_certs(self) -> int:
        verified = 0
        for m in self.tx.list_merchants():
            try:
                cert = MerchantCert.decode(m.cert)
                cert.verify(self.key)
            except CryptoError as exc:
                self.v.append(f"merchant {m.sid}: its MERCHANT-CERT does not verify ({exc})")
                continue
            faults = []
            if cert.sid != m.sid:
                faults.append(f"names S_id {cert.sid}")
            if cert.public_key != m.public_key:
                faults.append("certifies another key than the one its deposits are checked with")
            if faults:
                self.v.append(f"merchant {m.sid}: its MERCHANT-CERT " + "; ".join(faults))
            else:
                verified += 1
        return verified

    def _bank_cert(self) -> str:
        """How the bank's BANK-CERT fared: verified, failed, or none (the bank joined no
        scheme)."""
        raw = self.tx.config_get(SCHEME_CONFIG_KEY)
        if raw is None:
            return "none"
        try:
            m = Membership.from_json(raw)
            m.own_cert.verify(m.scheme_key, role=BankRole.BANK)
        except (CryptoError, ValueError, KeyError) as exc:
            self.v.append(f"the bank's BANK-CERT does not verify under its scheme's key ({exc})")
            return "failed"
        if m.own_cert.bank_id != self.own or m.own_cert.public_key != self.key.raw:
            self.v.append(
                f"the bank's BANK-CERT certifies {m.own_cert.bank_id}'s key "
                f"{VerifyKey(self.own, m.own_cert.public_key).fingerprint}, not this bank's "
                f"{self.key.fingerprint}"
            )
            return "failed"
        return "verified"

    # -- 10: every stored CARD-CERT, a page at a time -------------------------------------
    def _card_certs(self) -> tuple[int, int]:
        """Returns how many certificates verified, and how many cards have only sound
        certificates, their current one among them."""
        cards = {c.card_number: c for c in self.audit.cards}
        size = max(len(cards), 1)
        verified = 0
        current: set[str] = set()
        faulty: set[str] = set()
        inflight: deque[tuple[list[CertRecord], Callable[[], list[CertVerdict]]]] = deque()

        def settle() -> None:
            nonlocal verified
            recs, answers = inflight.popleft()
            for rec, verdict in zip(recs, answers(), strict=True):
                if not verdict.signed:
                    self.unsigned.add(rec.cert_id)
                if not verdict.powers_ok:
                    self.bad_powers.add(rec.cert_id)
                if verdict.faults:
                    faulty.add(rec.card_number)
                    self.v.append(
                        f"CARD-CERT {rec.cert_id.hex()} stored for card {rec.card_number}: "
                        + "; ".join(verdict.faults)
                    )
                    continue
                verified += 1
                card = cards.get(rec.card_number)
                if card is not None and card.current_cert_id == rec.cert_id:
                    current.add(rec.card_number)

        after = b""
        while True:
            page = self.tx.audit_certs_after(after, SIGNATURE_PAGE)
            if page:
                jobs: list[CertJob] = [
                    (self.context, rec, _terms(cards.get(rec.card_number))) for rec in page
                ]
                inflight.append(
                    (page, self.verifier.submit(check_card_certs, jobs, batch_size=size))
                )
                after = page[-1].cert_id
            while inflight and (len(inflight) > self.depth or len(page) < SIGNATURE_PAGE):
                settle()
            if len(page) < SIGNATURE_PAGE:
                break
        for n, card in cards.items():
            if n not in current and n not in faulty:
                self.v.append(
                    f"card {n}: its current CARD-CERT {card.current_cert_id.hex()} is not "
                    "among the certificates stored for it"
                )
        return verified, len(current - faulty)

    # -- 11: every accepted payment, a page at a time -------------------------------------
    def _payments(self) -> int:
        size = max(sum(p.rows for p in self.audit.payments.values()), 1)
        verified = 0
        certs: dict[bytes, _Signed | str] = {}
        inflight: deque[tuple[list[_Entry], Callable[[], list[Answer]]]] = deque()

        def settle() -> None:
            nonlocal verified
            entries, answers = inflight.popleft()
            got = iter(answers())
            for n, ser, signed in entries:
                if isinstance(signed, str):
                    self.v.append(f"payment {n}/{ser}: not verified: {signed}")
                    continue
                why = _payment_fault(next(got), signed)
                if why is None:
                    verified += 1
                else:
                    self.v.append(f"payment {n}/{ser}: {why}")

        after: tuple[str, int] | None = None
        while True:
            page = self.tx.audit_payments_after(after, SIGNATURE_PAGE)
            if page:
                after = (page[-1].card_number, page[-1].ser)
                if len(certs) > CERT_CACHE:
                    certs.clear()
                self._read_certs({p.cert_id for p in page} - certs.keys(), certs)
                entries: list[_Entry] = []
                jobs: list[RawJob] = []
                for p in page:
                    signed = certs[p.cert_id]
                    if isinstance(signed, _Signed) and signed.card_number != p.card_number:
                        signed = f"its CARD-CERT {p.cert_id.hex()} is card {signed.card_number}'s"
                    entries.append((p.card_number, p.ser, signed))
                    if isinstance(signed, _Signed):
                        jobs.append((*signed.head, p.ser, p.spec.hex(), p.b.hex(), p.r.hex(), None))
                inflight.append((entries, self._submit(jobs, size)))
            while inflight and (len(inflight) > self.depth or len(page) < SIGNATURE_PAGE):
                settle()
            if len(page) < SIGNATURE_PAGE:
                return verified

    def _submit(self, jobs: list[RawJob], size: int) -> Callable[[], list[Answer]]:
        if not jobs:
            return lambda: []
        return self.verifier.submit(parse_and_verify, jobs, batch_size=size)

    def _read_certs(self, ids: set[bytes], into: dict[bytes, _Signed | str]) -> None:
        """The CARD-CERTs ``ids`` as their payments are verified under them: one query,
        each decoded once (its check, above, said whether the bank signed it)."""
        found = self.tx.get_certs(sorted(ids)) if ids else {}
        for cert_id in ids:
            rec = found.get(cert_id)
            if rec is None:
                into[cert_id] = f"its CARD-CERT {cert_id.hex()} is not stored"
                continue
            if cert_id in self.unsigned:
                into[cert_id] = f"its CARD-CERT {cert_id.hex()} does not bear the bank's signature"
                continue
            try:
                cert = CardCert.decode(rec.encoded, self.bank.resolve_group, known=True)
            except CryptoError:  # pragma: no cover - its check decoded it in this snapshot
                into[cert_id] = f"its CARD-CERT {cert_id.hex()} cannot be read"
                continue
            group = cert.group
            powers = b"" if cert_id in self.bad_powers else rec.key_powers or b""
            head: JobHead = (group.suite, modp_params(group), cert.joint_key.encoded, True, powers)
            into[cert_id] = _Signed(
                head, cert.cert_id, cert.card_number, cert.not_before, cert.not_after
            )


def _terms(card: CardRecord | None) -> CardTerms | None:
    if card is None:
        return None
    return (card.mode, card.currency, card.suite, card.group, card.joint_key)


def _payment_fault(answer: Answer, signed: _Signed) -> str | None:
    """What is wrong with a payment verified under ``signed``, in words; None if
    nothing."""
    if answer is None:
        return "its PAYMENT-CERT cannot be read (its spec, b or r is malformed)"
    spec, _, _, _, valid = answer
    if not valid:
        return f"its signature does not verify under its CARD-CERT {signed.cert_id.hex()}"
    if spec.card_cert_id != signed.cert_id:
        return (
            f"its signed spec names CARD-CERT {spec.card_cert_id.hex()}, not {signed.cert_id.hex()}"
        )
    if not signed.not_before <= spec.time < signed.not_after:
        return (
            f"signed at {spec.time}, outside its CARD-CERT's validity "
            f"[{signed.not_before}, {signed.not_after})"
        )
    return None
