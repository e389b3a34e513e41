"""The bank's records (FIG. 5 and the ledger), as immutable values. No I/O here.

Storage implementations (:mod:`jointpay.storage`) persist exactly these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple


class AccountKind(StrEnum):
    HOLDER = "holder"
    """An ordinary bank account of a card holder (money outside the card)."""
    CARD_FLOAT = "card_float"
    """The bank's liability for the value on one card (the card's C_balance at the bank)."""
    CREDIT = "credit"
    """A credit card's receivable: what the holder owes the bank."""
    MERCHANT = "merchant"
    """A service provider's deposit account."""
    INCOME = "income"
    """The bank's fee and interest income."""
    EQUITY = "equity"
    """The bank's own funds: the source of money brought in from outside (cash paid in)."""
    CLEARING = "clearing"
    """Positions against other banks through a clearing house."""


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    kind: AccountKind
    currency: str
    owner: str
    balance: int
    """Cached balance in minor units; the audit checks it equals the sum of the entries."""
    created_at: int
    allow_negative: bool = False


@dataclass(frozen=True, slots=True)
class Leg:
    account_id: str
    amount: int
    """Signed minor units: positive credits the account, negative debits it."""


@dataclass(frozen=True, slots=True)
class Transfer:
    """One double-entry posting: legs in one currency that sum to zero.

    ``id`` is unique and chosen by the use case from the business event (for
    instance ``deposit:<card>:<ser>``), so posting the same event twice is refused by
    the database rather than by hope (TigerBeetle's idempotent transfer ids).
    """

    id: str
    kind: str
    currency: str
    legs: tuple[Leg, ...]
    ref: str
    created_at: int

    def __post_init__(self) -> None:
        if len(self.legs) < 2:
            raise ValueError("a transfer has at least two legs")
        if sum(leg.amount for leg in self.legs) != 0:
            raise ValueError("a transfer's legs must sum to zero")
        if any(not isinstance(leg.amount, int) for leg in self.legs):
            raise ValueError("amounts are integers")


class CardStatus(StrEnum):
    ACTIVE = "active"
    BLACKLISTED = "blacklisted"


@dataclass(frozen=True, slots=True)
class CardRecord:
    """The bank's card account (FIG. 5)."""

    card_number: str
    holder: str
    holder_account: str
    float_account: str
    """The card float (cash), or the credit receivable (credit); "" for cheque cards."""
    mode: str
    currency: str
    suite: str
    group: str | None
    joint_key: bytes
    master_key: bytes
    """Per-card secret shared with the card (withdrawal ack MAC, unblock). Never printed."""
    seq: int
    """seq# of the last withdrawal the bank applied."""
    highest_ser: int
    """Highest ser# seen in an accepted deposit (-1 before the first)."""
    status: CardStatus
    limit: int
    """Credit limit (credit mode) in minor units; 0 otherwise."""
    created_at: int
    blacklisted_at: int | None = None
    current_cert_id: bytes = b""

    def __repr__(self) -> str:
        return f"CardRecord({self.card_number}, {self.mode}, {self.status}, seq={self.seq})"


@dataclass(frozen=True, slots=True)
class CertRecord:
    """One CARD-CERT the card has had; the bank keeps them all (FIG. 5, record 1...)."""

    cert_id: bytes
    card_number: str
    encoded: bytes
    not_before: int
    not_after: int
    issued_at: int
    key_powers: bytes | None = None
    """modp: ``enc(Y^(2^32)) || enc(Y^(2^64)) || ... || enc(Y^(2^224))`` of the card's joint
    key, made when the bank stored the certificate, so that a deposit raises the key
    by a comb (:class:`jointpay.crypto.group.Comb`) at about half the cost of an
    exponentiation; None for secp256k1, and for certificates stored before migration
    0005 until ``jointpay bank backfill-key-powers``."""


@dataclass(frozen=True, slots=True)
class MerchantRecord:
    sid: str
    name: str
    account_id: str
    public_key: bytes
    cert: bytes
    last_seq: int
    """Highest deposit-message sequence number accepted from this merchant."""
    created_at: int


class PaymentRecord(NamedTuple):
    """An accepted PAYMENT-CERT. (card_number, ser) is unique in storage.

    A named tuple, not a frozen dataclass like the other records: a deposit makes one
    per payment, and a frozen dataclass's ``__init__`` (one ``object.__setattr__`` a
    field) cost six times as much to build (measured: 2.5 µs against 0.4 for ten
    fields). It is as immutable."""

    card_number: str
    ser: int
    cert_id: bytes
    sid: str
    amount: int
    currency: str
    spec: bytes
    b: bytes
    r: bytes
    deposit_id: str
    accepted_at: int
    fee: int = 0
    """What the bank kept of ``amount`` when it credited the merchant (the payment fee,
    plus the credit fee of a credit card); 0 for a payment a clearing house brought.
    The audit checks the merchants and the bank's income against it (migration 0006)."""


@dataclass(frozen=True, slots=True)
class DepositRecord:
    deposit_id: str
    sid: str
    merchant_seq: int
    batch_digest: bytes
    received_at: int
    receipt: str
    """The signed receipt as JSON text, returned again on a retry."""


@dataclass(frozen=True, slots=True)
class WithdrawalRecord:
    """An applied withdrawal (FIG. 10). (card_number, seq) is unique."""

    card_number: str
    seq: int
    request_digest: bytes
    amount: int
    fee: int
    ack: bytes
    """The encoded acknowledgement, returned unchanged to a retried request."""
    created_at: int


@dataclass(frozen=True, slots=True)
class HotlistEntry:
    version: int
    """Monotonic per bank: terminals ask for the entries after the version they hold."""
    card_number: str
    reason: str
    added_at: int


@dataclass(frozen=True, slots=True)
class AlertRecord:
    id: int
    card_number: str
    kind: str
    detail: str
    created_at: int
    evidence: str = field(default="", repr=False)
    """JSON: both certificates of a double spend, the balances compared, ..."""


@dataclass(frozen=True, slots=True)
class InterbankRecord:
    """A payment that crossed banks: card of ``issuer``, merchant of ``acquirer``.

    The acquiring bank keeps one per payment it credited to its merchant, the clearing
    house one per payment it cleared; ``(issuer, card_number, ser)`` is unique in both,
    which is what makes a cross-bank payment count once.
    """

    issuer: str
    card_number: str
    ser: int
    acquirer: str
    clearing_house: str
    sid: str
    amount: int
    currency: str
    spec: bytes
    ref: str
    """The acquirer's deposit session that brought it."""
    accepted_at: int
    fee: int = 0
    """The acquirer's fee on it, kept of ``amount`` when it credited its merchant (0
    in a clearing house's records)."""


@dataclass(frozen=True, slots=True)
class StatementRecord:
    """A credit card's bill for one period (``bank settle``)."""

    card_number: str
    number: int
    """1, 2, 3, ... per card."""
    period_start: int
    """Payments accepted from this second ..."""
    period_end: int
    """... up to, not including, this one are on this statement."""
    charges: int
    """Sum of the period's accepted payments."""
    interest: int
    """Interest per credit transaction of the period."""
    late_interest: int
    """Interest on what the previous statement asked for and was not paid by its date."""
    balance_due: int
    """What the holder owes once this statement is posted."""
    due_at: int
