"""The service provider's terminal (FIG. 8) and a typed client for the card's APDUs.

:class:`CardClient` speaks the card's command set over any :class:`CardChannel`
(in process, PC/SC, a fuzzer) and turns status words into specific exceptions.
:class:`Terminal` runs the payment protocol: read and check the CARD-CERT (bank
signature, validity, hot list), build and sign the spec, have the holder's PIN
verified, get the PAYMENT-CERT, verify it, refuse a (card, ser) already taken, and
store it for deposit. Time and the PIN come in as arguments; nothing here reads a
clock or a keyboard.
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from jointpay.crypto.certs import CardCert, SigningKey, VerifyKey
from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import CryptoError, DecodeError, ExpiredCertificateError
from jointpay.crypto.group import GroupResolver, get_group
from jointpay.crypto.schnorr import PaymentCert, verify
from jointpay.domain.money import convert, format_amount
from jointpay.protocol.apdu import SW, ApduFormatError, Command, Response, sw_text
from jointpay.protocol.card import (
    AID,
    DO_CERT,
    DO_INFO,
    DO_LAST_PAYMENT,
    DO_PENDING,
    DO_STATUS,
    INS_CHALLENGE,
    INS_GET_DATA,
    INS_GET_RESPONSE,
    INS_PAY,
    INS_RESET_RETRY,
    INS_SELECT,
    INS_VERIFY,
    INS_WITHDRAW_DONE,
    INS_WITHDRAW_REQ,
    payment_from_last,
)
from jointpay.protocol.messages import (
    LATEST,
    TERMINAL_SPEC_TAG,
    AuthKind,
    PayCommand,
    PayResponse,
    WithdrawAck,
    payment_read,
    withdraw_flags,
)
from jointpay.protocol.spec import Conversion, PaymentSpec

SHORT_DATA: Final = 255
MAX_ANSWER: Final = 65_536
"""The most bytes a command's answer may gather through GET RESPONSE (61xx): an
extended-length answer's worth, far above the largest a jointpay card gives."""


class CardChannel(Protocol):
    """Something that carries APDUs to a card and back (PC/SC reader, in process...)."""

    @property
    def extended_length(self) -> bool:
        """Whether the channel carries extended-length APDUs."""

    def transmit(self, apdu: bytes) -> bytes: ...


class CardError(Exception):
    """The card refused a command; ``sw`` is its status word."""

    def __init__(self, sw: int, what: str) -> None:
        super().__init__(f"{what}: {sw_text(sw)} ({sw:04X})")
        self.sw = sw


class CardMute(CardError):
    """The card gave no well-formed answer: pulled out, powered off, or torn mid-reply.

    Raised for a response shorter than a status word and for a channel that fails
    (a :class:`ConnectionError`, as the PC/SC adapter raises). The command may or may
    not have run on the card: after a PAY, :meth:`Terminal.recover` finds out.
    """

    def __init__(self, what: str, why: str) -> None:
        Exception.__init__(self, f"{what}: the card did not answer ({why})")
        self.sw = 0


class WrongPin(CardError):
    @property
    def tries_left(self) -> int:
        return self.sw & 0x0F


class CardLocked(CardError):
    pass


def pin_refusal(exc: WrongPin | CardLocked) -> tuple[str, str]:
    """The stable code and the holder's message for a refused PIN."""
    if isinstance(exc, CardLocked):
        return "locked", "the card is locked (too many wrong PINs)"
    left = exc.tries_left
    return "wrong_pin", (
        f"wrong PIN, {left} tries left" if left else "wrong PIN, the card is now locked"
    )


@dataclass(frozen=True, slots=True)
class CardInfo:
    phase: int
    card_number: str
    suite: str
    group: str | None
    currency: str
    mode: str
    bank_id: str
    group_params: str = ""


@dataclass(frozen=True, slots=True)
class CardStatus:
    balance: int
    seq: int
    next_ser: int
    pin_tries: int
    withdrawal_pending: bool

    @property
    def locked(self) -> bool:
        return self.pin_tries == 0


class CardClient:
    """Typed access to a jointpay card over a :class:`CardChannel`."""

    def __init__(self, channel: CardChannel) -> None:
        self.channel = channel
        self.apdus = 0
        """Command APDUs sent so far (GET RESPONSE included)."""

    def _send(self, cmd: Command) -> Response:
        self.apdus += 1
        what = f"{cmd.cla:02X} {cmd.ins:02X}"
        try:
            raw = self.channel.transmit(cmd.encode())
        except ConnectionError as exc:
            raise CardMute(what, str(exc)) from exc
        try:
            return Response.parse(raw)
        except ApduFormatError as exc:
            raise CardMute(what, str(exc)) from exc

    def command(
        self,
        cla: int,
        ins: int,
        p1: int,
        p2: int,
        data: bytes = b"",
        *,
        le: int | None = None,
        what: str = "command",
    ) -> bytes:
        """Send one logical command; chain or extend long data, collect 61xx parts."""
        ext = self.channel.extended_length
        if len(data) > SHORT_DATA and not ext:
            parts = [data[i : i + SHORT_DATA] for i in range(0, len(data), SHORT_DATA)]
            for part in parts[:-1]:
                r = self._send(Command(cla | 0x10, ins, p1, p2, part))
                if not r.ok:
                    raise self._error(r.sw, what)
            data = parts[-1]
        if le is None:
            le = 65536 if ext else 256
        resp = self._send(Command(cla, ins, p1, p2, data, le if le else None))
        out = resp.data
        while resp.sw1 == 0x61:
            if len(out) > MAX_ANSWER:  # a card (or reader) that never stops answering
                raise DecodeError(f"{what}: the card's answer runs past {MAX_ANSWER} bytes")
            resp = self._send(Command(0x00, INS_GET_RESPONSE, 0, 0, b"", resp.sw2 or 256))
            out += resp.data
        if not resp.ok:
            raise self._error(resp.sw, what)
        return out

    @staticmethod
    def _error(sw: int, what: str) -> CardError:
        if sw & 0xFFF0 == 0x63C0:
            return WrongPin(sw, what)
        if sw == SW.AUTH_BLOCKED:
            return CardLocked(sw, what)
        return CardError(sw, what)

    def select(self) -> None:
        self.command(0x00, INS_SELECT, 0x04, 0x00, AID, le=0, what="SELECT")

    def info(self) -> CardInfo:
        rd = Reader(
            self.command(0x80, INS_GET_DATA, DO_INFO >> 8, DO_INFO & 0xFF, what="GET DATA info"),
            "card info",
        )
        out = CardInfo(
            rd.u8("phase"),
            rd.text("card"),
            rd.text("suite"),
            rd.text("group") or None,
            rd.text("currency"),
            rd.text("mode"),
            rd.text("bank"),
            rd.text("group params", max_len=2048),
        )
        rd.finish()
        return out

    def cert(self) -> bytes:
        return self.command(
            0x80, INS_GET_DATA, DO_CERT >> 8, DO_CERT & 0xFF, what="GET DATA CARD-CERT"
        )

    def status(self) -> CardStatus:
        rd = Reader(
            self.command(
                0x80, INS_GET_DATA, DO_STATUS >> 8, DO_STATUS & 0xFF, what="GET DATA status"
            ),
            "card status",
        )
        out = CardStatus(
            rd.u64("balance"),
            rd.u64("seq"),
            rd.u64("next ser"),
            rd.u8("tries"),
            bool(rd.u8("pending")),
        )
        rd.finish()
        return out

    def read_payment(self, request: bytes) -> tuple[bytes, PayResponse]:
        """GET DATA 0105: a payment the card keeps, asked for by its payee's signed
        ``request`` (:func:`payment_read`); 6A88 if the card keeps no such payment."""
        return payment_from_last(
            self.command(
                0x80,
                INS_GET_DATA,
                DO_LAST_PAYMENT >> 8,
                DO_LAST_PAYMENT & 0xFF,
                request,
                what="GET DATA payment",
            )
        )

    def pending_withdrawal(self) -> bytes:
        return self.command(
            0x80, INS_GET_DATA, DO_PENDING >> 8, DO_PENDING & 0xFF, what="GET DATA pending"
        )

    def verify_pin(self, pin: str) -> None:
        self.command(0x00, INS_VERIFY, 0x00, 0x80, pin.encode("ascii"), le=0, what="VERIFY")

    def pay(self, body: PayCommand) -> PayResponse:
        return PayResponse.decode(self.command(0x80, INS_PAY, 0, 0, body.encode(), what="PAY"))

    def withdraw_request(
        self, amount: int, renew: bool, auth: AuthKind, up_to: bool = False
    ) -> bytes:
        """WITHDRAW REQUEST: the card's signed request (pending on it until answered);
        ``up_to`` asks a credit card's restore of at most ``amount``."""
        data = Writer().u64(amount).u8(withdraw_flags(renew, up_to)).finish()
        return self.command(0x80, INS_WITHDRAW_REQ, int(auth), 0, data, what="WITHDRAW REQUEST")

    def withdraw_complete(self, ack: bytes) -> tuple[int, int]:
        """Hand the card the bank's acknowledgement; the card's new (balance, seq)."""
        return self._withdraw_done(0, ack, "WITHDRAW COMPLETE")

    def withdraw_refused(self, refusal: bytes) -> tuple[int, int]:
        """Hand the card the bank's signed refusal: it drops its pending request."""
        return self._withdraw_done(1, refusal, "WITHDRAW REFUSED")

    def _withdraw_done(self, p1: int, answer: bytes, what: str) -> tuple[int, int]:
        rd = Reader(
            self.command(0x80, INS_WITHDRAW_DONE, p1, 0, answer, what=what), "withdrawal result"
        )
        out = rd.u64("balance"), rd.u64("seq")
        rd.finish()
        return out

    def get_challenge(self) -> bytes:
        """GET CHALLENGE: the card's 8 random bytes, which the next command that needs
        one (RESET RETRY COUNTER, GET DATA 0105) must cover."""
        out = self.command(0x00, INS_CHALLENGE, 0, 0, le=8, what="GET CHALLENGE")
        if len(out) != 8:
            raise DecodeError(f"GET CHALLENGE: the card answered {len(out)} bytes, not 8")
        return out

    def reset_retry_counter(self, new_pin: str, tag: bytes) -> None:
        data = Writer().text(new_pin).raw(tag).finish()
        self.command(0x00, INS_RESET_RETRY, 0, 0, data, le=0, what="RESET RETRY COUNTER")


# --------------------------------------------------------------------------------------
# the terminal
# --------------------------------------------------------------------------------------


class PaymentDeclined(Exception):
    """The payment did not happen. ``code`` is stable; ``str()`` says why to a person."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class EarlierPaymentRecovered(PaymentDeclined):
    """The payment asked for was not made: the card had made this terminal's previous
    payment, whose answer was lost, and that one is now taken (``payment``). Whether to
    pay again is the merchant's and the holder's call, never the terminal's."""

    def __init__(self, payment: TakenPayment) -> None:
        super().__init__(
            "earlier_payment_recovered",
            f"the card had made the earlier payment here of "
            f"{format_amount(payment.amount, payment.currency)} {payment.currency} (ser "
            f"{payment.ser}) whose answer was lost; it is recovered and kept for deposit. "
            "No new payment was made: pay again if this is another purchase",
        )
        self.payment = payment


@dataclass(frozen=True, slots=True)
class TakenPayment:
    """A verified payment the terminal holds until deposit (FIG. 8 step 570)."""

    card_number: str
    card_cert: bytes
    cert_id: bytes
    suite: str
    joint_key: bytes
    ser: int
    spec: bytes
    b: bytes
    r: bytes
    hint: bytes
    """``a' = g^r · Y^b`` as the terminal computed it: an untrusted hint for the bank."""
    amount: int
    currency: str
    time: int
    txn: int


@dataclass(frozen=True, slots=True)
class InFlight:
    """A PAY sent to a card whose answer has not come back (yet): the payment it asks
    for is the card's ``ser``, under the CARD-CERT ``card_cert`` it was read with."""

    card_number: str
    txn: int
    ser: int
    card_cert: bytes
    spec: bytes = b""
    """The spec the PAY asks the card to sign (empty if noted before stores kept it):
    the payment read back must be that very one, amount and all."""


class TerminalStore(Protocol):
    """The merchant's own store of taken payments (not the bank's database)."""

    def has_payment(self, card_number: str, ser: int) -> bool: ...
    def add_payment(self, payment: TakenPayment) -> None:
        """Also ends the card's :class:`InFlight` PAY of the same ``txn``, atomically."""

    def next_txn(self) -> int: ...
    def begin_pay(self, flight: InFlight) -> None: ...
    def in_flight(self, card_number: str) -> InFlight | None: ...
    def end_pay(self, card_number: str) -> None: ...


@dataclass(frozen=True)
class TerminalConfig:
    bank_id: str
    sid: str
    merchant_cert: bytes
    signing_key: SigningKey
    bank_keys: dict[str, VerifyKey]
    """Every bank key the terminal trusts for CARD-CERTs, by bank id."""
    hotlist: frozenset[str] = frozenset()
    """Card numbers on the hot list as last synchronised from the bank."""
    groups: GroupResolver = get_group
    """How CARD-CERTs' groups are found: the shipped ones and the banks' own."""
    bank_cert: bytes = b""
    """Our bank's BANK-CERT (scheme members only): sent to other banks' cards, which
    check it against the scheme's root key before they trust our MERCHANT-CERT."""
    registrations: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    """(S_id, MERCHANT-CERT) at each other bank we hold an account with, by bank id: a
    card of such a bank pays us there, as if we were one of its own merchants."""

    def payee(self, card_bank: str) -> tuple[str, str, bytes]:
        """(bank id, S_id, MERCHANT-CERT) that a card of ``card_bank`` pays."""
        reg = self.registrations.get(card_bank)
        if reg is not None and card_bank != self.bank_id:
            return card_bank, reg[0], reg[1]
        return self.bank_id, self.sid, self.merchant_cert

    def is_ours(self, bank_id: str, sid: str) -> bool:
        """Whether a spec's payee is one of our accounts."""
        if bank_id == self.bank_id:
            return sid == self.sid
        reg = self.registrations.get(bank_id)
        return reg is not None and reg[0] == sid


PinSource = Callable[[], str]


@dataclass(frozen=True, slots=True)
class OnlineAnswer:
    """The bank's on-line clearance of one payment (FIG. 8, optional)."""

    approved: bool
    reason: str | None = None
    topup: int = 0
    """For a credit card: how far the bank would restore its C_balance now."""


@dataclass(frozen=True, slots=True)
class Clearance:
    """What FIG. 8's on-line clearance did for one payment: ``status`` is
    ``not_asked`` (offline: at or below the floor limit and not sampled, or no on-line
    policy), ``approved`` (the bank cleared it; ``answer`` says how),
    ``unreachable`` (asked, the bank could not be reached, and the payment, at or
    below the floor limit, went on offline) or ``unanswered`` (asked, the bank
    would not answer about the card, :data:`UNANSWERED`, and the payment, at or below
    the floor limit, went on offline)."""

    status: Literal["not_asked", "approved", "unreachable", "unanswered"]
    answer: OnlineAnswer | None = None


NOT_ASKED: Final = Clearance("not_asked")
UNANSWERED: Final = frozenset({"too_many_checks"})
"""Refusals that say nothing about the card: the bank declined to answer (this
terminal's merchant asked about the card too often). Like an unreachable bank they
decline a payment above the floor limit, which the bank must clear, and let one at or
below it, asked only by sample or by ``always``, go on offline."""


class OnlineUnavailable(Exception):
    """The bank could not be asked (network down, bank down)."""


class OnlineRefused(Exception):
    """The bank refused a request the terminal carried for the card; ``proof`` is the
    bank's signed refusal, for the card to drop its pending request."""

    def __init__(self, code: str, message: str, proof: bytes | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.proof = proof


@dataclass(frozen=True, slots=True)
class OnlinePolicy:
    """When a terminal asks the bank before a payment (FIG. 8's on-line clearance).

    Above ``floor_limit`` (minor units) always; at or below it, for a random
    ``sample`` of payments (0.1 = one in ten). An unreachable bank declines a
    payment above the floor limit, and lets a sampled one below it go on offline.
    """

    check: Callable[[str, int], OnlineAnswer]
    floor_limit: int | None = None
    sample: float = 0.0
    draw: Callable[[], float] = field(default=secrets.SystemRandom().random)
    always: bool = False
    """Ask for every payment (the default for credit cards); an unreachable bank then
    declines payments above the floor limit and lets the others go on offline."""
    restore: Callable[[bytes], bytes] | None = None
    """Carry a credit card's FIG. 10 request to the bank and return its answer, so that
    a card whose usable limit is too low is restored during the payment."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample <= 1.0:
            raise ValueError("the online sample is a fraction between 0 and 1")
        if self.floor_limit is not None and self.floor_limit < 0:
            raise ValueError("the floor limit cannot be negative")

    def clear(self, card_number: str, amount: int) -> Clearance:
        """Ask the bank if this payment must be cleared; raise :class:`PaymentDeclined`
        if it declines, or cannot be reached for a payment above the floor limit."""
        floor = self.floor_limit if self.floor_limit is not None else (0 if self.always else None)
        above = floor is not None and amount > floor
        if not above and not self.always and not (self.sample and self.draw() < self.sample):
            return NOT_ASKED
        try:
            answer = self.check(card_number, amount)
        except OnlineUnavailable as exc:
            if above:
                raise PaymentDeclined(
                    "bank_unreachable",
                    f"above the floor limit the bank must clear the payment: {exc}",
                ) from exc
            return Clearance("unreachable")
        if not answer.approved and not above and answer.reason in UNANSWERED:
            return Clearance("unanswered", answer)
        if not answer.approved:
            raise PaymentDeclined(
                "online_declined",
                f"the bank declined the payment on-line ({answer.reason or 'no reason given'})",
            )
        return Clearance("approved", answer)


class Terminal:
    """FIG. 8 on the service provider's side."""

    def __init__(
        self, config: TerminalConfig, store: TerminalStore, online: OnlinePolicy | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.online = online
        self.clearance = NOT_ASKED
        """What the on-line clearance did for the latest :meth:`pay`."""

    def read_card(self, client: CardClient, now: int, *, hotlist: bool = True) -> CardCert:
        """Steps 400-420: select the card, read its CARD-CERT and check it; with
        ``hotlist``, refuse a card on the hot list (:meth:`check_hotlist`)."""
        with card_declines():
            client.select()
            encoded = client.cert()
        cert = self._check_cert(encoded, now)
        if hotlist:
            self.check_hotlist(cert)
        return cert

    def _check_cert(self, encoded: bytes, now: int) -> CardCert:
        """A CARD-CERT checked under its bank's key, valid at ``now``."""
        try:
            cert = CardCert.decode(encoded, self.config.groups)
        except CryptoError as exc:
            raise PaymentDeclined(
                "bad_cert", f"the card's certificate is malformed: {exc}"
            ) from exc
        bank_key = self.config.bank_keys.get(cert.bank_id)
        if bank_key is None:
            raise PaymentDeclined(
                "unknown_bank", f"cards of bank {cert.bank_id!r} are not accepted"
            )
        try:
            cert.verify(bank_key, at=now)
        except ExpiredCertificateError as exc:
            raise PaymentDeclined("expired", str(exc)) from exc
        except CryptoError as exc:
            raise PaymentDeclined("bad_cert", str(exc)) from exc
        return cert

    def check_hotlist(self, cert: CardCert) -> None:
        """Refuse a card on the hot list as last synchronised."""
        if cert.card_number in self.config.hotlist:
            raise PaymentDeclined("blacklisted", f"card {cert.card_number} is on the hot list")

    def pay(
        self,
        client: CardClient,
        amount: int,
        pin: PinSource,
        now: int,
        *,
        service: str = "",
        details: bytes = b"",
        card: CardCert | None = None,
        conversion: Conversion | None = None,
    ) -> TakenPayment:
        """One offline payment, steps 400-570. Raises :class:`PaymentDeclined`.

        With ``conversion`` the price was set in another currency: ``amount`` must be
        its conversion at the stated rate (:func:`~jointpay.domain.money.convert`),
        and the spec carries both, for the bank to check against its rate table.

        ``card`` is the CARD-CERT :meth:`read_card` returned in this same session
        (a terminal reads the card before the amount is keyed in); without it the
        card is read here. After SELECT a payment takes four command APDUs: GET DATA
        CARD-CERT, GET DATA status, VERIFY, PAY.
        """
        self.clearance = NOT_ASKED
        if not 0 < amount < 1 << 63:
            raise PaymentDeclined("bad_amount", "the amount must be positive")
        with card_declines():
            cert = card if card is not None else self.read_card(client, now, hotlist=False)
            flight = self.store.in_flight(cert.card_number)
            if flight is not None:  # our last PAY to this card went unanswered
                # even if the card was hot-listed since: the bank honours a payment
                # made before its listing
                earlier = self._recover_flight(client, flight)
                if earlier is not None:
                    raise EarlierPaymentRecovered(earlier)
            self.check_hotlist(cert)
            return self._pay(client, amount, pin, now, service, details, cert, conversion)

    def _pay(
        self,
        client: CardClient,
        amount: int,
        pin: PinSource,
        now: int,
        service: str,
        details: bytes,
        cert: CardCert,
        conversion: Conversion | None = None,
    ) -> TakenPayment:
        if conversion is not None and (
            conversion.orig_currency == cert.currency
            or amount
            != convert(
                conversion.orig_amount,
                conversion.orig_currency,
                conversion.rate_micro,
                cert.currency,
            )
        ):
            raise PaymentDeclined(
                "bad_conversion",
                "the amount is not the original amount converted to the card's currency",
            )
        if cert.max_amount and amount > cert.max_amount:
            raise PaymentDeclined("over_limit", "the amount is above the card's per-payment limit")
        status = client.status()
        if status.locked:
            raise PaymentDeclined("locked", "the card is locked (too many wrong PINs)")
        if status.withdrawal_pending:  # the card pays nothing until it is completed
            status, cert = self._finish_pending(client, cert, now)
        short = cert.mode.value != "cheque" and status.balance < amount
        restorable = cert.mode.value == "credit" and self.online is not None and self.online.restore
        if short and not restorable:
            raise PaymentDeclined(
                "insufficient_balance", "the card's balance does not cover the amount"
            )
        self.clearance = self.online.clear(cert.card_number, amount) if self.online else NOT_ASKED
        answer = self.clearance.answer
        if short:  # a credit card: the bank restores its usable limit first (FIG. 10)
            if answer is None or status.balance + answer.topup < amount:
                raise PaymentDeclined(
                    "insufficient_balance",
                    "the card's credit line does not cover the amount, even restored",
                )
            known = pin()
            pin = lambda: known  # noqa: E731 - the holder is asked once
            client.verify_pin(known)
            # the spec names the CARD-CERT the card holds: the one an acknowledgement
            # renewed, if it did (the card refuses a spec for its old one, 6984)
            cert = self._renewed(cert, self._restore_credit(client, answer.topup), now)
        payee_bank, sid, merchant_cert = self.config.payee(cert.bank_id)
        spec = PaymentSpec(
            payee_bank,
            sid,
            amount,
            cert.currency,
            now,
            self.store.next_txn(),
            cert.cert_id,
            service,
            details,
            conversion,
        )
        spec_bytes = spec.encode()
        sig = self.config.signing_key.sign(TERMINAL_SPEC_TAG, spec_bytes)
        client.verify_pin(pin())  # steps 450-490
        foreign = cert.bank_id != payee_bank  # the card checks our bank's BANK-CERT
        command = PayCommand(
            merchant_cert, spec_bytes, sig, self.config.bank_cert if foreign else b""
        )
        # noted before it is sent: if its answer is lost, the card may have paid
        self.store.begin_pay(
            InFlight(cert.card_number, spec.txn, status.next_ser, cert.encode(), spec_bytes)
        )
        try:
            resp = client.pay(command)
        except CardMute:
            raise  # it may have paid: the card's next reading here finds out
        except CardError:
            self.store.end_pay(cert.card_number)  # its status word says it did not pay
            raise
        try:
            return self._accept(cert, spec, spec_bytes, resp)  # ends the PAY in flight
        except PaymentDeclined:
            self.store.end_pay(cert.card_number)  # a signature that does not verify
            raise

    def _finish_pending(
        self, client: CardClient, cert: CardCert, now: int
    ) -> tuple[CardStatus, CardCert]:
        """A withdrawal whose answer was lost is still pending on the card, which pays
        nothing until it is completed. A credit card's restore (:meth:`_restore_credit`,
        or the holder's own) is carried to the bank again, unchanged: the bank answers
        a request it already applied with the same acknowledgement. Any other card's
        holder completes it at the bank (``jointpay withdraw``). Returns the card's
        status and the CARD-CERT it holds then (renewed, if the acknowledgement did)."""
        restore = self.online.restore if self.online is not None else None
        if cert.mode.value != "credit" or restore is None:
            raise PaymentDeclined(
                "withdrawal_pending",
                "a withdrawal is pending on the card since its answer was lost: its holder "
                "completes it (jointpay withdraw, unchanged; card show gives its amount) "
                "before the card pays again",
            )
        try:
            renewed = self._carry_restore(client, client.pending_withdrawal())
        except PaymentDeclined:
            status = client.status()
            if status.withdrawal_pending:
                raise
            # the bank's signed refusal of the pending request (its first answer, lost
            # on the way, say a holder's --amount max with no credit to restore): the
            # card dropped the request, and the payment goes on with what it holds
            return status, cert
        return client.status(), self._renewed(cert, renewed, now)

    def _renewed(self, cert: CardCert, renewed: bytes, now: int) -> CardCert:
        """The CARD-CERT the card holds after a restore: ``renewed`` (the one the
        acknowledgement carried, checked as :meth:`read_card` checks), or ``cert``."""
        return self._check_cert(renewed, now) if renewed else cert

    def _restore_credit(self, client: CardClient, topup: int) -> bytes:
        """Carry the card's FIG. 10 request to the bank and its answer back; no money
        moves (the bank raises the credit card's C_balance within its limit). Returns
        the renewed CARD-CERT the card took with it, or b""."""
        return self._carry_restore(
            client, client.withdraw_request(topup, False, AuthKind.SIGNATURE)
        )

    def _carry_restore(self, client: CardClient, request: bytes) -> bytes:
        """One FIG. 10 request to the bank (on-line) and its answer to the card; the
        renewed CARD-CERT the acknowledgement gave the card, or b""."""
        if self.online is None or self.online.restore is None:  # pragma: no cover
            raise PaymentDeclined("insufficient_balance", "no bank to restore the credit line")
        try:
            ack = self.online.restore(request)
        except OnlineRefused as exc:
            if exc.proof:
                with contextlib.suppress(CardError, DecodeError):
                    client.withdraw_refused(exc.proof)
            raise PaymentDeclined(
                "online_declined", f"the bank did not restore the credit line: {exc}"
            ) from exc
        except OnlineUnavailable as exc:
            raise PaymentDeclined(
                "bank_unreachable",
                f"the credit line's restore got no answer ({exc}); the card keeps its "
                "request, and its next payment on-line (or jointpay withdraw) completes it",
            ) from exc
        client.withdraw_complete(ack)
        return WithdrawAck.decode(ack).new_cert  # the card took it: it decodes

    def recover(self, client: CardClient, now: int) -> TakenPayment | None:
        """After a torn PAY: read the card's payment to us back; keep it if we lack it.

        The PAY this terminal noted in flight for the card (:meth:`pay` notes each
        before sending it) is recovered with the CARD-CERT it was made under, which a
        renewal may have replaced on the card since. Without such a note, the card's
        latest payment to us, if we do not hold it, is taken if it names the card's
        present CARD-CERT (the bank refuses any other as ``bad_cert``)."""
        cert = self.read_card(client, now, hotlist=False)  # the bank judges the listing
        with card_declines():
            flight = self.store.in_flight(cert.card_number)
            if flight is not None:
                return self._recover_flight(client, flight)
            last = self._read_back(client, cert, LATEST)
        if last is None:
            return None
        spec, spec_bytes, resp = last
        if (
            not self.config.is_ours(spec.bank_id, spec.sid)
            or spec.card_cert_id != cert.cert_id
            or self.store.has_payment(cert.card_number, resp.ser)
        ):
            return None
        return self._accept(cert, spec, spec_bytes, resp)

    def _recover_flight(self, client: CardClient, flight: InFlight) -> TakenPayment | None:
        """The payment of a PAY in flight if the card made it (its payment of the ser
        it was at is that very one: our ``txn``), else None; either way the PAY is no
        longer in flight. The card keeps its last few payments: should it have paid
        more often than that elsewhere since, ours can no longer be read back."""
        try:
            cert = CardCert.decode(flight.card_cert, self.config.groups)
        except CryptoError:  # pragma: no cover - we decoded these bytes to pay
            self.store.end_pay(flight.card_number)
            return None
        try:  # the bank the PAY made the payment out to, by its own spec
            payee = PaymentSpec.decode(flight.spec).bank_id if flight.spec else None
        except DecodeError:  # a note that is no spec: read back as the card pays today
            payee = None
        last = self._read_back(client, cert, flight.ser, payee)
        if last is not None:
            spec, spec_bytes, resp = last
            if (
                resp.ser == flight.ser
                and spec.txn == flight.txn
                and (not flight.spec or spec_bytes == flight.spec)
                and self.config.is_ours(spec.bank_id, spec.sid)
                and not self.store.has_payment(flight.card_number, resp.ser)
                and spec.card_cert_id == cert.cert_id
            ):
                try:
                    return self._accept(cert, spec, spec_bytes, resp)  # ends the flight
                except PaymentDeclined:
                    pass  # a signature that does not verify is no payment to keep
        self.store.end_pay(flight.card_number)
        return None

    def _read_back(
        self, client: CardClient, cert: CardCert, ser: int, payee_bank: str | None = None
    ) -> tuple[PaymentSpec, bytes, PayResponse] | None:
        """The card's payment of ``ser`` to us (:data:`LATEST`: its latest to us), read
        back with our signed request (GET DATA 0105); None if it keeps none such.

        ``payee_bank``: the bank the payment was made out to (the PAY's spec says),
        whose MERCHANT-CERT asks for it; by default the one the card pays today (a
        registration with the card's bank since the PAY changes that)."""
        if payee_bank is None:
            payee_bank, _, merchant_cert = self.config.payee(cert.bank_id)
        elif payee_bank == self.config.bank_id:
            merchant_cert = self.config.merchant_cert
        elif payee_bank in self.config.registrations:
            merchant_cert = self.config.registrations[payee_bank][1]
        else:
            return None  # made out to a bank we no longer hold an account with
        foreign = cert.bank_id != payee_bank
        try:
            request = payment_read(
                cert.card_number,
                ser,
                client.get_challenge(),  # the request is good once, on this card
                merchant_cert,
                self.config.bank_cert if foreign else b"",
                self.config.signing_key,
            )
            spec_bytes, resp = client.read_payment(request)
        except CardMute:
            raise
        except CardError as exc:
            if exc.sw == SW.DATA_NOT_FOUND:
                return None  # the card keeps no such payment to us
            # our request refused: whether the card paid is unknown, so the PAY stays
            # in flight, and this card pays here again only once that is settled
            raise PaymentDeclined(
                "recovery_failed",
                f"the card would not read back its payment of ser {ser} to us ({exc})",
            ) from exc
        return PaymentSpec.decode(spec_bytes), spec_bytes, resp

    def _accept(
        self, cert: CardCert, spec: PaymentSpec, spec_bytes: bytes, resp: PayResponse
    ) -> TakenPayment:
        group = cert.group
        try:  # step 540: verify the joint signature
            pc = PaymentCert.parse(group, resp.ser, spec_bytes, resp.b, resp.r)
            hint = verify(group, cert.joint_key, pc)
        except CryptoError as exc:
            raise PaymentDeclined(
                "bad_signature", f"the PAYMENT-CERT does not verify: {exc}"
            ) from exc
        if self.store.has_payment(cert.card_number, resp.ser):
            raise PaymentDeclined("duplicate", f"payment {resp.ser} of this card was taken before")
        taken = TakenPayment(
            cert.card_number,
            cert.encode(),
            cert.cert_id,
            cert.suite,
            cert.joint_key.encoded,
            resp.ser,
            spec_bytes,
            resp.b,
            resp.r,
            group.hint_of(hint),
            spec.amount,
            spec.currency,
            spec.time,
            spec.txn,
        )
        self.store.add_payment(taken)
        return taken


@contextmanager
def card_declines() -> Iterator[None]:
    """Turn what the card says (or fails to say) into :class:`PaymentDeclined`."""
    try:
        yield
    except CardMute as exc:
        raise PaymentDeclined(
            "card_removed",
            f"{exc}; if the card paid, presenting it to this terminal again recovers the payment",
        ) from exc
    except (WrongPin, CardLocked) as exc:
        raise PaymentDeclined(*pin_refusal(exc)) from exc
    except CardError as exc:
        raise PaymentDeclined(_decline_code(exc.sw), f"the card refused: {exc}") from exc
    except DecodeError as exc:  # a 9000 with data that is not what the command returns
        raise PaymentDeclined("card_error", f"the card's answer is malformed: {exc}") from exc


def _decline_code(sw: int) -> str:
    codes: dict[int, str] = {
        SW.CONDITIONS: "refused",
        SW.SECURITY_STATUS: "not_authorised",
        SW.DATA_INVALID: "refused",
    }
    return codes.get(sw, "card_error")


def verify_taken(payments: Iterable[TakenPayment], groups: GroupResolver = get_group) -> None:
    """Re-verify stored payments (used by tests and by ``merchant export --check``)."""
    for p in payments:
        cert = CardCert.decode(p.card_cert, groups)
        group = cert.group
        verify(group, cert.joint_key, PaymentCert.parse(group, p.ser, p.spec, p.b, p.r))
