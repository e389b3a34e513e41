"""Messages between the parties, with their canonical bytes and domain tags.

* terminal → card: the PAY command body (MERCHANT-CERT, spec, terminal signature);
* card → bank: the withdrawal request (FIG. 10 step 870) and bank → card: its
  acknowledgement (step 910), which is authenticated over *different* content under a
  different tag so that neither can be replayed as the other;
* bank → card: the unblock command (PIN reset through the card's master key).

Deposit messages (FIG. 9) are in :mod:`jointpay.protocol.deposit`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from jointpay.crypto.certs import SigningKey, check_card_number, check_ident
from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import DecodeError

TERMINAL_SPEC_TAG: Final = b"jointpay/v1/terminal-spec"
WITHDRAW_REQUEST_TAG: Final = b"jointpay/v1/withdraw-request"
WITHDRAW_ACK_TAG: Final = b"jointpay/v1/withdraw-ack"
WITHDRAW_REFUSAL_TAG: Final = b"jointpay/v1/withdraw-refusal"
REFUSAL_MAGIC: Final = b"JWR1"
UNBLOCK_TAG: Final = b"jointpay/v1/unblock"
PAYMENT_READ_TAG: Final = b"jointpay/v1/payment-read"
LATEST: Final = (1 << 64) - 1
"""The ser of a payment read that asks for the card's latest payment to the reader."""
MAX_CERT: Final = 8192


@dataclass(frozen=True, slots=True)
class PayCommand:
    """PAY command data: what the terminal asks the card to sign (FIG. 8 step 470)."""

    merchant_cert: bytes
    spec: bytes
    terminal_sig: bytes
    bank_cert: bytes = b""
    """The merchant's bank's BANK-CERT when the card is another bank's (empty otherwise):
    the card checks it against the scheme key, then the MERCHANT-CERT against it."""

    def encode(self) -> bytes:
        return (
            Writer()
            .blob(self.merchant_cert)
            .blob(self.spec)
            .blob(self.terminal_sig)
            .blob(self.bank_cert)
            .finish()
        )

    @classmethod
    def decode(cls, data: bytes) -> PayCommand:
        rd = Reader(data, "PAY command")
        cert = rd.blob("merchant cert", max_len=MAX_CERT)
        spec = rd.blob("spec", max_len=4096)
        sig = rd.blob("terminal signature", max_len=64)
        bank_cert = rd.blob("bank cert", max_len=MAX_CERT)
        rd.finish()
        return cls(cert, spec, sig, bank_cert)


@dataclass(frozen=True, slots=True)
class PayResponse:
    """PAY response: the PAYMENT-CERT's ser, b and r (spec the terminal already has)."""

    ser: int
    b: bytes
    r: bytes

    def encode(self) -> bytes:
        return Writer().u64(self.ser).raw(self.b).raw(self.r).finish()

    @classmethod
    def decode(cls, data: bytes) -> PayResponse:
        rd = Reader(data, "PAY response")
        out = cls(rd.u64("ser"), rd.raw(32, "b"), rd.raw(32, "r"))
        rd.finish()
        return out


class AuthKind(IntEnum):
    """How a withdrawal request is authenticated (FIG. 10: signature, or keyed hash)."""

    SIGNATURE = 1
    """Schnorr signature under the card's joint key (the patent's preferred form)."""
    MAC = 2
    """HMAC-SHA256 under the card's master key shared with the bank."""


RENEW: Final = 0x01
"""Withdrawal request flag: renew the CARD-CERT too."""
UP_TO: Final = 0x02
"""Withdrawal request flag: a credit restore of up to the amount (the bank grants what
it can); only for credit cards."""


def withdraw_flags(renew: bool, up_to: bool) -> int:
    """The flags byte of a withdrawal request (and of WITHDRAW REQUEST's data)."""
    return (RENEW if renew else 0) | (UP_TO if up_to else 0)


@dataclass(frozen=True, slots=True)
class WithdrawRequest:
    """FIG. 10 step 870: the card's authenticated withdrawal request."""

    bank_id: str
    card_number: str
    cert_id: bytes
    seq: int
    balance: int
    amount: int
    renew: bool
    auth_kind: AuthKind
    auth: bytes = b""
    up_to: bool = False
    """A credit card's restore of *up to* ``amount``: the bank grants what its limit
    allows now, and its acknowledgement names the amount granted."""

    def tbs(self) -> bytes:
        return (
            Writer()
            .text(self.bank_id)
            .text(self.card_number)
            .raw(self.cert_id)
            .u64(self.seq)
            .u64(self.balance)
            .u64(self.amount)
            .u8(withdraw_flags(self.renew, self.up_to))
            .u8(int(self.auth_kind))
            .finish()
        )

    def encode(self) -> bytes:
        return self.tbs() + Writer().blob(self.auth).finish()

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.encode()).digest()

    @classmethod
    def decode(cls, data: bytes) -> WithdrawRequest:
        rd = Reader(data, "withdrawal request")
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        card = check_card_number(rd.text("card number", max_len=19))
        cert_id = rd.raw(16, "cert id")
        seq, balance, amount = rd.u64("seq"), rd.u64("balance"), rd.u64("amount")
        flags = rd.u8("flags")
        kind = rd.u8("auth kind")
        auth = rd.blob("auth", max_len=64)
        rd.finish()
        if flags & ~(RENEW | UP_TO):
            raise DecodeError(f"withdrawal request: unknown flags {flags:#04x}")
        try:
            auth_kind = AuthKind(kind)
        except ValueError as exc:
            raise DecodeError(f"withdrawal request: unknown auth kind {kind}") from exc
        if seq == 0:
            raise DecodeError("withdrawal request: seq starts at 1")
        return cls(
            bank_id,
            card,
            cert_id,
            seq,
            balance,
            amount,
            bool(flags & RENEW),
            auth_kind,
            auth,
            bool(flags & UP_TO),
        )


@dataclass(frozen=True, slots=True)
class WithdrawAck:
    """FIG. 10 step 910: the bank's acknowledgement, MAC'd under the master key.

    It names the request it answers (by digest), so it cannot be applied to another
    one, and optionally carries a renewed CARD-CERT.
    """

    card_number: str
    seq: int
    amount: int
    request_digest: bytes
    new_cert: bytes
    mac: bytes = b""

    def tbs(self) -> bytes:
        return (
            Writer()
            .text(self.card_number)
            .u64(self.seq)
            .u64(self.amount)
            .raw(self.request_digest)
            .blob(self.new_cert)
            .finish()
        )

    def encode(self) -> bytes:
        return self.tbs() + Writer().blob(self.mac).finish()

    @classmethod
    def decode(cls, data: bytes) -> WithdrawAck:
        rd = Reader(data, "withdrawal acknowledgement")
        card = check_card_number(rd.text("card number", max_len=19))
        seq, amount = rd.u64("seq"), rd.u64("amount")
        digest = rd.raw(32, "request digest")
        cert = rd.blob("new cert", max_len=MAX_CERT)
        mac = rd.blob("mac", max_len=32)
        rd.finish()
        return cls(card, seq, amount, digest, cert, mac)


@dataclass(frozen=True, slots=True)
class WithdrawRefusal:
    """The bank's authenticated *no* to one withdrawal request (FIG. 10, step 880).

    MAC'd under the card's master key with its own tag, so it can never pass for an
    acknowledgement. The bank records it against (card, seq) before sending it, so the
    refused request can never be applied later; the card, on verifying it, drops its
    pending request and moves to the next seq. Without it a refused request would stay
    pending on the card for ever (the card cannot tell a refusal from a lost answer).
    """

    card_number: str
    seq: int
    request_digest: bytes
    reason: str
    mac: bytes = b""

    def tbs(self) -> bytes:
        return (
            Writer()
            .raw(REFUSAL_MAGIC)
            .text(self.card_number)
            .u64(self.seq)
            .raw(self.request_digest)
            .text(self.reason)
            .finish()
        )

    def encode(self) -> bytes:
        return self.tbs() + Writer().blob(self.mac).finish()

    @staticmethod
    def is_refusal(data: bytes) -> bool:
        return data[:4] == REFUSAL_MAGIC

    @classmethod
    def decode(cls, data: bytes) -> WithdrawRefusal:
        rd = Reader(data, "withdrawal refusal")
        if rd.raw(4, "magic") != REFUSAL_MAGIC:
            raise DecodeError("withdrawal refusal: bad magic")
        card = check_card_number(rd.text("card number", max_len=19))
        seq = rd.u64("seq")
        digest = rd.raw(32, "request digest")
        reason = rd.text("reason", max_len=64)
        mac = rd.blob("mac", max_len=32)
        rd.finish()
        return cls(card, seq, digest, reason, mac)


def payment_read(
    card_number: str,
    ser: int,
    challenge: bytes,
    merchant_cert: bytes,
    bank_cert: bytes,
    key: SigningKey,
) -> bytes:
    """GET DATA 0105's data: a payee's request to read back the card's payment of
    ``ser`` (:data:`LATEST`: its latest to this payee), signed with the payee's key
    under ``jointpay/v1/payment-read`` over ``LP(card_number) u64 ser challenge(8)``,
    where ``challenge`` is the card's answer to the GET CHALLENGE just before (the
    request is good once, on that card, in that session); ``bank_cert`` is our bank's
    BANK-CERT for another scheme bank's card, else empty."""
    sig = key.sign(PAYMENT_READ_TAG, payment_read_message(card_number, ser, challenge))
    return Writer().u64(ser).blob(merchant_cert).blob(bank_cert).blob(sig).finish()


def payment_read_message(card_number: str, ser: int, challenge: bytes) -> bytes:
    if len(challenge) != 8:
        raise ValueError("a card's challenge is 8 bytes")
    return Writer().text(card_number).u64(ser).raw(challenge).finish()


def unblock_message(card_number: str, challenge: bytes, new_pin: str) -> bytes:
    """What the bank MACs to reset a locked card's PIN (bound to the card's challenge)."""
    return Writer().text(card_number).raw(challenge).text(new_pin).finish()
