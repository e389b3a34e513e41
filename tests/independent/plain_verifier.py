"""An independent PAYMENT-CERT verifier: plain Python integers and hashlib only.

It shares no code with jointpay (it imports nothing from it) and applies CONTRACT
section 2 literally, so that a bug in jointpay's verifier cannot hide in both.
"""

from __future__ import annotations

import hashlib

# SEC 2, secp256k1
SP = 2**256 - 2**32 - 977
SN = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
GX = 0x79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798
GY = 0x483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8

# RFC 5114 section 2.3, typed from the RFC
RFC5114_P = int(
    "87A8E61DB4B6663CFFBBD19C651959998CEEF608660DD0F25D2CEED4435E3B00E00DF8F1D61957D4"
    "FAF7DF4561B2AA3016C3D91134096FAA3BF4296D830E9A7C209E0C6497517ABD5A8A9D306BCF67ED"
    "91F9E6725B4758C022E0B1EF4275BF7B6C5BFC11D45F9088B941F54EB1E59BB8BC39A0BF12307F5C"
    "4FDB70C581B23F76B63ACAE1CAA6B7902D52526735488A0EF13C6D9A51BFA4AB3AD8347796524D8E"
    "F6A167B5A41825D967E144E5140564251CCACB83E6B486F6B3CA3F7971506026C0B857F689962856"
    "DED4010ABD0BE621C3A3960A54E710C375F26375D7014103A4B54330C198AF126116D2276E11715F"
    "693877FAD7EF09CADB094AE91E1A1597",
    16,
)
RFC5114_G = int(
    "3FB32C9B73134D0B2E77506660EDBD484CA7B18F21EF205407F4793A1A0BA12510DBC15077BE463F"
    "FF4FED4AAC0BB555BE3A6C1B0C6B47B1BC3773BF7E8C6F62901228F8C28CBB18A55AE31341000A65"
    "0196F931C77A57F2DDF463E5E9EC144B777DE62AAAB8A8628AC376D282D6ED3864E67982428EBC83"
    "1D14348F6F2F9193B5045AF2767164E1DFC967C1FB3F2E55A4BD1BFFE83B9C80D052B985D182EA0A"
    "DB2A3B7313D3FE14C8484B1E052588B9B7D2BBD2DF016199ECD06E1557CD0915B3353BBB64E0EC37"
    "7FD028370DF92B52C7891428CDC67EB6184B523D1DB246C32F63078490F00EF8D647D148D4795451"
    "5E2327CFEF98C582664B4C0F6CC41659",
    16,
)
RFC5114_Q = 0x8CF83642A709A097B447997640129DA299B1A47D1EB3750BA308B0FE64F5FBD3

Point = tuple[int, int] | None  # None is the point at infinity


def ec_add(a: Point, b: Point) -> Point:
    if a is None:
        return b
    if b is None:
        return a
    (x1, y1), (x2, y2) = a, b
    if x1 == x2 and (y1 + y2) % SP == 0:
        return None
    if a == b:
        lam = 3 * x1 * x1 * pow(2 * y1, -1, SP) % SP
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, SP) % SP
    x3 = (lam * lam - x1 - x2) % SP
    return x3, (lam * (x1 - x3) - y1) % SP


def ec_mul(k: int, pt: Point) -> Point:
    result: Point = None
    addend = pt
    while k:
        if k & 1:
            result = ec_add(result, addend)
        addend = ec_add(addend, addend)
        k >>= 1
    return result


def ec_decode(data: bytes) -> Point:
    """Compressed SEC1 only; None if not a valid curve point."""
    if len(data) != 33 or data[0] not in (2, 3):
        return None
    x = int.from_bytes(data[1:], "big")
    if x >= SP:
        return None
    rhs = (pow(x, 3, SP) + 7) % SP
    y = pow(rhs, (SP + 1) // 4, SP)
    if y * y % SP != rhs:
        return None
    if y % 2 != data[0] - 2:
        y = SP - y
    return x, y


def ec_encode(pt: tuple[int, int]) -> bytes:
    return bytes([2 + pt[1] % 2]) + pt[0].to_bytes(32, "big")


def lp(x: bytes) -> bytes:
    return len(x).to_bytes(4, "big") + x


def challenge(suite: str, y_enc: bytes, ser: int, spec: bytes, a_enc: bytes, q: int) -> int:
    h = hashlib.sha256(
        lp(b"jointpay/v1/payment")
        + lp(suite.encode())
        + lp(y_enc)
        + ser.to_bytes(8, "big")
        + lp(spec)
        + lp(a_enc)
    ).digest()
    return int.from_bytes(h, "big") % q


def miller_rabin(n: int) -> bool:
    if n < 2:
        return False
    for sp in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37):
        if n % sp == 0:
            return n == sp
    d, s = n - 1, 0
    while d % 2 == 0:
        d, s = d // 2, s + 1
    for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53):
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def modp_group(name: str | None, groups: dict[str, dict[str, str]]) -> tuple[int, int, int]:
    if name in (None, "rfc5114-2.3"):
        return RFC5114_P, RFC5114_Q, RFC5114_G
    entry = groups[name]
    p, q, g = (int(entry[k], 16) for k in ("p", "q", "g"))
    if (
        p.bit_length() != 2048
        or q.bit_length() != 256
        or (p - 1) % q
        or not 1 < g < p
        or pow(g, q, p) != 1
        or not miller_rabin(q)
        or not miller_rabin(p)
    ):
        raise ValueError(f"group {name} does not validate")
    return p, q, g


def verify_case(case: dict, groups: dict) -> bool:  # type: ignore[type-arg]
    """True iff the case is a valid PAYMENT-CERT under CONTRACT section 2."""
    suite = case["suite"]
    ser = case["ser"]
    try:
        y_enc = bytes.fromhex(case["joint_public_key"])
        spec = bytes.fromhex(case["spec"])
        b_raw, r_raw = bytes.fromhex(case["b"]), bytes.fromhex(case["r"])
    except ValueError:
        return False
    if not isinstance(ser, int) or not 0 <= ser < 2**64:
        return False
    if len(b_raw) != 32 or len(r_raw) != 32:
        return False
    b, r = int.from_bytes(b_raw, "big"), int.from_bytes(r_raw, "big")
    if suite == "secp256k1":
        q = SN
        if not (0 <= b < q and 0 < r < q):
            return False
        y = ec_decode(y_enc)
        if y is None:
            return False
        a = ec_add(ec_mul(r, (GX, GY)), ec_mul(b, y))
        if a is None:
            return False
        return challenge(suite, y_enc, ser, spec, ec_encode(a), q) == b
    if suite == "modp-2048-256":
        p, q, g = modp_group(case["group"], groups)
        if not (0 <= b < q and 0 < r < q):
            return False
        if len(y_enc) != 256:
            return False
        y_int = int.from_bytes(y_enc, "big")
        if not 1 < y_int < p or pow(y_int, q, p) != 1:
            return False
        a_int = pow(g, r, p) * pow(y_int, b, p) % p
        return challenge(suite, y_enc, ser, spec, a_int.to_bytes(256, "big"), q) == b
    return False
