"""A bank's side of the scheme: joining, routing foreign cards, being an issuer.

As **acquirer**, the bank takes its merchant's payments made with other banks' cards
and, after its own checks (certificate chain, signature, payee, freshness, its own
record of cross-bank payments), forwards them in one signed message to a clearing
house that has the card's bank as a member. The house pre-verifies and forwards each
payment to its issuer; the answers come back signed, and the bank credits its
merchant out of its account with that house (``interbank:CH``).

As **issuer**, the bank receives from a clearing house the payments its cards made at
other banks' merchants and checks them exactly as it checks its own merchants'
(hot list, duplicates, balance, breach evidence), crediting ``interbank:CH``.

Exactly once, whatever fails in between:

* the issuer books a payment once (``(card, ser)`` is unique in its payments), and
  answers ``accepted`` again when the same house brings the same payment for the same
  acquirer (a retry after a lost answer);
* the house records it once (``(issuer, card, ser)`` unique) and answers the same
  acquirer's retry with ``accepted`` again;
* the acquirer credits its merchant once (``(issuer, card, ser)`` unique in its own
  table), in the same transaction as the merchant's deposit session.

So a payment the acquirer could not book (crash, lost answer) is simply deposited
again, and a payment deposited at two banks is credited once.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from jointpay.crypto.certs import (
    BankCert,
    BankRole,
    VerifyKey,
    check_card_number,
    check_ident,
)
from jointpay.crypto.errors import DecodeError
from jointpay.domain.records import AccountKind, Leg, Transfer
from jointpay.protocol.deposit import BATCH_FORMAT, parse_batch
from jointpay.service.errors import BadInput, Refused, ServiceError
from jointpay.service.policy import TOO_MANY_CHECKS
from jointpay.service.scheme import (
    CLEAR_FORMAT,
    CLEAR_TAG,
    CLEARED_FORMAT,
    CLEARED_TAG,
    INTERBANK_FORMAT,
    INTERBANK_RECEIPT_FORMAT,
    INTERBANK_RECEIPT_TAG,
    INTERBANK_TAG,
    INTERBANK_WINDOW,
    POSITION_FORMAT,
    POSITION_TAG,
    RELAY_FORMAT,
    RELAY_TAG,
    SCHEME_CONFIG_KEY,
    SETTLED_TAG,
    SETTLEMENT_FORMAT,
    SETTLEMENT_TAG,
    ClearingConnector,
    ClearingLink,
    ClearingPort,
    Membership,
    SchemeError,
    Unreachable,
    field,
    interbank_account,
    malformed,
    open_body,
    sign_body,
)
from jointpay.storage.base import Conflict, NotFound, UnitOfWork

if TYPE_CHECKING:
    from jointpay.service.bank import Bank

DIRECTORY_TTL: Final = 30.0
"""Seconds a bank trusts its copy of the clearing houses' member lists."""


def interbank_deposit_id(clearing_house: str, acquirer: str) -> str:
    """The issuer's deposit id for what one house brings from one acquirer: the same
    for every session, so that a retried payment is recognised as the same."""
    plain = f"ib:{clearing_house}:{acquirer}"
    if len(plain) <= 96:
        return plain
    return "ib:" + hashlib.sha256(plain.encode()).hexdigest()[:40]  # pragma: no cover


@dataclass(frozen=True, slots=True)
class Candidate:
    """A foreign payment that passed the acquirer's own checks, to be cleared."""

    cert: bytes
    issuer: str
    card_number: str
    ser: int
    spec: bytes
    b: bytes
    r: bytes
    amount: int


@dataclass(frozen=True, slots=True)
class Cleared:
    """A clearing house's answer for one candidate."""

    status: str
    reason: str | None
    clearing_house: str


def http_clearing(link: ClearingLink) -> ClearingPort:
    from jointpay.api.client import HttpClearing

    if link.url is None:
        raise Unreachable(f"no address for clearing house {link.ch_id}")
    return HttpClearing(link.url)


class Interbank:
    """The bank's membership in a scheme, loaded from its config (None: not a member)."""

    def __init__(self, bank: Bank, connect: ClearingConnector = http_clearing) -> None:
        self.bank = bank
        self.connect = connect
        self.membership: Membership | None = None
        self._raw: str | None = None
        self._members: dict[str, tuple[float, dict[str, BankCert]]] = {}
        self.reload()

    def reload(self) -> None:
        """Read our membership from the config again, if another process changed it."""
        with self.bank.store.transaction() as tx:
            raw = tx.config_get(SCHEME_CONFIG_KEY)
        if raw != self._raw:
            self._raw = raw
            self.membership = None if raw is None else Membership.from_json(raw)
            self._members.clear()

    # -- joining ----------------------------------------------------------------------
    def join(self, scheme_id: str, scheme_key: bytes, bank_cert: bytes) -> dict[str, Any]:
        """``bank join-scheme``: keep the root key and our BANK-CERT (checked first)."""
        bank = self.bank
        try:
            root = VerifyKey(scheme_id, scheme_key)
            cert = Membership(root, BankCert.decode(bank_cert)).check_member(
                bank_cert, BankRole.BANK, bank.clock()
            )
        except (SchemeError, ValueError) as exc:
            raise BadInput("bad_cert", f"the BANK-CERT does not verify: {exc}") from exc
        if cert.bank_id != bank.bank_id or cert.public_key != bank.verify_key.raw:
            raise BadInput("bad_cert", "the BANK-CERT certifies another bank or key")
        kept = self.membership.clearing if self.membership else ()
        if self.membership and self.membership.scheme_key != root:
            kept = ()  # another scheme: its houses do not carry over
        self._save(Membership(root, cert, kept))
        return {"bank_id": bank.bank_id, "scheme_id": scheme_id, "joined": True}

    def add_clearing(self, port: ClearingPort, url: str | None) -> dict[str, Any]:
        """``bank add-clearing``: clear through this house (its BANK-CERT is checked)."""
        m = self._require()
        params = port.parameters()
        try:
            cert = m.check_member(
                bytes.fromhex(str(params.get("cert"))), BankRole.CLEARING, self.bank.clock()
            )
        except (SchemeError, ValueError) as exc:
            raise BadInput("bad_cert", f"the clearing house's certificate: {exc}") from exc
        if params.get("currency") != self.bank.currency:
            # its positions and settlements are in its currency: ours would be booked
            # in it unconverted, and its settlements refused here for ever
            raise BadInput(
                "currency_mismatch",
                f"clearing house {cert.bank_id} settles in {params.get('currency')!r}, "
                f"this bank keeps {self.bank.currency}",
            )
        links = tuple(c for c in m.clearing if c.ch_id != cert.bank_id)
        self._save(Membership(m.scheme_key, m.own_cert, (*links, ClearingLink(cert, url))))
        return {
            "clearing_house": cert.bank_id,
            "url": url,
            "members": self.members_of(cert.bank_id),
        }

    def _save(self, membership: Membership) -> None:
        raw = membership.to_json()
        with self.bank.store.transaction() as tx:
            tx.config_set(SCHEME_CONFIG_KEY, raw)
        self.membership, self._raw = membership, raw
        self._members.clear()

    def _require(self) -> Membership:
        if self.membership is None:
            raise Refused("not_in_scheme", "this bank has not joined a scheme")
        return self.membership

    # -- the directory of member banks ------------------------------------------------
    def _house_members(self, link: ClearingLink, *, refresh: bool = False) -> dict[str, BankCert]:
        m = self._require()
        hit = self._members.get(link.ch_id)
        if hit is not None and not refresh and time.monotonic() - hit[0] < DIRECTORY_TTL:
            return hit[1]
        now = self.bank.clock()
        found: dict[str, BankCert] = {}
        for raw in self.connect(link).parameters().get("members", []):
            try:
                cert = m.check_member(bytes.fromhex(str(raw)), BankRole.BANK, now)
            except (SchemeError, ValueError):
                continue  # an expired or foreign certificate is no member
            found[cert.bank_id] = cert
        self._members[link.ch_id] = (time.monotonic(), found)
        return found

    def members_of(self, ch_id: str) -> list[str]:
        link = self._require().link(ch_id)
        return [] if link is None else sorted(self._house_members(link))

    def directory(self) -> dict[str, BankCert]:
        """Every bank reachable through our clearing houses (ourselves included)."""
        return self._directory()[0]

    def _directory(self) -> tuple[dict[str, BankCert], bool]:
        """:meth:`directory`, and whether a house could not be asked for its members."""
        m = self.membership
        if m is None:
            return {}, False
        out: dict[str, BankCert] = {m.own_cert.bank_id: m.own_cert}
        unreached = False
        for link in m.clearing:
            try:
                for bid, cert in self._house_members(link).items():
                    out.setdefault(bid, cert)
            except (Unreachable, ServiceError):
                unreached = True
        return out, unreached

    def issuer(self, bank_id: str) -> tuple[VerifyKey | None, bool]:
        """The key that signs ``bank_id``'s CARD-CERTs, if it is a reachable member;
        and, when there is none, whether a house could not be asked for its members
        (so that ``bank_id`` may be one all the same)."""
        if bank_id == self.bank.bank_id:
            return self.bank.verify_key, False
        members, unreached = self._directory()
        cert = members.get(bank_id)
        return (None, unreached) if cert is None else (cert.verify_key, False)

    def route(self, issuer: str, *, via: str | None = None) -> ClearingLink | None:
        """The first of our clearing houses that has ``issuer`` as a member (house
        ``via`` first, if it is one of ours)."""
        return self._route(issuer, via)[0]

    def _route(self, issuer: str, via: str | None) -> tuple[ClearingLink | None, bool]:
        """:meth:`route`, and whether a house could not be asked for its members (so
        that no route found need not mean that none of our houses reaches ``issuer``)."""
        m = self.membership
        if m is None:
            return None, False
        links = sorted(m.clearing, key=lambda link: link.ch_id != via)  # stable: via first
        unreached = False
        for link in links:
            try:
                if issuer in self._house_members(link):
                    return link, False
            except (Unreachable, ServiceError):
                unreached = True
        return None, unreached

    def scheme_view(self) -> dict[str, Any]:
        """What a terminal needs to accept the scheme's cards and show our BANK-CERT."""
        m = self.membership
        if m is None:
            return {"scheme_id": None, "members": []}
        return {
            "scheme_id": m.scheme_id,
            "scheme_key": m.scheme_key.raw.hex(),
            "bank_cert": m.own_cert.encode().hex(),
            "members": [c.encode().hex() for _, c in sorted(self.directory().items())],
            "clearing_houses": [c.ch_id for c in m.clearing],
        }

    def scheme_hotlist(self) -> list[dict[str, Any]]:
        """The other banks' hot lists, as our clearing houses gathered them."""
        m = self.membership
        if m is None:
            return []
        seen: dict[tuple[str, str], dict[str, Any]] = {}
        for link in m.clearing:
            try:
                entries = self.connect(link).scheme_hotlist()
            except (Unreachable, ServiceError):
                continue
            for e in entries:
                if e.get("issuer") != self.bank.bank_id:
                    seen.setdefault((str(e.get("issuer")), str(e.get("card"))), e)
        return [seen[k] for k in sorted(seen)]

    # -- acquirer: forward foreign payments ---------------------------------------------
    def clear(
        self, sid: str, ref: str, candidates: list[Candidate], *, via: str | None = None
    ) -> list[Cleared]:
        """Clear each candidate through a house that reaches its issuer (same order):
        house ``via`` where it does (the house the merchant deposited at)."""
        out: list[Cleared | None] = [None] * len(candidates)
        by_link: dict[str, tuple[ClearingLink, list[int]]] = {}
        for i, c in enumerate(candidates):
            link, unreached = self._route(c.issuer, via)
            if link is None:
                # a house that did not answer may reach the issuer: not final (an
                # unknown_card here the terminal dropped, and the merchant was never paid)
                why = "clearing_unavailable" if unreached else "unknown_card"
                out[i] = Cleared("rejected", why, "")
            else:
                by_link.setdefault(link.ch_id, (link, []))[1].append(i)
        for link, idx in by_link.values():
            answers = self._clear_at(link, sid, ref, [candidates[i] for i in idx])
            for i, answer in zip(idx, answers, strict=True):
                out[i] = answer
        return [c if c is not None else Cleared("rejected", "unknown_card", "") for c in out]

    def _clear_at(
        self, link: ClearingLink, sid: str, ref: str, items: list[Candidate]
    ) -> list[Cleared]:
        bank = self.bank
        message = sign_body(
            bank.signing_key,
            CLEAR_TAG,
            {
                "format": CLEAR_FORMAT,
                "acquirer": bank.bank_id,
                "clearing_house": link.ch_id,
                "ref": ref,
                "time": bank.clock(),
                "batch": sub_batch(bank.bank_id, sid, items),
            },
        )
        down = [Cleared("rejected", "clearing_unavailable", link.ch_id)] * len(items)
        try:
            answer = self.connect(link).clear(message)
            body = open_body(link.cert.verify_key, CLEARED_TAG, answer, CLEARED_FORMAT)
            results = field(body, "results", list)
            if body.get("ref") != ref or len(results) != len(items):
                raise SchemeError("the clearing house answered for another session")
        except (Unreachable, ServiceError, SchemeError):
            return down
        # The house answers in the batch's order (batch_order). By position, not by
        # (card, ser): a clone's second spend of a ser has the same (card, ser) as the
        # first, and another answer.
        out: list[Cleared | None] = [None] * len(items)
        for i, r in zip(batch_order(items), results, strict=True):
            item = items[i]
            if not isinstance(r, dict) or (r.get("card"), r.get("ser")) != (
                item.card_number,
                item.ser,
            ):
                return down
            status = "accepted" if r.get("status") == "accepted" else "rejected"
            reason = None if status == "accepted" else str(r.get("reason") or "rejected")
            out[i] = Cleared(status, reason, link.ch_id)
        return [c for c in out if c is not None]

    # -- issuer: payments a clearing house brings ----------------------------------------
    def _sender(self, message: object) -> ClearingLink:
        """The house a message says it comes from, if it is one of ours (its signature
        is checked by the caller, under the message's own tag)."""
        m = self._require()
        ch_id = message.get("clearing_house") if isinstance(message, dict) else None
        link = m.link(ch_id) if isinstance(ch_id, str) else None
        if link is None:
            raise Refused("not_a_member", f"we do not clear through {ch_id!r}")
        return link

    def receive(self, message: object) -> dict[str, Any]:
        """The issuer's side: check and book our cards' payments at other banks."""
        from jointpay.protocol.deposit import DepositRequest, digest
        from jointpay.service import gcpause
        from jointpay.service.deposit import DepositRun

        bank = self.bank
        link = self._sender(message)
        with malformed("interbank deposit"):
            body = open_body(link.cert.verify_key, INTERBANK_TAG, message, INTERBANK_FORMAT)
            if field(body, "issuer", str) != bank.bank_id:
                raise SchemeError("the payments are for another issuer")
            acquirer = field(body, "acquirer", str)
            ref = field(body, "ref", str)
            when = field(body, "time", int)
            batch = parse_batch(body.get("batch"))
            if batch.bank_id != acquirer:
                raise SchemeError("the batch names another acquirer")
        now = bank.clock()
        if abs(now - when) > INTERBANK_WINDOW:
            # played again later, it would book payments the house does not (a bounced
            # cheque paid since, say): the holder debited, nobody credited
            raise Refused("stale_message", "the house's message is not fresh")
        req = DepositRequest(acquirer, batch.sid, 0, now, batch, digest(body["batch"]), b"")
        with gcpause.paused(), bank.store.transaction() as tx:
            run = DepositRun(
                bank,
                tx,
                req,
                interbank_deposit_id(link.ch_id, acquirer),
                now,
                from_house=link.ch_id,
            )
            results = run.run()
        return sign_body(
            bank.signing_key,
            INTERBANK_RECEIPT_TAG,
            {
                "format": INTERBANK_RECEIPT_FORMAT,
                "issuer": bank.bank_id,
                "clearing_house": link.ch_id,
                "ref": ref,
                "results": [
                    {"card": r.card, "ser": r.ser, "status": r.status, "reason": r.reason}
                    for r in results
                ],
            },
        )

    # -- acquirer: a merchant's deposit relayed by a house ------------------------------
    def relayed(self, message: object) -> dict[str, Any]:
        """A house brings one of our merchants' deposits: run the session as if the
        merchant had come to us (every rule of ours first), and clear the other banks'
        cards we accept through that house where it reaches their issuers."""
        link = self._sender(message)
        with malformed("relayed deposit"):
            body = open_body(link.cert.verify_key, RELAY_TAG, message, RELAY_FORMAT)
            if field(body, "acquirer", str) != self.bank.bank_id:
                raise SchemeError("the deposit is for another bank")
        return self.bank.deposit(body.get("deposit"), via=link.ch_id)

    def online_check(self, message: object) -> dict[str, Any]:
        """A house asks, for another bank's terminal, whether our card may pay: a
        question for us, fresh, of a sound amount, naming the merchant who asks."""
        bank = self.bank
        link = self._sender(message)
        with malformed("online check"):
            body = open_body(link.cert.verify_key, INTERBANK_TAG, message, "jointpay-online/1")
            if field(body, "issuer", str) != bank.bank_id:
                raise SchemeError("the question is for another bank")
            card, amount = field(body, "card", str), field(body, "amount", int)
            acquirer, merchant = field(body, "acquirer", str), field(body, "merchant", str)
            when = field(body, "time", int)
            if not 0 < amount < 1 << 63:
                raise SchemeError(f"amount {amount} is out of range")
            try:  # what the question is counted under (the policy's online_checks)
                check_card_number(card)
                check_ident(acquirer, "acquirer")
                if merchant != "-":  # "-": the acquirer's own question, no merchant's
                    check_ident(merchant, "merchant")
            except DecodeError as exc:
                raise SchemeError(str(exc)) from exc
        if abs(bank.clock() - when) > bank.policy.online_window:
            raise Refused("stale_message", "the house's question is not fresh")
        try:
            answer = bank.clearance(card, amount, asker=merchant, acquirer=acquirer)
        except Refused as exc:
            if exc.code != TOO_MANY_CHECKS:
                raise
            # signed like any answer, so that the house carries it back as it is, with
            # the seconds until the merchant may ask again
            answer = {"approved": False, "reason": TOO_MANY_CHECKS}
            if exc.retry_after is not None:
                answer["retry_after"] = exc.retry_after
        answer = {**answer, "topup": 0}  # a restore goes through the card's own bank
        return sign_body(
            self.bank.signing_key,
            INTERBANK_RECEIPT_TAG,
            {"format": "jointpay-online-answer/1", "card": card, "amount": amount, **answer},
        )

    def online_via_house(
        self, issuer: str, card: str, amount: int, asker: str | None = None
    ) -> dict[str, Any]:
        """Our terminal's on-line question about another bank's card, through a house;
        ``asker`` is our merchant's S_id, which the issuer logs with its answer."""
        link, unreached = self._route(issuer, None)
        if link is None and unreached:  # no house we could ask knows it: maybe one we
            # could not ask does (the terminal goes by its floor limit, not a refusal)
            raise Refused("bank_unreachable", f"no clearing house reachable for bank {issuer}")
        if link is None:
            return {"approved": False, "reason": "unknown_card", "topup": 0}
        bank = self.bank
        message = sign_body(
            bank.signing_key,
            CLEAR_TAG,
            {
                "format": "jointpay-online/1",
                "acquirer": bank.bank_id,
                "clearing_house": link.ch_id,
                "issuer": issuer,
                "merchant": asker or "-",
                "card": card,
                "amount": amount,
                "time": bank.clock(),
            },
        )
        try:
            answer = self.connect(link).online_check(message)
            body = open_body(link.cert.verify_key, CLEARED_TAG, answer, "jointpay-online-answer/1")
        except (SchemeError, Unreachable) as exc:
            raise Refused("bank_unreachable", f"the clearing house did not answer: {exc}") from exc
        if body.get("card") != card or body.get("amount") != amount:
            raise Refused("bank_unreachable", "the clearing house answered another question")
        if body.get("reason") == TOO_MANY_CHECKS:
            retry = body.get("retry_after")  # an issuer of before it was sent: none
            raise Refused(
                TOO_MANY_CHECKS,
                f"bank {issuer} refuses more on-line checks by merchant {asker or '-'} about "
                "this card for now (its policy's limit)",
                retry_after=retry if type(retry) is int and retry > 0 else None,
            )
        return {
            "approved": bool(body.get("approved")),
            "reason": body.get("reason"),
            "topup": 0,
        }

    # -- settlement and position ----------------------------------------------------------
    def settlement(self, message: object) -> dict[str, Any]:
        """Book a house's settlement of our net position against our own money."""
        from jointpay.service.bank import equity_account

        bank = self.bank
        link = self._sender(message)
        with malformed("settlement"):
            body = open_body(link.cert.verify_key, SETTLEMENT_TAG, message, SETTLEMENT_FORMAT)
            if field(body, "bank_id", str) != bank.bank_id:
                raise SchemeError("the settlement is for another bank")
            sid, amount = field(body, "settlement", str), field(body, "amount", int)
            if not -(1 << 63) < amount < 1 << 63:
                raise SchemeError("the settlement's amount is out of range")
            if field(body, "currency", str) != bank.currency:
                raise SchemeError("the settlement is in another currency")
        tid = f"settle:{link.ch_id}:{sid}"[:128]
        now = bank.clock()
        with bank.store.transaction() as tx:
            acc = self.house_account(tx, link.ch_id, now)
            with contextlib.suppress(Conflict):  # delivered before: booked once
                tx.post(
                    Transfer(
                        tid,
                        "interbank_settlement",
                        bank.currency,
                        (Leg(acc, amount), Leg(equity_account(bank.currency), -amount)),
                        f"settlement {sid} with {link.ch_id}",
                        now,
                    )
                )
            balance = tx.get_account(acc).balance
        return sign_body(
            bank.signing_key,
            SETTLED_TAG,
            {
                "format": "jointpay-settled/1",
                "settlement": sid,
                "bank_id": bank.bank_id,
                "balance": balance,
            },
        )

    def position(self, ch_id: str) -> dict[str, Any]:
        """Our balance with a house, signed (its audit checks that both sides agree)."""
        bank = self.bank
        with bank.store.transaction() as tx:
            try:
                balance = tx.get_account(interbank_account(ch_id)).balance
            except NotFound:
                balance = 0
        return sign_body(
            bank.signing_key,
            POSITION_TAG,
            {
                "format": POSITION_FORMAT,
                "bank_id": bank.bank_id,
                "clearing_house": ch_id,
                "balance": balance,
                "time": bank.clock(),
            },
        )

    def house_account(self, tx: UnitOfWork, ch_id: str, now: int) -> str:
        """Our account with ``ch_id``, opened on first use (it goes either way)."""
        acc = interbank_account(ch_id)
        if not tx.get_accounts([acc]):
            self.bank.open_internal(tx, acc, AccountKind.CLEARING, ch_id, now)
        return acc


def batch_order(items: list[Candidate]) -> list[int]:
    """The candidates' indices in the order :func:`sub_batch` carries them: grouped by
    CARD-CERT, the groups in the order of their first candidate."""
    groups: dict[bytes, list[int]] = {}
    for i, c in enumerate(items):
        groups.setdefault(c.cert, []).append(i)
    return [i for idx in groups.values() for i in idx]


def sub_batch(acquirer: str, sid: str, items: list[Candidate]) -> dict[str, Any]:
    """Candidates as a batch (grouped by CARD-CERT, each certificate once)."""
    groups: dict[bytes, dict[str, Any]] = {}
    for i in batch_order(items):
        c = items[i]
        g = groups.setdefault(c.cert, {"cert": c.cert.hex(), "payments": []})
        g["payments"].append({"ser": c.ser, "spec": c.spec.hex(), "b": c.b.hex(), "r": c.r.hex()})
    return {"format": BATCH_FORMAT, "bank_id": acquirer, "sid": sid, "cards": list(groups.values())}


__all__ = ["Candidate", "Cleared", "Interbank", "interbank_deposit_id", "sub_batch"]
