"""The card (FIG. 6, 7): an ISO 7816-4 applet, bytes in and bytes out.

:class:`CardApplet` is sans-I/O. It is driven by :meth:`CardApplet.process` (one
command APDU in, one response APDU out) and is given two things from outside: a
``persist`` function that durably and atomically stores a :class:`CardState` (the
card's EEPROM), and a ``random_bytes`` function (the card's RNG). The same object
serves in process, behind the vpcd virtual reader, or under a fuzzer.

Durability rules, the ones a real purse follows:

* every change of persistent state is computed as a new :class:`CardState`, written
  with ``persist``, and only then made current: a power cut leaves the old state or
  the new one, never a torn one;
* a payment consumes its ``ser`` and debits the balance in the same write that
  records the PAYMENT-CERT it returns, so no ser is ever handed out twice and the
  terminal can read the payment back after a tear (GET DATA ``0105``: the card keeps
  its last :data:`PAYMENT_LOG`);
* the PIN try counter is decremented and written *before* the PIN is compared (as EMV
  cards do), so cutting the power during VERIFY cannot buy a free guess.

Who knows which secret: the card holds each key share (the user's ``S_U``, made by
the card's RNG, loaded from a trusted terminal, set at manufacture, or summed from
several of these; the bank's ``S_C``; any other contributor's) and is the only place
they are ever added. No command reads a share or the joint secret back.

Command set (CLA ``80`` proprietary, ``90`` when chained; ``00`` for ISO commands):

====  ====  ======================================================================
CLA   INS   command
====  ====  ======================================================================
00    A4    SELECT by AID (P1 = 04)
00    20    VERIFY PIN (P2 = 80); without data: tries left as 63Cx
00    84    GET CHALLENGE (8 bytes), for RESET RETRY COUNTER
00    2C    RESET RETRY COUNTER: new PIN and the bank's master-key MAC
00    C0    GET RESPONSE
80    CA    GET DATA, P1P2 = 0101 info, 0102 CARD-CERT, 0103 status,
            0105 a payment of the last 8, read back by its payee (signed ser),
            0106 pending withdrawal request
80    50    PAY (MERCHANT-CERT, spec, terminal signature) → ser, b, r
80    52    WITHDRAW REQUEST (amount, flags: renew, up to) → signed request
80    54    WITHDRAW COMPLETE (bank's acknowledgement) → balance, seq
80    E0    PERSONALISE, P1 = 01 identity, 02 generate user share, 03 load user
            share, 04 finish user key, 05 put contribution secret, 06 put CARD-CERT
====  ====  ======================================================================
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from jointpay.crypto.certs import (
    BankCert,
    BankRole,
    CardCert,
    CardMode,
    MerchantCert,
    VerifyKey,
    check_card_number,
    check_currency,
    check_ident,
    mac,
    verify_mac,
)
from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import CryptoError, DecodeError, InvalidCertificateError
from jointpay.crypto.group import SUITES, Group, ModpParams, get_group, modp_group, resolver
from jointpay.crypto.joint import Contribution, Role, combine_shares, prove_possession
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, sign
from jointpay.protocol.apdu import SHORT_MAX, SW, ApduFormatError, Command, Response
from jointpay.protocol.messages import (
    LATEST,
    PAYMENT_READ_TAG,
    RENEW,
    TERMINAL_SPEC_TAG,
    UNBLOCK_TAG,
    UP_TO,
    WITHDRAW_ACK_TAG,
    WITHDRAW_REFUSAL_TAG,
    WITHDRAW_REQUEST_TAG,
    AuthKind,
    PayCommand,
    PayResponse,
    WithdrawAck,
    WithdrawRefusal,
    WithdrawRequest,
    payment_read_message,
    unblock_message,
)
from jointpay.protocol.spec import PaymentSpec

AID: Final = bytes.fromhex("F04A4F494E5450415901")  # F0 "JOINTPAY" 01
PIN_TRIES: Final = 3
PIN_MIN, PIN_MAX = 4, 12
STATE_VERSION: Final = 1
PAYMENT_LOG: Final = 8
"""How many of its last payments the card keeps (GET DATA 0105)."""
_BYTES_FIELDS: Final = (
    "bank_key",
    "scheme_key",
    "master_key",
    "pin_key",
    "pin_hash",
    "cert",
    "last_payment",
    "pending_withdrawal",
)
"""The CardState fields that are bytes (hex in the card file)."""

INS_SELECT, INS_VERIFY, INS_CHALLENGE, INS_RESET_RETRY, INS_GET_RESPONSE = (
    0xA4,
    0x20,
    0x84,
    0x2C,
    0xC0,
)
INS_GET_DATA, INS_PAY, INS_WITHDRAW_REQ, INS_WITHDRAW_DONE, INS_PERSONALISE = (
    0xCA,
    0x50,
    0x52,
    0x54,
    0xE0,
)
DO_INFO, DO_CERT, DO_STATUS, DO_LAST_PAYMENT, DO_PENDING = (0x0101, 0x0102, 0x0103, 0x0105, 0x0106)
P_IDENTITY, P_GEN_SHARE, P_LOAD_SHARE, P_FINISH_USER, P_PUT_SECRET, P_PUT_CERT = range(1, 7)


class CardStateError(ValueError):
    """A stored card state is corrupt or of an unknown version."""


def check_pin(pin: str) -> str:
    if (
        not isinstance(pin, str)
        or not pin.isascii()
        or not pin.isdigit()
        or not PIN_MIN <= len(pin) <= PIN_MAX
    ):
        raise ValueError(f"a PIN is {PIN_MIN} to {PIN_MAX} digits")
    return pin


@dataclass(frozen=True)
class CardState:
    """What the card keeps in non-volatile memory (FIG. 6)."""

    phase: str = "blank"  # blank → identified → active
    card_number: str = ""
    suite: str = ""
    group: str | None = None
    group_params: str = ""
    """For a bank's own modp group: its (p, q, g) as JSON, validated at personalisation."""
    currency: str = ""
    mode: str = CardMode.CASH.value
    bank_id: str = ""
    bank_key: bytes = b""
    scheme_id: str = ""
    scheme_key: bytes = b""
    """The scheme root's key, if the issuing bank belongs to a scheme: the card then
    accepts merchants of the scheme's other banks (their BANK-CERT proves the bank)."""
    master_key: bytes = field(default=b"", repr=False)
    pin_key: bytes = field(default=b"", repr=False)
    pin_hash: bytes = field(default=b"", repr=False)
    pin_tries: int = PIN_TRIES
    user_shares: tuple[int, ...] = field(default=(), repr=False)
    user_secret: int = field(default=0, repr=False)
    other_secrets: tuple[tuple[str, int], ...] = field(default=(), repr=False)
    cert: bytes = b""
    balance: int = 0
    seq: int = 0
    next_ser: int = 0
    last_payment: bytes = b""
    earlier_payments: tuple[bytes, ...] = ()
    """The payments before the last, oldest first: with it, the card's log of its last
    :data:`PAYMENT_LOG`, from which a terminal reads back a PAY whose answer it lost,
    even after the card paid elsewhere."""
    pending_withdrawal: bytes = b""
    unblock_count: int = 0
    cheque_book: bool = False
    """A cheque card that was given a cheque count: C_balance then counts its cheques."""

    def __repr__(self) -> str:
        return (
            f"CardState({self.phase}, {self.card_number}, balance={self.balance}, "
            f"seq={self.seq}, next_ser={self.next_ser}, tries={self.pin_tries})"
        )

    def to_json(self) -> str:
        d: dict[str, Any] = asdict(self)
        d["version"] = STATE_VERSION
        for k in _BYTES_FIELDS:
            d[k] = d[k].hex()
        d["user_shares"] = [format(v, "x") for v in self.user_shares]
        d["user_secret"] = format(self.user_secret, "x")
        d["other_secrets"] = [[r, format(v, "x")] for r, v in self.other_secrets]
        d["earlier_payments"] = [p.hex() for p in self.earlier_payments]
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> CardState:
        try:
            d = json.loads(text)
            if not isinstance(d, dict) or d.pop("version", None) != STATE_VERSION:
                raise CardStateError("card state has an unknown version")
            d.setdefault("scheme_id", "")  # cards written before schemes existed
            d.setdefault("scheme_key", "")
            d.setdefault("earlier_payments", [])  # cards written when they kept one
            d["earlier_payments"] = tuple(bytes.fromhex(p) for p in d["earlier_payments"])
            for k in _BYTES_FIELDS:
                d[k] = bytes.fromhex(d[k])
            d["user_shares"] = tuple(int(v, 16) for v in d["user_shares"])
            d["user_secret"] = int(d["user_secret"], 16)
            d["other_secrets"] = tuple((str(r), int(v, 16)) for r, v in d["other_secrets"])
            state = cls(**d)
        except CardStateError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise CardStateError(f"card state is corrupt: {type(exc).__name__}") from exc
        for name in ("pin_tries", "balance", "seq", "next_ser", "unblock_count"):
            v = getattr(state, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CardStateError(f"card state is corrupt: {name}")
        if state.phase not in ("blank", "identified", "active"):
            raise CardStateError("card state is corrupt: phase")
        return state


class _Refuse(Exception):
    def __init__(self, sw: int, why: str = "") -> None:
        super().__init__(why)
        self.sw = sw


Persist = Callable[[CardState], None]
RandomBytes = Callable[[int], bytes]


class CardApplet:
    """The jointpay card application. One instance is one card."""

    def __init__(self, state: CardState, persist: Persist, random_bytes: RandomBytes) -> None:
        self.state = state
        self._persist = persist
        self._random = random_bytes
        self.reset()

    # -- power and session ------------------------------------------------------------
    def reset(self) -> None:
        """Power-on / warm reset: all volatile (RAM) state is lost."""
        self._selected = False
        self._pin_ok = False
        self._challenge: bytes | None = None
        self._out = b""
        self._chain = b""
        self._chain_head: tuple[int, int, int, int] | None = None

    def _commit(self, new: CardState) -> None:
        self._persist(new)  # may raise: power lost during the write
        self.state = new

    # -- dispatch ---------------------------------------------------------------------
    def process(self, raw: bytes) -> bytes:
        """Execute one command APDU; return the response APDU. Never raises on input."""
        try:
            cmd = Command.parse(raw)
        except ApduFormatError:
            return Response(b"", SW.WRONG_LENGTH).encode()
        try:
            return self._dispatch(cmd).encode()
        except _Refuse as r:
            return Response(b"", r.sw).encode()
        except (DecodeError, CryptoError, ValueError):
            return Response(b"", SW.WRONG_DATA).encode()

    def _dispatch(self, cmd: Command) -> Response:
        if cmd.cla & 0x03:
            raise _Refuse(SW.LOGICAL_CHANNEL_NOT_SUPPORTED)
        base_cla = cmd.cla & ~0x10
        if base_cla not in (0x00, 0x80):
            raise _Refuse(SW.CLA_NOT_SUPPORTED)
        if cmd.ins == INS_GET_RESPONSE and base_cla == 0x00:
            return self._get_response(cmd)
        self._out = b""
        # command chaining: accumulate parts until the last one (CLA b5 clear)
        head = (base_cla, cmd.ins, cmd.p1, cmd.p2)
        if self._chain_head is not None and self._chain_head != head:
            self._chain, self._chain_head = b"", None
            raise _Refuse(SW.CONDITIONS, "chain interrupted")
        if cmd.chained:
            if len(self._chain) + len(cmd.data) > 16384:
                self._chain, self._chain_head = b"", None
                raise _Refuse(SW.WRONG_LENGTH)
            self._chain += cmd.data
            self._chain_head = head
            return Response(b"", SW.OK)
        if self._chain_head is not None:
            cmd = Command(base_cla, cmd.ins, cmd.p1, cmd.p2, self._chain + cmd.data, cmd.le)
            self._chain, self._chain_head = b"", None
        if cmd.ins == INS_SELECT and base_cla == 0x00:
            return self._select(cmd)
        if not self._selected:
            raise _Refuse(SW.CONDITIONS, "not selected")
        handler = self._handlers().get((base_cla, cmd.ins))
        if handler is None:
            known = {ins for (_, ins) in self._handlers()}
            raise _Refuse(SW.CLA_NOT_SUPPORTED if cmd.ins in known else SW.INS_NOT_SUPPORTED)
        return self._respond(handler(cmd), cmd.le)

    def _handlers(self) -> dict[tuple[int, int], Callable[[Command], bytes]]:
        return {
            (0x00, INS_VERIFY): self._verify,
            (0x00, INS_CHALLENGE): self._get_challenge,
            (0x00, INS_RESET_RETRY): self._reset_retry,
            (0x80, INS_GET_DATA): self._get_data,
            (0x80, INS_PAY): self._pay,
            (0x80, INS_WITHDRAW_REQ): self._withdraw_request,
            (0x80, INS_WITHDRAW_DONE): self._withdraw_complete,
            (0x80, INS_PERSONALISE): self._personalise,
        }

    def _respond(self, data: bytes, le: int | None) -> Response:
        """Send ``data``; beyond what Le allows, keep the rest for GET RESPONSE (61xx)."""
        limit = le if le is not None else SHORT_MAX
        if len(data) <= limit:
            return Response(data, SW.OK)
        self._out = data[limit:]
        left = len(self._out)
        return Response(data[:limit], SW.BYTES_REMAINING | (left if left < 0x100 else 0))

    def _get_response(self, cmd: Command) -> Response:
        if not self._out:
            raise _Refuse(SW.CONDITIONS, "no response pending")
        data, self._out = self._out, b""
        return self._respond(data, cmd.le)

    # -- ISO commands -----------------------------------------------------------------
    def _select(self, cmd: Command) -> Response:
        if cmd.p1 != 0x04:
            raise _Refuse(SW.WRONG_P1P2)
        if cmd.data != AID:
            self._selected = False
            raise _Refuse(SW.FILE_NOT_FOUND)
        self.reset()
        self._selected = True
        return Response(b"", SW.OK)

    def _verify(self, cmd: Command) -> bytes:
        st = self.state
        if cmd.p1 != 0x00 or cmd.p2 != 0x80:
            raise _Refuse(SW.WRONG_P1P2)
        if st.phase != "active":
            raise _Refuse(SW.CONDITIONS, "card not personalised")
        if st.pin_tries == 0:
            raise _Refuse(SW.AUTH_BLOCKED)
        if not cmd.data:  # ISO: VERIFY without data asks for the tries left
            if self._pin_ok:
                return b""
            raise _Refuse(0x63C0 | st.pin_tries)
        self._pin_ok = False
        # Decrement and write first: a power cut during the comparison costs a try.
        self._commit(replace(st, pin_tries=st.pin_tries - 1))
        try:
            pin = check_pin(cmd.data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pin = ""
        good = hmac.compare_digest(self._pin_hash(pin), st.pin_hash)
        if not good:
            # 63C0 on the try that blocks the PIN; 6983 from then on (ISO 7816-4 11.5.6)
            raise _Refuse(0x63C0 | self.state.pin_tries)
        self._commit(replace(self.state, pin_tries=PIN_TRIES))
        self._pin_ok = True
        return b""

    def _pin_hash(self, pin: str) -> bytes:
        return hmac.new(
            self.state.pin_key, b"jointpay/v1/pin\x00" + pin.encode(), hashlib.sha256
        ).digest()

    def _get_challenge(self, cmd: Command) -> bytes:
        if cmd.le not in (None, 8):
            raise _Refuse(SW.WRONG_LE | 8)
        self._challenge = self._random(8)
        return self._challenge

    def _reset_retry(self, cmd: Command) -> bytes:
        """The bank unblocks the card and sets a new PIN, authenticated by the master key."""
        st = self.state
        if st.phase != "active":
            raise _Refuse(SW.CONDITIONS)
        challenge, self._challenge = self._challenge, None
        if challenge is None:
            raise _Refuse(SW.CONDITIONS, "GET CHALLENGE first")
        rd = Reader(cmd.data, "RESET RETRY COUNTER")
        new_pin = check_pin(rd.text("new pin", max_len=PIN_MAX))
        tag = rd.raw(32, "mac")
        rd.finish()
        try:
            verify_mac(
                st.master_key, UNBLOCK_TAG, unblock_message(st.card_number, challenge, new_pin), tag
            )
        except CryptoError as exc:
            raise _Refuse(SW.SECURITY_STATUS, "bad MAC") from exc
        self._commit(
            replace(
                st,
                pin_hash=self._pin_hash(new_pin),
                pin_tries=PIN_TRIES,
                unblock_count=st.unblock_count + 1,
            )
        )
        return b""

    # -- GET DATA ---------------------------------------------------------------------
    def _get_data(self, cmd: Command) -> bytes:
        st = self.state
        tag = (cmd.p1 << 8) | cmd.p2
        if tag == DO_INFO:
            return (
                Writer()
                .u8(["blank", "identified", "active"].index(st.phase))
                .text(st.card_number)
                .text(st.suite)
                .text(st.group or "")
                .text(st.currency)
                .text(st.mode)
                .text(st.bank_id)
                .text(st.group_params)
                .finish()
            )
        if st.phase != "active":
            raise _Refuse(SW.CONDITIONS, "card not personalised")
        if tag == DO_CERT:
            return st.cert
        if tag == DO_STATUS:
            return (
                Writer()
                .u64(st.balance)
                .u64(st.seq)
                .u64(st.next_ser)
                .u8(st.pin_tries)
                .u8(int(bool(st.pending_withdrawal)))
                .finish()
            )
        if tag == DO_LAST_PAYMENT:
            return self._read_payment(cmd.data)
        if tag == DO_PENDING:
            if not st.pending_withdrawal:
                raise _Refuse(SW.DATA_NOT_FOUND)
            return st.pending_withdrawal
        raise _Refuse(SW.DATA_NOT_FOUND)

    # -- PAY (FIG. 8 steps 470-530, FIG. 7) -------------------------------------------
    def _group(self) -> Group:
        return self._resolve(self.state.suite, self.state.group)

    def _resolve(self, suite: str, name: str | None) -> Group:
        st = self.state
        if st.group_params and st.group:
            return resolver(
                {st.group: ModpParams.from_json(st.group, json.loads(st.group_params))}
            )(suite, name)
        return get_group(suite, name)

    def _joint_secret(self) -> SecretScalar:
        st = self.state
        shares = [SecretScalar(st.user_secret)] + [SecretScalar(v) for _, v in st.other_secrets]
        return combine_shares(self._group(), shares)

    def _bank_key(self) -> VerifyKey:
        return VerifyKey(self.state.bank_id, self.state.bank_key)

    def _read_payment(self, data: bytes) -> bytes:
        """GET DATA 0105: one of the payments the card keeps, read back by its payee.

        The data names a ser (:data:`LATEST` for the latest payment to the reader)
        and carries the reader's MERCHANT-CERT (with our bank's BANK-CERT if it is
        another scheme bank's merchant) and its signature over the card number and
        the ser. The card answers with that payment only if it is made out to that
        merchant, whose certificate was valid at the payment's time: a terminal reads
        back its own payments after a tear, and a stranger's reader, or another
        merchant's, learns nothing of where the card was used. The reader is checked
        first (6982: no valid signature, or a MERCHANT-CERT its bank did not issue),
        before the card looks at what it keeps (6A88: no such payment to that
        merchant), so that no answer depends on the log for a reader who is not a
        merchant. The signature covers the card's challenge of the GET CHALLENGE just
        before (6985 without one), which any GET DATA 0105 uses up, answered or not:
        a request captured on its way is no good again."""
        st = self.state
        challenge, self._challenge = self._challenge, None
        if not data:
            raise _Refuse(SW.SECURITY_STATUS, "a payment is read back by its payee")
        if challenge is None:
            raise _Refuse(SW.CONDITIONS, "GET CHALLENGE first")
        rd = Reader(data, "payment read")
        ser = rd.u64("ser")
        merchant_cert = rd.blob("MERCHANT-CERT", max_len=4096)
        bank_cert = rd.blob("BANK-CERT", max_len=4096)
        sig = rd.blob("signature", max_len=64)
        rd.finish()
        try:  # the reader first, whatever the card keeps: no answer tells a stranger more
            merchant = MerchantCert.decode(merchant_cert)
            merchant.verify_key.verify(
                PAYMENT_READ_TAG, payment_read_message(st.card_number, ser, challenge), sig
            )
            merchant.verify(self._merchant_bank_key(merchant.bank_id, bank_cert, None))
        except CryptoError as exc:
            raise _Refuse(SW.SECURITY_STATUS, f"reader not authenticated: {exc}") from exc
        logged = (*st.earlier_payments, st.last_payment) if st.last_payment else ()
        for entry in reversed(logged):  # the latest first
            spec_bytes, resp = payment_from_last(entry)
            if ser not in (LATEST, resp.ser):  # LATEST: any ser
                continue
            spec = PaymentSpec.decode(spec_bytes)
            if (spec.bank_id, spec.sid) == (merchant.bank_id, merchant.sid) and (
                merchant.not_before <= spec.time < merchant.not_after
            ):
                return entry
        raise _Refuse(SW.DATA_NOT_FOUND)

    def _merchant_bank_key(self, bank_id: str, bank_cert_bytes: bytes, at: int | None) -> VerifyKey:
        """Our bank's key, or another scheme bank's key from its BANK-CERT (valid at
        ``at``; None: its signature only)."""
        st = self.state
        if bank_id == st.bank_id:
            return self._bank_key()
        if not st.scheme_key:
            raise InvalidCertificateError(f"merchants of bank {bank_id!r} are not accepted")
        bank_cert = BankCert.decode(bank_cert_bytes)
        bank_cert.verify(VerifyKey(st.scheme_id, st.scheme_key), at=at, role=BankRole.BANK)
        if bank_cert.bank_id != bank_id:
            raise InvalidCertificateError("the BANK-CERT is for another bank")
        return bank_cert.verify_key

    def _pay(self, cmd: Command) -> bytes:
        st = self.state
        if cmd.p1 or cmd.p2:
            raise _Refuse(SW.WRONG_P1P2)
        if st.phase != "active":
            raise _Refuse(SW.CONDITIONS, "card not personalised")
        if st.pin_tries == 0:
            raise _Refuse(SW.AUTH_BLOCKED)
        if not self._pin_ok:
            raise _Refuse(SW.SECURITY_STATUS, "PIN not verified")
        self._pin_ok = False  # one PIN entry approves one payment (FIG. 8 step 450)
        body = PayCommand.decode(cmd.data)
        card_cert = CardCert.decode(st.cert, self._resolve)
        # Step 510, "any authenticated information": the payee is a service provider
        # registered with our bank, and it is that provider who asks for this spec.
        try:
            merchant = MerchantCert.decode(body.merchant_cert)
            spec = PaymentSpec.decode(body.spec)
            merchant.verify(
                self._merchant_bank_key(merchant.bank_id, body.bank_cert, spec.time),
                at=spec.time,
            )
            merchant.verify_key.verify(TERMINAL_SPEC_TAG, body.spec, body.terminal_sig)
        except CryptoError as exc:
            raise _Refuse(SW.SECURITY_STATUS, f"terminal not authenticated: {exc}") from exc
        if spec.sid != merchant.sid or spec.bank_id != merchant.bank_id:
            raise _Refuse(SW.SECURITY_STATUS, "spec names another payee")
        if spec.card_cert_id != card_cert.cert_id or spec.currency != st.currency:
            raise _Refuse(SW.DATA_INVALID, "spec is for another card or currency")
        if not card_cert.not_before <= spec.time < card_cert.not_after:
            raise _Refuse(SW.CONDITIONS, "CARD-CERT not valid at the payment time")
        if card_cert.max_amount and spec.amount > card_cert.max_amount:
            raise _Refuse(SW.CONDITIONS, "above the per-payment limit")
        if card_cert.services and spec.service not in card_cert.services:
            raise _Refuse(SW.CONDITIONS, "service not allowed for this card")
        if st.pending_withdrawal:
            raise _Refuse(SW.CONDITIONS, "complete the pending withdrawal first")
        debit = self._debit_for(spec)
        if debit > st.balance:
            raise _Refuse(SW.CONDITIONS, "insufficient balance")
        if st.next_ser > (1 << 64) - 1:
            raise _Refuse(SW.NOT_ENOUGH_MEMORY, "ser exhausted")
        group = self._group()
        cert, _ = sign(
            group,
            self._joint_secret(),
            card_cert.joint_key,
            st.next_ser,
            body.spec,
            aux=self._random(32),
        )
        out = PayResponse(cert.ser, cert.b_bytes, cert.r_bytes).encode()
        last = Writer().blob(body.spec).raw(out).finish()
        earlier = (*st.earlier_payments, st.last_payment) if st.last_payment else ()
        self._commit(
            replace(
                st,
                next_ser=st.next_ser + 1,
                balance=st.balance - debit,
                last_payment=last,
                earlier_payments=earlier[-(PAYMENT_LOG - 1) :],
            )
        )
        return out

    def _debit_for(self, spec: PaymentSpec) -> int:
        """What a payment takes from C_balance: the amount; one cheque for cheque cards
        (none if the card was never given a cheque count: its cheques are then only
        limited by the holder's account, at deposit)."""
        if self.state.mode == CardMode.CHEQUE.value:
            return 1 if self.state.cheque_book else 0
        return spec.amount

    # -- withdrawal (FIG. 10 steps 850-920) -------------------------------------------
    def _withdraw_request(self, cmd: Command) -> bytes:
        st = self.state
        if cmd.p1 not in (0, AuthKind.SIGNATURE, AuthKind.MAC) or cmd.p2:
            raise _Refuse(SW.WRONG_P1P2)  # P1: how the request is authenticated
        if st.phase != "active":
            raise _Refuse(SW.CONDITIONS)
        if not self._pin_ok:
            raise _Refuse(SW.SECURITY_STATUS, "PIN not verified")
        rd = Reader(cmd.data, "WITHDRAW REQUEST")
        amount, flags = rd.u64("amount"), rd.u8("flags")
        kind = AuthKind(cmd.p1 or AuthKind.SIGNATURE)
        rd.finish()
        if flags & ~(RENEW | UP_TO) or amount >= 1 << 63:
            raise _Refuse(SW.WRONG_DATA)
        renew, up_to = bool(flags & RENEW), bool(flags & UP_TO)
        if up_to and st.mode != CardMode.CREDIT.value:
            raise _Refuse(SW.WRONG_DATA, "only a credit card's restore asks up to an amount")
        if st.pending_withdrawal:
            pending = WithdrawRequest.decode(st.pending_withdrawal)
            if (pending.amount, pending.renew, pending.up_to) == (amount, renew, up_to):
                return st.pending_withdrawal  # a retry: the very same request again
            raise _Refuse(SW.CONDITIONS, "another withdrawal is pending")
        card_cert = CardCert.decode(st.cert, self._resolve)
        req = WithdrawRequest(
            st.bank_id,
            st.card_number,
            card_cert.cert_id,
            st.seq + 1,
            st.balance,
            amount,
            renew,
            kind,
            up_to=up_to,
        )
        if kind is AuthKind.SIGNATURE:
            sig, _ = sign(
                self._group(),
                self._joint_secret(),
                card_cert.joint_key,
                req.seq,
                req.tbs(),
                tag=WITHDRAW_REQUEST_TAG,
                aux=self._random(32),
            )
            req = replace(req, auth=sig.b_bytes + sig.r_bytes)
        else:
            req = replace(req, auth=mac(st.master_key, WITHDRAW_REQUEST_TAG, req.tbs()))
        encoded = req.encode()
        self._commit(replace(st, pending_withdrawal=encoded))
        return encoded

    def _withdraw_complete(self, cmd: Command) -> bytes:
        st = self.state
        if cmd.p1 not in (0, 1) or cmd.p2:
            raise _Refuse(SW.WRONG_P1P2)
        if st.phase != "active" or not st.pending_withdrawal:
            raise _Refuse(SW.CONDITIONS, "no withdrawal pending")
        req = WithdrawRequest.decode(st.pending_withdrawal)
        if cmd.p1 == 1:  # the bank's authenticated refusal: drop the request, burn its seq
            refusal = WithdrawRefusal.decode(cmd.data)
            try:
                verify_mac(st.master_key, WITHDRAW_REFUSAL_TAG, refusal.tbs(), refusal.mac)
            except CryptoError as exc:
                raise _Refuse(SW.SECURITY_STATUS, "refusal not authentic") from exc
            if (
                refusal.card_number != st.card_number
                or refusal.seq != req.seq
                or refusal.request_digest != req.digest
            ):
                raise _Refuse(SW.DATA_INVALID, "refusal answers another request")
            self._commit(replace(st, seq=req.seq, pending_withdrawal=b""))
            return Writer().u64(st.balance).u64(req.seq).finish()
        ack = WithdrawAck.decode(cmd.data)
        try:
            verify_mac(st.master_key, WITHDRAW_ACK_TAG, ack.tbs(), ack.mac)
        except CryptoError as exc:
            raise _Refuse(SW.SECURITY_STATUS, "acknowledgement not authentic") from exc
        if (
            ack.card_number != st.card_number
            or ack.seq != req.seq
            or ack.request_digest != req.digest
            or (ack.amount > req.amount if req.up_to else ack.amount != req.amount)
        ):
            raise _Refuse(SW.DATA_INVALID, "acknowledgement answers another request")
        new_cert = st.cert
        if ack.new_cert:
            cert = CardCert.decode(ack.new_cert, self._resolve)
            cert.verify(self._bank_key())
            old = CardCert.decode(st.cert, self._resolve)
            if cert.card_number != st.card_number or cert.joint_key != old.joint_key:
                raise _Refuse(SW.DATA_INVALID, "renewed CARD-CERT is for another key")
            new_cert = ack.new_cert
        new_balance = st.balance + ack.amount
        self._commit(
            replace(
                st,
                balance=new_balance,
                seq=req.seq,
                cert=new_cert,
                pending_withdrawal=b"",
                cheque_book=st.cheque_book or (st.mode == CardMode.CHEQUE.value and ack.amount > 0),
            )
        )
        return Writer().u64(new_balance).u64(req.seq).finish()

    # -- personalisation (FIG. 4 steps 230-280) ---------------------------------------
    def _personalise(self, cmd: Command) -> bytes:
        st = self.state
        if st.phase == "active":
            raise _Refuse(SW.COMMAND_NOT_ALLOWED, "card already personalised")
        if cmd.p1 == P_IDENTITY:
            return self._set_identity(cmd.data)
        if st.phase != "identified":
            raise _Refuse(SW.CONDITIONS, "identity first")
        group = self._group()
        if cmd.p1 == P_GEN_SHARE:  # claim 21/22: the card's own random generator
            self._add_user_share(group.random_scalar())
            return b""
        if cmd.p1 == P_LOAD_SHARE:  # holder's choice, manufacturer, third party
            rd = Reader(cmd.data, "user share")
            value = group.decode_scalar(rd.raw(32, "share"), allow_zero=False)
            rd.finish()
            self._add_user_share(value)
            return b""
        if cmd.p1 == P_FINISH_USER:
            if st.user_secret:
                raise _Refuse(SW.CONDITIONS, "user key already finished")
            if not st.user_shares:
                raise _Refuse(SW.CONDITIONS, "no user key share")
            total = combine_shares(group, [SecretScalar(v) for v in st.user_shares])
            contribution = prove_possession(
                group, total, st.card_number, Role.USER, aux=self._random(32)
            )
            self._commit(replace(st, user_secret=total.reveal(), user_shares=()))
            return contribution.encode()
        if cmd.p1 == P_PUT_SECRET:
            rd = Reader(cmd.data, "contribution secret")
            role = rd.text("role", max_len=32)
            value = group.decode_scalar(rd.raw(32, "secret"), allow_zero=False)
            rd.finish()
            if role == Role.USER.value or role not in {r.value for r in Role}:
                raise _Refuse(SW.WRONG_DATA, "bad role")
            if any(r == role for r, _ in st.other_secrets):
                raise _Refuse(SW.CONDITIONS, "role already loaded")
            self._commit(replace(st, other_secrets=(*st.other_secrets, (role, value))))
            return b""
        if cmd.p1 == P_PUT_CERT:
            return self._put_cert(cmd.data)
        raise _Refuse(SW.WRONG_P1P2)

    def _add_user_share(self, value: int) -> None:
        st = self.state
        if st.user_secret:
            raise _Refuse(SW.CONDITIONS, "user key already finished")
        if len(st.user_shares) >= 4:
            raise _Refuse(SW.NOT_ENOUGH_MEMORY)
        self._commit(replace(st, user_shares=(*st.user_shares, value)))

    def _set_identity(self, data: bytes) -> bytes:
        st = self.state
        if st.phase != "blank":
            raise _Refuse(SW.CONDITIONS, "identity already set")
        rd = Reader(data, "card identity")
        card_number = check_card_number(rd.text("card number", max_len=19))
        suite = rd.text("suite", max_len=32)
        group_name = rd.text("group", max_len=64) or None
        group_params = rd.text("group params", max_len=2048)
        currency = check_currency(rd.text("currency", max_len=3))
        mode = CardMode(rd.text("mode", max_len=16)).value
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        bank_key = rd.raw(32, "bank key")
        master_key = rd.raw(32, "master key")
        pin = check_pin(rd.text("pin", max_len=PIN_MAX))
        scheme_id = rd.text("scheme id", max_len=64)
        scheme_key = rd.blob("scheme key", max_len=32)
        rd.finish()
        if scheme_id:
            check_ident(scheme_id, "scheme id")
        if bool(scheme_id) != (len(scheme_key) == 32):
            raise _Refuse(SW.WRONG_DATA, "a scheme needs both its id and its 32-byte key")
        if suite not in SUITES:
            raise _Refuse(SW.WRONG_DATA, "unknown suite")
        if group_params:  # a bank's own group: validate (p, q, g) before trusting them
            if group_name is None:
                raise _Refuse(SW.WRONG_DATA, "group parameters need a group name")
            try:
                fields = json.loads(group_params)
            except RecursionError:  # nested past the interpreter's limit: no group
                raise _Refuse(SW.WRONG_DATA, "group parameters are not a JSON object") from None
            modp_group(ModpParams.from_json(group_name, fields))
        else:
            get_group(suite, group_name)  # raises for an unknown group
        pin_key = self._random(32)
        new = replace(
            st,
            phase="identified",
            card_number=card_number,
            suite=suite,
            group=group_name,
            group_params=group_params,
            currency=currency,
            mode=mode,
            bank_id=bank_id,
            bank_key=bank_key,
            scheme_id=scheme_id,
            scheme_key=scheme_key,
            master_key=master_key,
            pin_key=pin_key,
        )
        self.state = new  # for _pin_hash; committed just below
        try:
            new = replace(new, pin_hash=self._pin_hash(pin))
        finally:
            self.state = st
        self._commit(new)
        return b""

    def _put_cert(self, data: bytes) -> bytes:
        st = self.state
        if not st.user_secret or not st.other_secrets:
            raise _Refuse(SW.CONDITIONS, "keys not complete")
        cert = CardCert.decode(data, self._resolve)
        cert.verify(self._bank_key())
        group = self._group()
        if (
            cert.card_number != st.card_number
            or cert.currency != st.currency
            or cert.mode.value != st.mode
            or cert.group is not group
        ):
            raise _Refuse(SW.DATA_INVALID, "CARD-CERT is for another card")
        # The certified joint key must be the one our own secrets make.
        if group.public_key(self._joint_secret().reveal()) != cert.joint_key:
            raise _Refuse(SW.DATA_INVALID, "CARD-CERT joint key does not match the card's keys")
        self._commit(replace(st, cert=data, phase="active"))
        return b""


def identity_data(
    card_number: str,
    suite: str,
    group: str | None,
    currency: str,
    mode: str,
    bank_id: str,
    bank_key: bytes,
    master_key: bytes,
    pin: str,
    group_params: str = "",
    scheme: tuple[str, bytes] | None = None,
) -> bytes:
    """PERSONALISE P1=01 data, built by the bank's issuing terminal; ``scheme`` is the
    scheme id and root key when the bank belongs to one."""
    scheme_id, scheme_key = scheme or ("", b"")
    return (
        Writer()
        .text(card_number)
        .text(suite)
        .text(group or "")
        .text(group_params)
        .text(currency)
        .text(mode)
        .text(bank_id)
        .raw(bank_key)
        .raw(master_key)
        .text(pin)
        .text(scheme_id)
        .blob(scheme_key)
        .finish()
    )


def contribution_secret_data(role: str, secret: SecretScalar) -> bytes:
    """PERSONALISE P1=05 data: a contributor writes its own secret into the card."""
    return Writer().text(role).raw(secret.reveal().to_bytes(32, "big")).finish()


def decode_contribution(group: Group, data: bytes) -> Contribution:
    rd = Reader(data, "contribution")
    c = Contribution.read(group, rd)
    rd.finish()
    return c


def payment_from_last(data: bytes) -> tuple[bytes, PayResponse]:
    """Parse GET DATA 0105 (the last payment the card made): its spec and response."""
    rd = Reader(data, "last payment")
    spec = rd.blob("spec", max_len=4096)
    resp = PayResponse.decode(rd.raw(rd.remaining(), "payment"))
    return spec, resp


__all__ = ["AID", "CardApplet", "CardState", "CardStateError", "PaymentCert", "check_pin"]
