"""secp256k1 encodings of the right form that are no usable point, for the tests."""

from __future__ import annotations

from jointpay.crypto.group import SECP256K1_N, SECP256K1_P


def _on_curve(x: int) -> bool:
    return pow(x**3 + 7, (SECP256K1_P - 1) // 2, SECP256K1_P) == 1


def off_curve_x() -> bytes:
    """02 || x with x^3 + 7 no square: no point has this x."""
    x = 5
    while _on_curve(x):
        x += 1
    return b"\x02" + x.to_bytes(32, "big")


def x_above_n() -> bytes:
    """A real curve point whose x is >= n: it cannot pose as an ECDSA r."""
    x = SECP256K1_N
    while not _on_curve(x):
        x += 1
    return b"\x02" + x.to_bytes(32, "big")
