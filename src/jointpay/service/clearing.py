"""A clearing house: pre-verifies payments between banks, forwards them, nets positions.

An acquiring bank sends the payments its merchants took with other banks' cards
(:meth:`ClearingHouse.clear`). The house checks each one itself (the card's bank is a
member, its CARD-CERT and the card's signature verify, the payee is the sending bank,
the card is not on its bank's hot list, the payment was not cleared before from any
bank) and forwards the rest, grouped by issuer, to the issuing banks. What an issuer
accepts, the house records once and posts in its own double-entry ledger: the issuer
owes the house, the house owes the acquirer (``bank:ID`` accounts, which always sum to
zero). :meth:`settle` pays the net positions out and tells every member, who books it
against its own money; :meth:`audit` checks the house's books and that every member's
account with the house is the exact mirror of the house's account of it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from jointpay.crypto.certs import (
    BankCert,
    BankRole,
    CardCert,
    MerchantCert,
    SigningKey,
    VerifyKey,
    check_ident,
)
from jointpay.crypto.errors import CryptoError, InvalidCertificateError
from jointpay.crypto.group import get_group
from jointpay.crypto.schnorr import PaymentCert, verify
from jointpay.domain.money import check_currency
from jointpay.domain.records import Account, AccountKind, InterbankRecord, Leg, Transfer
from jointpay.protocol.deposit import Batch, BatchError, RawPayment, parse_batch, parse_deposit
from jointpay.protocol.spec import PaymentSpec
from jointpay.service.errors import BadInput, Refused, ServiceError
from jointpay.service.interbank import Candidate, batch_order, sub_batch
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
    MemberConnector,
    MemberPort,
    Membership,
    SchemeError,
    Unreachable,
    field,
    malformed,
    open_body,
    position_account,
    sign_body,
)
from jointpay.storage.base import Store, UnitOfWork

CH_CONFIG_KEY: Final = "clearing_house"
MEMBERS_KEY: Final = "clearing_members"
CURSORS_KEY: Final = "clearing_hotlist_cursors"
PENDING_KEY: Final = "clearing_pending_settlements"
RELAY_WINDOW: Final = 600
"""How far a relayed deposit's timestamp may be from the house's clock (seconds); the
merchant's bank then applies its own window and its sequence numbers."""

Clock = Callable[[], int]


def http_member(bank_id: str, url: str | None) -> MemberPort:
    from jointpay.api.client import HttpMember

    if url is None:
        raise Unreachable(f"no address for bank {bank_id}")
    return HttpMember(url)


@dataclass(frozen=True, slots=True)
class Member:
    cert: BankCert
    url: str | None

    @property
    def key(self) -> VerifyKey:
        return self.cert.verify_key


@dataclass(frozen=True, slots=True)
class _Item:
    pos: int
    cert: CardCert
    ser: int
    spec_bytes: bytes
    spec: PaymentSpec
    pc: PaymentCert


class ClearingHouse:
    """One clearing house on its own store (SQLite or PostgreSQL)."""

    def __init__(
        self, store: Store, *, clock: Clock, connect: MemberConnector = http_member
    ) -> None:
        self.store = store
        self.clock = clock
        self.connect = connect
        with store.transaction() as tx:
            raw = tx.config_get(CH_CONFIG_KEY)
            scheme = tx.config_get(SCHEME_CONFIG_KEY)
        if raw is None:
            raise BadInput("no_clearing_house", "no clearing house here: run `clearing init`")
        cfg = json.loads(raw)
        self.ch_id: str = cfg["id"]
        self.currency: str = cfg["currency"]
        self._key = SigningKey.from_private_bytes(self.ch_id, bytes.fromhex(cfg["signing_key"]))
        self.membership: Membership | None = (
            None if scheme is None else Membership.from_json(scheme)
        )

    @classmethod
    def create(cls, store: Store, ch_id: str, currency: str, *, clock: Clock) -> ClearingHouse:
        try:
            check_ident(ch_id, "clearing house id")
            check_currency(currency)
        except (CryptoError, ValueError) as exc:
            raise BadInput("bad_parameters", str(exc)) from exc
        key = SigningKey.generate(ch_id)
        with store.transaction() as tx:
            if tx.config_get(CH_CONFIG_KEY) is not None:
                raise Refused("exists", "a clearing house already exists here")
            tx.config_set(
                CH_CONFIG_KEY,
                json.dumps(
                    {
                        "id": ch_id,
                        "currency": currency,
                        "signing_key": key.private_bytes().hex(),
                        "created_at": clock(),
                    }
                ),
            )
        return cls(store, clock=clock)

    @property
    def verify_key(self) -> VerifyKey:
        return self._key.verify_key

    # -- membership -------------------------------------------------------------------
    def join(self, scheme_id: str, scheme_key: bytes, cert: bytes) -> dict[str, Any]:
        """``clearing join-scheme``: keep the root key and our own BANK-CERT."""
        try:
            root = VerifyKey(scheme_id, scheme_key)
            own = BankCert.decode(cert)
            own.verify(root, at=self.clock(), role=BankRole.CLEARING)
        except (CryptoError, ValueError) as exc:
            raise BadInput("bad_cert", f"the BANK-CERT does not verify: {exc}") from exc
        if own.bank_id != self.ch_id or own.public_key != self.verify_key.raw:
            raise BadInput("bad_cert", "the BANK-CERT certifies another house or key")
        m = Membership(root, own)
        with self.store.transaction() as tx:
            tx.config_set(SCHEME_CONFIG_KEY, m.to_json())
        self.membership = m
        return {"clearing_house": self.ch_id, "scheme_id": scheme_id, "joined": True}

    def _scheme(self) -> Membership:
        if self.membership is None:
            raise Refused("not_in_scheme", "this clearing house has not joined a scheme")
        return self.membership

    def members(self, tx: UnitOfWork | None = None) -> dict[str, Member]:
        if tx is None:
            with self.store.transaction() as t:
                return self.members(t)
        raw = json.loads(tx.config_get(MEMBERS_KEY) or "{}")
        return {
            bid: Member(BankCert.decode(bytes.fromhex(m["cert"])), m.get("url"))
            for bid, m in raw.items()
        }

    def add_member(self, cert_hex: str, url: str | None) -> dict[str, Any]:
        """``clearing add-member``: a bank of the scheme clears through us from now on."""
        m = self._scheme()
        try:
            cert = m.check_member(bytes.fromhex(cert_hex), BankRole.BANK, self.clock())
        except (SchemeError, ValueError) as exc:
            raise BadInput("bad_cert", f"the member's BANK-CERT: {exc}") from exc
        now = self.clock()
        with self.store.transaction() as tx:
            raw = json.loads(tx.config_get(MEMBERS_KEY) or "{}")
            raw[cert.bank_id] = {"cert": cert.encode().hex(), "url": url}
            tx.config_set(MEMBERS_KEY, json.dumps(raw, sort_keys=True))
            acc = position_account(cert.bank_id)
            if not tx.get_accounts([acc]):
                tx.create_account(_account(acc, cert.bank_id, self.currency, now))
        return {"clearing_house": self.ch_id, "member": cert.bank_id, "url": url}

    def parameters(self) -> dict[str, Any]:
        m = self._scheme()
        now = self.clock()
        members = [
            mem.cert.encode().hex()
            for _, mem in sorted(self.members().items())
            if mem.cert.not_before <= now < mem.cert.not_after
        ]
        return {
            "clearing_house": self.ch_id,
            "scheme_id": m.scheme_id,
            "currency": self.currency,
            "public_key": self.verify_key.raw.hex(),
            "cert": m.own_cert.encode().hex(),
            "members": members,
        }

    def _member(self, members: dict[str, Member], bank_id: object) -> Member:
        m = members.get(bank_id) if isinstance(bank_id, str) else None
        if m is None:
            raise Refused("not_a_member", f"{bank_id!r} is not a member of {self.ch_id}")
        return m

    # -- clearing -----------------------------------------------------------------------
    def clear(self, message: object) -> dict[str, Any]:
        """Pre-verify an acquirer's foreign payments, forward them, record what issuers took."""
        self._scheme()
        members = self.members()
        acq_id = message.get("acquirer") if isinstance(message, dict) else None
        acquirer = self._member(members, acq_id)
        with malformed("clear"):
            body = open_body(acquirer.key, CLEAR_TAG, message, CLEAR_FORMAT)
            if field(body, "clearing_house", str) != self.ch_id:
                raise SchemeError("the message is for another clearing house")
            ref = field(body, "ref", str)
            when = field(body, "time", int)
            batch = parse_batch(body.get("batch"))
            if batch.bank_id != acquirer.cert.bank_id:
                raise SchemeError("the batch names another acquirer")
        if abs(self.clock() - when) > INTERBANK_WINDOW:
            # played again later, its payments would be cleared for an acquirer that
            # asked for nothing and books nothing (a bounced cheque paid since, say)
            raise Refused("stale_message", "the acquirer's clearing message is not fresh")
        results = self._clear_payments(members, acquirer.cert.bank_id, ref, batch)
        return sign_body(
            self._key,
            CLEARED_TAG,
            {
                "format": CLEARED_FORMAT,
                "clearing_house": self.ch_id,
                "ref": ref,
                "results": results,
            },
        )

    def relay(self, body: object) -> dict[str, Any]:
        """A merchant deposits directly at the house (the patent: "a clearing house to
        process the service providers' deposits before it re-transmits to various
        issuing banks").

        ``body`` is ``{"deposit": <the merchant's signed deposit>, "merchant_cert": hex}``.
        The house checks the MERCHANT-CERT under the merchant's bank's BANK-CERT key and
        the session's signature under it, then hands the merchant's own signed deposit
        to the merchant's bank. The bank runs it as if the merchant had come to it: it
        judges every payment by its own rules first (sequence, time, currency, its
        merchant) and has the other banks' cards it accepts cleared through this house
        (:meth:`clear`), then credits the merchant and signs the receipt returned here.
        (The house once cleared those cards before the bank judged them: a payment the
        bank then refused, stale by its own deposit window say, had its card debited
        and the house owing the bank for nothing.)
        """
        self._scheme()
        members = self.members()
        now = self.clock()
        if not isinstance(body, dict) or not isinstance(body.get("merchant_cert"), str):
            raise BadInput("malformed", "a relayed deposit is {deposit, merchant_cert}")
        message = body.get("deposit")
        try:
            req = parse_deposit(message)
            mc = MerchantCert.decode(bytes.fromhex(body["merchant_cert"]))
        except (BatchError, CryptoError, ValueError) as exc:
            raise BadInput("malformed", f"relayed deposit: {exc}") from exc
        acquirer = self._member(members, req.bank_id)
        try:
            mc.verify(acquirer.key, at=now)
            if (mc.bank_id, mc.sid) != (req.bank_id, req.sid):
                raise InvalidCertificateError("the MERCHANT-CERT is for another merchant")
            req.verify(mc.verify_key)
        except CryptoError as exc:
            raise Refused("bad_signature", f"the deposit is not the merchant's: {exc}") from exc
        if abs(now - req.time) > RELAY_WINDOW:
            raise Refused("stale_message", "the deposit message's timestamp is not fresh")
        ref = f"relay:{req.sid}:{req.seq}"
        acq = acquirer.cert.bank_id
        relayed = sign_body(
            self._key,
            RELAY_TAG,
            {
                "format": RELAY_FORMAT,
                "clearing_house": self.ch_id,
                "acquirer": acq,
                "ref": ref,
                "deposit": message,
            },
        )
        try:
            return dict(self.connect(acq, acquirer.url).interbank_relayed(relayed))
        except Unreachable as exc:
            raise Refused("bank_unreachable", f"bank {acq} did not answer: {exc}") from exc

    def _clear_payments(
        self, members: dict[str, Member], acq: str, ref: str, batch: Batch
    ) -> list[dict[str, Any]]:
        """Pre-verify, forward to the issuers and book; one result per payment."""
        sid = batch.sid
        results: list[dict[str, Any]] = []
        items: list[_Item] = []
        for raw in batch.payments():
            checked = self._pre_verify(raw, members, acq, len(results))
            if isinstance(checked, _Item):
                items.append(checked)
                results.append({"card": checked.cert.card_number, "ser": checked.ser})
            else:
                results.append(checked)
        self._refresh_hotlists(members, sorted({i.cert.bank_id for i in items}))
        with self.store.transaction() as tx:
            prior = tx.existing_interbank(
                [(i.cert.bank_id, i.cert.card_number, i.ser) for i in items]
            )
            listed = {(e.reason.split(":", 1)[0], e.card_number): e for e in tx.hotlist_since(0)}
        forward: dict[str, list[_Item]] = {}
        seen: dict[tuple[str, str, int], bytes] = {}
        for it in items:
            issuer, card = it.cert.bank_id, it.cert.card_number
            key = (issuer, card, it.ser)
            hot = listed.get((issuer, card))
            rec = prior.get(key)
            out = results[it.pos]
            if hot is not None and it.spec.time > hot.added_at:
                out.update(status="rejected", reason="blacklisted")
            elif seen.get(key) == it.spec_bytes:  # the same payment twice in one batch
                out.update(status="rejected", reason="duplicate")
            elif rec is not None and rec.spec == it.spec_bytes:
                # cleared before: the same acquirer asking again gets the same answer
                same = rec.acquirer == acq
                out.update(
                    status="accepted" if same else "rejected",
                    reason=None if same else "duplicate",
                )
            else:  # new, or the same ser over another spec: the issuer keeps the evidence
                forward.setdefault(issuer, []).append(it)
            seen.setdefault(key, it.spec_bytes)
        booked: list[tuple[_Item, str]] = []
        for issuer, its in forward.items():
            for it, status, reason in self._forward(members[issuer], acq, ref, sid, its):
                out = results[it.pos]
                out.update(status=status, reason=reason)
                if status == "accepted":
                    booked.append((it, issuer))
        if booked:
            for pos in self._book(acq, ref, booked):
                results[pos].update(status="rejected", reason="duplicate")
        return results

    def _pre_verify(
        self, raw: RawPayment, members: dict[str, Member], acq: str, pos: int
    ) -> _Item | dict[str, Any]:
        ser = raw.ser if isinstance(raw.ser, int) and not isinstance(raw.ser, bool) else None
        out: dict[str, Any] = {"card": "", "ser": ser, "status": "rejected"}
        try:
            if not all(isinstance(v, str) for v in (raw.cert, raw.spec, raw.b, raw.r)):
                raise ValueError("hex fields")
            cert = CardCert.decode(bytes.fromhex(str(raw.cert)), get_group)
            spec_bytes = bytes.fromhex(str(raw.spec))
            spec = PaymentSpec.decode(spec_bytes)
            if ser is None:
                raise ValueError("ser")
            pc = PaymentCert.parse(
                cert.group, ser, spec_bytes, bytes.fromhex(str(raw.b)), bytes.fromhex(str(raw.r))
            )
        except (ValueError, CryptoError):
            return {**out, "reason": "malformed"}
        out["card"] = cert.card_number
        issuer = members.get(cert.bank_id)
        if issuer is None:
            return {**out, "reason": "unknown_card"}
        try:
            cert.verify(issuer.key)
        except CryptoError:
            return {**out, "reason": "bad_cert"}
        if spec.card_cert_id != cert.cert_id:
            return {**out, "reason": "bad_cert"}
        try:
            verify(cert.group, cert.joint_key, pc)
        except CryptoError:
            return {**out, "reason": "bad_signature"}
        if spec.bank_id != acq:
            return {**out, "reason": "wrong_merchant"}
        if spec.currency != self.currency:  # our positions are in our currency
            return {**out, "reason": "currency_mismatch"}
        return _Item(pos, cert, ser, spec_bytes, spec, pc)

    def _forward(
        self, issuer: Member, acq: str, ref: str, sid: str, items: list[_Item]
    ) -> list[tuple[_Item, str, str | None]]:
        iid = issuer.cert.bank_id
        candidates = [
            Candidate(
                it.cert.encode(),
                iid,
                it.cert.card_number,
                it.ser,
                it.spec_bytes,
                it.pc.b_bytes,
                it.pc.r_bytes,
                it.spec.amount,
            )
            for it in items
        ]
        message = sign_body(
            self._key,
            INTERBANK_TAG,
            {
                "format": INTERBANK_FORMAT,
                "clearing_house": self.ch_id,
                "issuer": iid,
                "acquirer": acq,
                "ref": ref,
                "time": self.clock(),
                "batch": sub_batch(acq, sid, candidates),
            },
        )
        down: list[tuple[_Item, str, str | None]] = [
            (it, "rejected", "clearing_unavailable") for it in items
        ]
        try:
            answer = self.connect(iid, issuer.url).interbank_deposit(message)
            body = open_body(issuer.key, INTERBANK_RECEIPT_TAG, answer, INTERBANK_RECEIPT_FORMAT)
            results = field(body, "results", list)
            if body.get("ref") != ref or len(results) != len(items):
                raise SchemeError("the issuer answered for another session")
        except (Unreachable, ServiceError, SchemeError):
            return down
        # The issuer answers in the sub-batch's order (batch_order). By position, not by
        # (card, ser): a clone's two spends of a ser share it, and bank B takes the
        # first and refuses the second; keyed by (card, ser), both got the refusal and
        # the one B booked was never booked here.
        out: list[tuple[_Item, str, str | None] | None] = [None] * len(items)
        for i, r in zip(batch_order(candidates), results, strict=True):
            it = items[i]
            if not isinstance(r, dict) or r.get("ser") != it.ser:
                return down
            accepted = r.get("status") == "accepted"
            # a refusal of the CARD-CERT itself names no card ("")
            if r.get("card") != it.cert.card_number and (accepted or r.get("card") != ""):
                return down
            if accepted:
                out[i] = (it, "accepted", None)
            else:
                out[i] = (it, "rejected", str(r.get("reason") or "rejected"))
        return [o for o in out if o is not None]

    def _book(self, acq: str, ref: str, booked: list[tuple[_Item, str]]) -> list[int]:
        """Record the accepted payments once and post the positions they create; return
        the places of those another record holds already (none from an honest issuer).

        Two runs may bring the same payment at once (an acquirer's deposit sent again
        while the first answer is late): the issuer answers ``accepted`` to both, and
        the second run to book finds it recorded, under the position accounts' locks,
        and books only the rest. It used to fail on the record's key and roll back the
        rest with it, which the issuer had booked."""
        now = self.clock()
        accounts = sorted({position_account(acq), *(position_account(i) for _, i in booked)})
        with self.store.transaction() as tx:
            tx.get_balances(accounts, lock=True)  # one run at a time books for them
            have = tx.existing_interbank(
                [(issuer, it.cert.card_number, it.ser) for it, issuer in booked]
            )
            owed: dict[str, int] = {}
            records = []
            taken: list[int] = []
            for it, issuer in booked:
                rec = have.get((issuer, it.cert.card_number, it.ser))
                if rec is not None:  # booked by a run at the same time: accepted there
                    if rec.acquirer != acq or rec.spec != it.spec_bytes:
                        taken.append(it.pos)
                    continue
                owed[issuer] = owed.get(issuer, 0) + it.spec.amount
                records.append(
                    InterbankRecord(
                        issuer,
                        it.cert.card_number,
                        it.ser,
                        acq,
                        self.ch_id,
                        it.spec.sid,
                        it.spec.amount,
                        it.spec.currency,
                        it.spec_bytes,
                        ref,
                        now,
                    )
                )
            if not records:
                return taken
            legs = [Leg(position_account(i), -a) for i, a in sorted(owed.items())]
            legs.append(Leg(position_account(acq), sum(owed.values())))
            tx.add_interbank(records)
            tx.post(
                Transfer(
                    f"clear:{secrets.token_hex(12)}",
                    "clearing",
                    self.currency,
                    tuple(legs),
                    f"{len(records)} payments from {acq} ({ref})"[:200],
                    now,
                )
            )
        return taken

    # -- on-line clearance through the house ---------------------------------------------
    def online_check(self, message: object) -> dict[str, Any]:
        members = self.members()
        acq = self._member(members, message.get("acquirer") if isinstance(message, dict) else None)
        with malformed("online check"):
            body = open_body(acq.key, CLEAR_TAG, message, "jointpay-online/1")
            if field(body, "clearing_house", str) != self.ch_id:
                raise SchemeError("the question is for another clearing house")
            issuer = self._member(members, field(body, "issuer", str))
            card, amount = field(body, "card", str), field(body, "amount", int)
            merchant, when = field(body, "merchant", str), field(body, "time", int)
            if not 0 < amount < 1 << 63:
                raise SchemeError(f"amount {amount} is out of range")
        if abs(self.clock() - when) > RELAY_WINDOW:
            raise Refused("stale_message", "the acquirer's question is not fresh")
        ask = sign_body(
            self._key,
            INTERBANK_TAG,
            {
                "format": "jointpay-online/1",
                "clearing_house": self.ch_id,
                "acquirer": acq.cert.bank_id,
                "issuer": issuer.cert.bank_id,
                "merchant": merchant,
                "card": card,
                "amount": amount,
                "time": self.clock(),
            },
        )
        try:
            answer = self.connect(issuer.cert.bank_id, issuer.url).interbank_online_check(ask)
            got = open_body(issuer.key, INTERBANK_RECEIPT_TAG, answer, "jointpay-online-answer/1")
        except (Unreachable, ServiceError, SchemeError) as exc:
            raise Refused("bank_unreachable", f"the card's bank did not answer: {exc}") from exc
        return sign_body(self._key, CLEARED_TAG, got)

    # -- hot lists --------------------------------------------------------------------------
    def _refresh_hotlists(self, members: dict[str, Member], which: list[str]) -> None:
        """Fetch what was added to these members' hot lists since we last asked."""
        with self.store.transaction() as tx:
            cursors: dict[str, int] = json.loads(tx.config_get(CURSORS_KEY) or "{}")
        fresh: dict[str, list[Any]] = {}
        for bid in which:
            m = members.get(bid)
            if m is None:
                continue
            try:
                fresh[bid] = self.connect(bid, m.url).hotlist(cursors.get(bid, 0))
            except (Unreachable, ServiceError):
                continue  # the issuer applies its own hot list anyway
        if not any(fresh.values()):
            return
        with self.store.transaction() as tx:
            cursors = json.loads(tx.config_get(CURSORS_KEY) or "{}")
            for bid, entries in fresh.items():
                for e in entries:
                    if e.version > cursors.get(bid, 0):
                        tx.add_hotlist(e.card_number, f"{bid}:{e.reason}"[:64], e.added_at)
                        cursors[bid] = e.version
            tx.config_set(CURSORS_KEY, json.dumps(cursors, sort_keys=True))

    def scheme_hotlist(self) -> list[dict[str, Any]]:
        """Every member's hot list, brought up to date: what terminals of any bank need."""
        members = self.members()
        self._refresh_hotlists(members, sorted(members))
        with self.store.transaction() as tx:
            entries = tx.hotlist_since(0)
        out = []
        for e in entries:
            issuer, _, reason = e.reason.partition(":")
            out.append(
                {"issuer": issuer, "card": e.card_number, "reason": reason, "added_at": e.added_at}
            )
        return out

    # -- settlement and audit -------------------------------------------------------------
    def positions(self) -> dict[str, int]:
        """What the house owes each member (negative: what the member owes the house)."""
        with self.store.transaction() as tx:
            return _positions(tx.list_accounts())

    def settle(self) -> dict[str, Any]:
        """Pay out every net position (posted at once) and tell each member."""
        now = self.clock()
        settlement: str | None = None
        with self.store.transaction() as tx:
            # Read under the position accounts' locks: a second run at once waits for
            # this one to commit and finds them at zero. Read without (PostgreSQL), both
            # runs paid every position, and the next run had to claw it back.
            accounts = [a for a in tx.list_accounts() if _is_position(a)]
            held = tx.get_balances(sorted(a.id for a in accounts), lock=True)
            open_ = {a.owner: held[a.id] for a in accounts if held.get(a.id)}
            pending: list[dict[str, Any]] = json.loads(tx.config_get(PENDING_KEY) or "[]")
            if open_:
                settlement = secrets.token_hex(8)
                tx.post(
                    Transfer(
                        f"settle:{settlement}",
                        "settlement",
                        self.currency,
                        tuple(Leg(position_account(b), -v) for b, v in sorted(open_.items())),
                        f"net settlement of {len(open_)} members",
                        now,
                    )
                )
                pending += [
                    {"bank_id": b, "settlement": settlement, "amount": v}
                    for b, v in sorted(open_.items())
                ]
                tx.config_set(PENDING_KEY, json.dumps(pending, sort_keys=True))
        delivered, failed = self._deliver(pending)
        return {
            "clearing_house": self.ch_id,
            "settlement": settlement,
            "paid": dict(sorted(open_.items())),
            "delivered": delivered,
            "undelivered": failed,
        }

    def _deliver(self, pending: list[dict[str, Any]]) -> tuple[int, list[str]]:
        members = self.members()
        left: list[dict[str, Any]] = []
        done = 0
        for p in pending:
            m = members.get(p["bank_id"])
            message = sign_body(
                self._key,
                SETTLEMENT_TAG,
                {
                    "format": SETTLEMENT_FORMAT,
                    "clearing_house": self.ch_id,
                    "bank_id": p["bank_id"],
                    "settlement": p["settlement"],
                    "amount": p["amount"],
                    "currency": self.currency,
                    "time": self.clock(),
                },
            )
            try:
                if m is None:
                    raise Unreachable(f"{p['bank_id']} is no longer a member")
                answer = self.connect(p["bank_id"], m.url).interbank_settlement(message)
                open_body(m.key, SETTLED_TAG, answer, "jointpay-settled/1")
                done += 1
            except (Unreachable, ServiceError, SchemeError):
                left.append(p)
        delivered = {(p["bank_id"], p["settlement"]) for p in pending if p not in left}
        with self.store.transaction() as tx:
            # Strike out what this run delivered from the list as it is now: another run
            # may have added a settlement meanwhile (writing back this run's leftovers
            # lost it for good). A member books a settlement once, by its id. Read under
            # the position accounts' locks, which a run takes before it adds to the
            # list: read without (PostgreSQL), a run that added to it between this read
            # and this write had its settlement struck out, never delivered.
            tx.get_balances(sorted(a.id for a in tx.list_accounts() if _is_position(a)), lock=True)
            now_pending = json.loads(tx.config_get(PENDING_KEY) or "[]")
            keep = [p for p in now_pending if (p["bank_id"], p["settlement"]) not in delivered]
            tx.config_set(PENDING_KEY, json.dumps(keep, sort_keys=True))
        return done, sorted({p["bank_id"] for p in left})

    def audit(self) -> dict[str, Any]:
        """The house's books balance, and each member's books mirror them."""
        violations: list[str] = []
        with self.store.transaction() as tx:
            violations += [
                f"transfer {t} does not balance" for t in tx.audit_unbalanced_transfers()
            ]
            violations += [
                f"{cur} entries sum to {v}, not 0"
                for cur, v in tx.audit_currency_sums().items()
                if v
            ]
            sums = tx.audit_entry_sums()
            accounts = {a.id: a for a in tx.list_accounts()}
            pending: list[dict[str, Any]] = json.loads(tx.config_get(PENDING_KEY) or "[]")
            records = tx.list_interbank()
        for aid, acc in accounts.items():
            if sums.get(aid, 0) != acc.balance:
                violations.append(
                    f"{aid}: balance {acc.balance} but entries sum {sums.get(aid, 0)}"
                )
        positions = _positions(list(accounts.values()))
        if sum(positions.values()):
            violations.append(f"positions sum to {sum(positions.values())}, not 0")
        members = self.members()
        mirrors: dict[str, int | None] = {}
        for bid, m in sorted(members.items()):
            in_flight = sum(p["amount"] for p in pending if p["bank_id"] == bid)
            try:
                answer = self.connect(bid, m.url).interbank_position(self.ch_id)
                body = open_body(m.key, POSITION_TAG, answer, POSITION_FORMAT)
                theirs = field(body, "balance", int)
            except (Unreachable, ServiceError, SchemeError) as exc:
                violations.append(f"{bid}: no signed position ({exc})")
                mirrors[bid] = None
                continue
            mirrors[bid] = theirs
            if theirs + positions.get(bid, 0) + in_flight != 0:
                violations.append(
                    f"{bid} books {theirs} with {self.ch_id}, the house books "
                    f"{positions.get(bid, 0)} (settlement in flight {in_flight})"
                )
        return {
            "ok": not violations,
            "violations": violations,
            "positions": positions,
            "member_books": mirrors,
            "cleared_payments": len(records),
            "cleared_amount": sum(r.amount for r in records),
        }


def _is_position(account: Account) -> bool:
    """A member's position account (``bank:ID``)."""
    return account.id.startswith("bank:") and account.kind is AccountKind.CLEARING


def _positions(accounts: list[Account]) -> dict[str, int]:
    """The members' position accounts (``bank:ID``) by member."""
    return {a.owner: a.balance for a in accounts if _is_position(a)}


def _account(acc: str, owner: str, currency: str, now: int) -> Account:
    return Account(acc, AccountKind.CLEARING, currency, owner, 0, now, allow_negative=True)


__all__ = ["ClearingHouse", "Member", "http_member"]
