"""Money: an integer count of minor units with its currency. Never a float.

Amounts cross the outside boundary as decimal strings ("12.50"); :func:`parse_amount`
is the one strict parser, and :func:`format_amount` its inverse.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

MAX_MINOR: Final = (1 << 63) - 1
"""Largest amount in minor units (fits a signed 64-bit database column)."""

# ISO 4217 minor-unit exponents for the currencies that differ from 2.
_EXPONENTS: Final = {
    "BHD": 3,
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "IQD": 3,
    "ISK": 0,
    "JOD": 3,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "PYG": 0,
    "RWF": 0,
    "TND": 3,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
}
_CURRENCY: Final = re.compile(r"^[A-Z]{3}$")
_AMOUNT: Final = re.compile(r"^(0|[1-9][0-9]{0,18})(?:\.([0-9]+))?$")


class AmountError(ValueError):
    """An amount string or value is not acceptable."""


def exponent(currency: str) -> int:
    """Number of decimal places of ``currency``'s minor unit (ISO 4217)."""
    known = _CHECKED.get(currency) if type(currency) is str else None
    if known is None:
        check_currency(currency)
        known = _CHECKED[currency] = int(_EXPONENTS.get(currency, 2))
    return known


_CHECKED: dict[str, int] = {}
""":func:`exponent`'s answers for codes already checked (at most 26^3 of them): a
receipt formats one amount per payment."""


def check_currency(currency: str) -> str:
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise AmountError(f"currency {currency!r} is not a three-letter ISO 4217 code")
    return currency


@dataclass(frozen=True, slots=True, order=True)
class Money:
    """``minor`` units of ``currency`` (cents for EUR, yen for JPY)."""

    currency: str
    minor: int

    def __post_init__(self) -> None:
        check_currency(self.currency)
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise AmountError("an amount is an integer number of minor units")
        if not -MAX_MINOR <= self.minor <= MAX_MINOR:
            raise AmountError("amount out of range")

    def __add__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.currency, self.minor + other.minor)

    def __sub__(self, other: Money) -> Money:
        self._same(other)
        return Money(self.currency, self.minor - other.minor)

    def _same(self, other: Money) -> None:
        if other.currency != self.currency:
            raise AmountError(f"cannot mix {self.currency} and {other.currency}")

    def __str__(self) -> str:
        return f"{format_amount(self.minor, self.currency)} {self.currency}"


def parse_amount(text: str, currency: str, *, allow_zero: bool = False) -> int:
    """Parse a decimal amount string into minor units, strictly.

    Accepts ``"12"``, ``"12.5"``, ``"12.50"``; refuses a sign, an exponent, spaces, more
    decimals than the currency has, a leading zero, an empty or huge value. Returns the
    count of minor units.
    """
    if not isinstance(text, str):
        raise AmountError("an amount is a decimal string")
    exp = exponent(currency)
    m = _AMOUNT.fullmatch(text)
    if not m:
        raise AmountError(
            f"amount {text!r} is not a plain decimal number like 12.50 (no sign, no exponent)"
        )
    whole, frac = m.group(1), m.group(2) or ""
    if len(frac) > exp:
        raise AmountError(f"amount {text!r} has more than {exp} decimals for {currency}")
    minor = int(whole + frac.ljust(exp, "0"))
    if minor > MAX_MINOR:
        raise AmountError(f"amount {text!r} is too large")
    if minor == 0 and not allow_zero:
        raise AmountError("amount must be greater than zero")
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units as a decimal string with the currency's exact number of decimals."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    n = abs(minor)
    if exp == 0:
        return f"{sign}{n}"
    return f"{sign}{n // 10**exp}.{n % 10**exp:0{exp}d}"


RATE_SCALE: Final = 10**6
"""Exchange rates are integers: units of one currency per unit of another, x 10^6."""
RATE_PATTERN: Final = r"^(0|[1-9][0-9]{0,11})(?:\.([0-9]{1,6}))?$"
"""A decimal rate: no sign, no exponent, at most 6 decimals (also the API's schema)."""
_RATE: Final = re.compile(RATE_PATTERN)


def parse_rate(text: str) -> int:
    """A decimal exchange rate ("0.9215") as an integer count of millionths, strictly."""
    if not isinstance(text, str):
        raise AmountError("a rate is a decimal string")
    m = _RATE.fullmatch(text)
    if not m:
        raise AmountError(f"rate {text!r} is not a plain decimal with at most 6 decimals")
    micro = int(m.group(1)) * RATE_SCALE + int((m.group(2) or "").ljust(6, "0"))
    if micro == 0:
        raise AmountError("a rate must be greater than zero")
    return micro


def format_rate(micro: int) -> str:
    """Millionths as the shortest exact decimal string ("0.9215")."""
    whole, frac = divmod(micro, RATE_SCALE)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") if frac else str(whole)


def convert(orig_minor: int, orig_currency: str, rate_micro: int, currency: str) -> int:
    """``orig_minor`` of ``orig_currency`` in minor units of ``currency``, at ``rate_micro``.

    Exact integer arithmetic, rounded half up to the nearest minor unit: a terminal
    and a bank that follow this function get the same figure to the last cent.
    """
    num: int = orig_minor * rate_micro * 10 ** exponent(currency)
    den: int = RATE_SCALE * 10 ** exponent(orig_currency)
    return (2 * num + den) // (2 * den)
