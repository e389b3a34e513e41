"""A bank's policy: fees, windows, validity periods. Explicit values, no globals."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

DAY = 86_400


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
    cert_validity: int = 2 * 365 * DAY
    renew_before: int = 60 * DAY
    """A withdrawal renews the CARD-CERT when it expires within this (FIG. 10 step 910)."""
    max_amount: int = 0
    """Per-payment limit written into CARD-CERTs (0: none)."""
    rate_tolerance_ppm: int = 10_000
    """How far (millionths) a terminal's stated exchange rate may be from the bank's."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Policy:
        names = {f.name for f in fields(cls)}
        return cls(**{k: int(v) for k, v in obj.items() if k in names})
