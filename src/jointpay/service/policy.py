"""A bank's policy: fees, windows, validity periods. Explicit values, no globals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Final

DAY = 86_400
TOO_MANY_CHECKS: Final = "too_many_checks"
"""The refusal of a merchant's on-line check past the policy's ``online_checks``."""


@dataclass(frozen=True, slots=True)
class Policy:
    payment_fee: int = 0
    """Minor units the bank keeps from each accepted payment (paid by the merchant)."""
    withdrawal_fee: int = 0
    """Minor units charged to the holder's account on each withdrawal."""
    deposit_window: int = 90 * DAY
    """A payment older than this at deposit is ``stale``."""
    clock_skew: int = 300
    """How far in the future a payment or a deposit message may claim to be."""
    message_window: int = DAY
    """A deposit message whose timestamp is further from the bank's clock is refused."""
    online_window: int = 300
    """An on-line check (a merchant's, or a house's on another bank's behalf) whose
    timestamp is further from the bank's clock is refused: it is answered at once, so
    this is the clocks' skew, and how long a captured question may be asked again."""
    online_checks: int = 20
    """How many on-line checks one merchant (its bank and S_id) may ask about one card
    within ``online_checks_window``: yes or no to many amounts brackets a balance (about
    40 questions find it), so past this the bank refuses ``too_many_checks``."""
    online_checks_window: int = DAY
    """The sliding window, in seconds, over which ``online_checks`` are counted."""
    cert_validity: int = 2 * 365 * DAY
    renew_before: int = 60 * DAY
    """A withdrawal renews the CARD-CERT when it expires within this (FIG. 10 step 910)."""
    max_amount: int = 0
    """Per-payment limit written into CARD-CERTs (0: none)."""
    credit_fee_bp: int = 0
    """Merchant service charge on a credit payment, in basis points of its amount."""
    credit_clearing_delay: int = 0
    """Seconds a merchant's share of credit payments waits in its clearing account."""
    credit_max_topup: int = 0
    """Largest C_balance restore of a credit card in one exchange (0: up to the limit)."""
    credit_interest_bp: int = 0
    """Interest billed per credit transaction, in basis points of its amount."""
    late_interest_bp: int = 0
    """Interest on the part of a statement not paid by its due date, in basis points."""
    credit_period: int = 30 * DAY
    """A credit card's billing period: the settlement run bills a card whose last
    statement (or whose issue) is at least this long ago."""
    credit_grace: int = 25 * DAY
    """A statement is due this long after it is drawn up."""
    rate_tolerance_ppm: int = 10_000
    """How far (millionths) a terminal's stated exchange rate may be from the bank's."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Policy:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in obj.items() if k in names})

    AMOUNTS: ClassVar[tuple[str, ...]] = (
        "payment_fee",
        "withdrawal_fee",
        "max_amount",
        "credit_max_topup",
    )
    """The fields that are money (minor units of the bank's currency)."""

    RATES: ClassVar[tuple[str, ...]] = (
        "credit_fee_bp",
        "credit_interest_bp",
        "late_interest_bp",
    )
    """The fields in basis points: a share of an amount, at most 10,000 (all of it)."""
    SPANS: ClassVar[tuple[str, ...]] = (
        "deposit_window",
        "message_window",
        "online_window",
        "online_checks_window",
        "cert_validity",
    )
    """The fields in seconds that cannot be zero: a window nothing fits in, or a
    certificate valid for no time (a ``credit_period`` of 0 bills at every run)."""

    def problems(self) -> list[str]:
        """What makes this policy unworkable, in words (empty if nothing)."""
        out = [
            f"{n} is at most 10000 (basis points)" for n in self.RATES if getattr(self, n) > 10_000
        ]
        out += [f"{n} must be above zero (seconds)" for n in self.SPANS if getattr(self, n) <= 0]
        if self.online_checks < 1:
            out.append("online_checks must be at least 1 (no merchant could ask at all)")
        if self.renew_before >= self.cert_validity:
            out.append("renew_before must be below cert_validity (every withdrawal would renew)")
        if self.rate_tolerance_ppm > 1_000_000:
            out.append("rate_tolerance_ppm is at most 1000000 (all of the rate)")
        return out

    @staticmethod
    def basis_points(amount: int, bp: int) -> int:
        """``bp`` basis points of ``amount``, rounded up to the minor unit (never a float)."""
        return -(-amount * bp // 10_000)
