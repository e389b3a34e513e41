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

from dataclasses import dataclass
from typing import Final

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


@dataclass(frozen=True, slots=True)
class PaymentSpec:
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
