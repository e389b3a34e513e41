"""The payment specification ``spec`` (FIG. 8 step 440) and its canonical bytes.

The card signs ``spec`` byte for byte (CONTRACT section 2), so its encoding must be
canonical: fixed field order, fixed-width integers, length-prefixed strings, no
optional padding. :meth:`PaymentSpec.decode` accepts exactly the bytes
:meth:`PaymentSpec.encode` produces.

Layout (``LP`` = 4-byte length prefix, integers big-endian)::

    "JPS1"                 magic and version
    LP(bank_id)            the bank the service provider deposits with
    LP(sid)                S_id of the service provider (the payee)
    u64 amount             in minor units of the card's currency
    LP(currency)           the card's currency (ISO 4217)
    u64 time               Unix seconds at the terminal
    u64 txn                the terminal's transaction number
    16  card_cert_id       the CARD-CERT this payment is made under
    LP(service)            kind of service ("" = general purchase)
    LP(details)            optional purchase details (<= 1 KiB)
    u8  has_conversion     0, or 1 followed by:
        u64 orig_amount    amount in the terminal's currency
        LP(orig_currency)
        u64 rate_micro     units of card currency per unit of orig currency, x 10^6
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Final, NamedTuple

from jointpay.crypto.certs import CERT_ID_LEN, check_currency, check_ident
from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import DecodeError

SPEC_MAGIC: Final = b"JPS1"
MAX_DETAILS: Final = 1024


@dataclass(frozen=True, slots=True)
class Conversion:
    """A payment priced in another currency, converted at a stated rate."""

    orig_amount: int
    orig_currency: str
    rate_micro: int


class PaymentSpec(NamedTuple):
    """A payment's specification. A named tuple (immutable, like the dataclasses
    elsewhere): a bank's deposit decodes one per payment in a worker and sends it to the
    parent process, and a frozen dataclass cost six times as much to build and
    five times as much to unpickle (its ``__setstate__`` sets each field by
    ``object.__setattr__``)."""

    bank_id: str
    sid: str
    amount: int
    currency: str
    time: int
    txn: int
    card_cert_id: bytes
    service: str = ""
    details: bytes = b""
    conversion: Conversion | None = None

    def encode(self) -> bytes:
        w = (
            Writer()
            .raw(SPEC_MAGIC)
            .text(self.bank_id)
            .text(self.sid)
            .u64(self.amount)
            .text(self.currency)
            .u64(self.time)
            .u64(self.txn)
            .raw(self.card_cert_id)
            .text(self.service)
            .blob(self.details)
        )
        if self.conversion is None:
            w.u8(0)
        else:
            c = self.conversion
            w.u8(1).u64(c.orig_amount).text(c.orig_currency).u64(c.rate_micro)
        return w.finish()

    @classmethod
    def decode(cls, data: bytes) -> PaymentSpec:
        """Parse canonical spec bytes; raise :class:`DecodeError` for anything else.

        Well-formed specs of the common shape take :func:`_decode_fast` (a bank's
        deposit decodes every payment's spec); anything it does not vouch for, valid
        or not, takes the field-by-field reader, which gives the specific error.
        """
        fast = _decode_fast(data) if type(data) is bytes else None
        return fast if fast is not None else cls._decode_reader(data)

    @classmethod
    def _decode_reader(cls, data: bytes) -> PaymentSpec:
        rd = Reader(data, "spec")
        if rd.raw(4, "magic") != SPEC_MAGIC:
            raise DecodeError("spec: not a jointpay v1 payment specification")
        bank_id = check_ident(rd.text("bank id", max_len=64), "bank id")
        sid = check_ident(rd.text("sid", max_len=64), "S_id")
        amount = rd.u64("amount")
        if amount == 0 or amount >= 1 << 63:
            raise DecodeError("spec: amount must be in [1, 2^63)")
        currency = check_currency(rd.text("currency", max_len=3))
        time, txn = rd.u64("time"), rd.u64("txn")
        cert_id = rd.raw(CERT_ID_LEN, "card cert id")
        service = rd.text("service", max_len=64)
        if service:
            check_ident(service, "service")
        details = rd.blob("details", max_len=MAX_DETAILS)
        flag = rd.u8("conversion flag")
        conversion = None
        if flag == 1:
            orig = rd.u64("original amount")
            orig_cur = check_currency(rd.text("original currency", max_len=3))
            rate = rd.u64("rate")
            if orig == 0 or rate == 0:
                raise DecodeError("spec: conversion amount and rate must be positive")
            conversion = Conversion(orig, orig_cur, rate)
        elif flag != 0:
            raise DecodeError(f"spec: conversion flag {flag} is not 0 or 1")
        rd.finish()
        return cls(bank_id, sid, amount, currency, time, txn, cert_id, service, details, conversion)


@functools.lru_cache(maxsize=512)
def _ident_or_none(raw: bytes, currency: bool = False) -> str | None:
    """``raw`` as an identifier (or a currency code), or None: the reader decides.

    Cached: a merchant's batch repeats the same few bank ids, S_ids and currencies."""
    try:
        s = raw.decode("ascii")
    except UnicodeDecodeError:
        return None
    if not s.isprintable():  # the reader's rule
        return None
    try:
        return check_currency(s) if currency else check_ident(s, "")
    except DecodeError:
        return None


def _decode_fast(data: bytes) -> PaymentSpec | None:
    """The spec in ``data`` if it has the common shape and every field is valid: ASCII
    identifiers, no conversion. None means "ask :meth:`PaymentSpec._decode_reader`"; it
    never accepts bytes the reader would reject (``tests/property`` checks both ways)."""
    n = len(data)
    if n < 4 or data[:4] != SPEC_MAGIC:
        return None
    pos = 4
    texts: list[str] = []
    for _ in range(2):  # bank id, S_id
        if pos + 4 > n:
            return None
        end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
        if end > n:
            return None
        s = _ident_or_none(data[pos + 4 : end])
        if s is None:
            return None
        texts.append(s)
        pos = end
    if pos + 8 + 4 + 3 + 16 + CERT_ID_LEN + 4 + 4 + 1 > n:
        return None
    amount = int.from_bytes(data[pos : pos + 8], "big")
    if amount == 0 or amount >= 1 << 63 or data[pos + 8 : pos + 12] != b"\0\0\0\3":
        return None
    currency = _ident_or_none(data[pos + 12 : pos + 15], currency=True)
    if currency is None:
        return None
    pos += 15
    time = int.from_bytes(data[pos : pos + 8], "big")
    txn = int.from_bytes(data[pos + 8 : pos + 16], "big")
    cert_id = data[pos + 16 : pos + 16 + CERT_ID_LEN]
    pos += 16 + CERT_ID_LEN
    end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
    if end > n:
        return None
    service = ""
    if end > pos + 4:
        found = _ident_or_none(data[pos + 4 : end])
        if found is None:
            return None
        service = found
    pos = end
    if pos + 4 > n:
        return None
    size = int.from_bytes(data[pos : pos + 4], "big")
    end = pos + 4 + size
    # the conversion flag is the last byte, and 0: no conversion
    if size > MAX_DETAILS or end + 1 != n or data[end] != 0:
        return None
    return PaymentSpec(
        texts[0], texts[1], amount, currency, time, txn, cert_id, service, data[pos + 4 : end]
    )
