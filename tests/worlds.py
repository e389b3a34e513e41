"""Shared scenery for the lifecycle tests: a settable clock and the PIN the cards use."""

from __future__ import annotations

PIN = "2468"
T0 = 1_800_000_000


class Clock:
    """A clock a test moves by hand (``clock.now += DAY``)."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now
