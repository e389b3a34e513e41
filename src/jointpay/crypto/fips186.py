"""Verifiable generation of modp groups: FIPS 186-4 and jointpay's secure group.

* :func:`generate_pq` / :func:`validate_pq`: FIPS 186-4 appendix A.1.1.2 / A.1.1.3,
  probable primes p (L = 2048) and q (N = 256) from a domain parameter seed, SHA-256.
* :func:`generate_g` / :func:`validate_g`: A.2.3 / A.2.4, the verifiable canonical
  generator ``g = SHA-256(seed || "ggen" || index || count)^((p-1)/q) mod p``.
* :func:`generate_secure_group` / :func:`validate_secure_group`: ``p = 2·q·h + 1``
  with q (256 bits) and h both prime, derived from a published seed, so that the
  only elements of small order are ±1 (the orders dividing ``p - 1 = 2·q·h`` are 1,
  2, q, h and their products; h > 2^1700). That is what makes batch verification
  with untrusted hints exact (docs/performance.md).

A bank publishes a :class:`FipsGroup` or :class:`SecureGroup` as JSON with its seed
and counters; anybody re-derives and re-checks it with the validate functions.
Every failure raises :class:`InvalidGroupError` naming what differs.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import gmpy2

from jointpay.crypto.errors import InvalidGroupError
from jointpay.crypto.group import P_BITS, Q_BITS, ModpParams, is_probable_prime

L: Final = P_BITS
N: Final = Q_BITS
OUTLEN: Final = 256
SEEDLEN: Final = 256
GGEN: Final = b"ggen"


def _hash(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest(), "big")


# --------------------------------------------------------------------------------------
# FIPS 186-4 A.1.1.2 / A.1.1.3 and A.2.3 / A.2.4
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FipsGroup:
    """A FIPS 186-4 domain parameter set with what is needed to re-derive it."""

    name: str
    p: int
    q: int
    g: int
    seed: bytes
    counter: int
    index: int

    @property
    def params(self) -> ModpParams:
        return ModpParams(self.name, self.p, self.q, self.g)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "fips186-4",
            "p": format(self.p, "x"),
            "q": format(self.q, "x"),
            "g": format(self.g, "x"),
            "seed": self.seed.hex(),
            "counter": self.counter,
            "index": self.index,
            "method": "FIPS 186-4 A.1.1.2 (SHA-256, L=2048, N=256) and A.2.3",
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> FipsGroup:
        try:
            return cls(
                str(obj["name"]),
                int(obj["p"], 16),
                int(obj["q"], 16),
                int(obj["g"], 16),
                bytes.fromhex(obj["seed"]),
                int(obj["counter"]),
                int(obj["index"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidGroupError(f"group record is malformed: {exc}") from exc


def _q_from_seed(seed: bytes) -> int:
    """A.1.1.2 steps 6-7: U = Hash(seed) mod 2^(N-1); q = 2^(N-1) + U + 1 - (U mod 2)."""
    u = _hash(seed) % (1 << (N - 1))
    return (1 << (N - 1)) + u + 1 - (u % 2)


def _p_candidate(seed: bytes, q: int, offset: int) -> int:
    """A.1.1.2 step 11: W from n+1 hashes of (seed + offset + j), X = W + 2^(L-1)."""
    n = -(-L // OUTLEN) - 1
    b = L - 1 - n * OUTLEN
    s = int.from_bytes(seed, "big")
    w = 0
    for j in range(n + 1):
        v = _hash(((s + offset + j) % (1 << (8 * len(seed)))).to_bytes(len(seed), "big"))
        if j == n:
            v %= 1 << b
        w += v << (j * OUTLEN)
    x = w + (1 << (L - 1))
    return x - (x % (2 * q) - 1)


def generate_pq(seed: bytes | None = None) -> tuple[int, int, bytes, int]:
    """A.1.1.2: ``(p, q, domain_parameter_seed, counter)``; new seeds until q is prime."""
    n = -(-L // OUTLEN) - 1
    while True:
        domain_seed = seed if seed is not None else secrets.token_bytes(SEEDLEN // 8)
        q = _q_from_seed(domain_seed)
        if not is_probable_prime(q):
            if seed is not None:
                raise InvalidGroupError("the given seed does not yield a prime q")
            continue
        offset = 1
        for counter in range(4 * L):
            p = _p_candidate(domain_seed, q, offset)
            if p >= 1 << (L - 1) and is_probable_prime(p):
                return p, q, domain_seed, counter
            offset += n + 1
        if seed is not None:
            raise InvalidGroupError("the given seed yields no p within 4L counters")


def validate_pq(p: int, q: int, seed: bytes, counter: int) -> None:
    """A.1.1.3: re-derive q and p from the seed and counter; raise on any difference."""
    if len(seed) * 8 < N:
        raise InvalidGroupError("the domain parameter seed is shorter than N bits")
    if not 0 <= counter < 4 * L:
        raise InvalidGroupError("counter out of range")
    if p.bit_length() != L or q.bit_length() != N:
        raise InvalidGroupError("p or q has the wrong size")
    if _q_from_seed(seed) != q:
        raise InvalidGroupError("q is not the one the seed gives")
    if not is_probable_prime(q):
        raise InvalidGroupError("q is not prime")
    n = -(-L // OUTLEN) - 1
    offset = 1 + counter * (n + 1)
    if _p_candidate(seed, q, offset) != p:
        raise InvalidGroupError("p is not the one the seed and counter give")
    if not is_probable_prime(p):
        raise InvalidGroupError("p is not prime")
    for c in range(counter):  # A.1.1.3 also requires no earlier counter to succeed
        cand = _p_candidate(seed, q, 1 + c * (n + 1))
        if cand >= 1 << (L - 1) and is_probable_prime(cand):
            raise InvalidGroupError(f"an earlier counter ({c}) already gives a prime p")


def generate_g(p: int, q: int, seed: bytes, index: int) -> int:
    """A.2.3: the verifiable canonical generator for (p, q, seed, index)."""
    if not 0 <= index <= 0xFF:
        raise InvalidGroupError("index is one byte")
    e = (p - 1) // q
    for count in range(1, 1 << 16):
        w = _hash(seed + GGEN + bytes((index,)) + count.to_bytes(2, "big"))
        g = int(gmpy2.powmod(w, e, p))
        if g >= 2:  # pragma: no branch - g < 2 has probability ~2^-2000
            return g
    raise InvalidGroupError("no generator found")  # pragma: no cover - probability ~0


def validate_g(p: int, q: int, g: int, seed: bytes, index: int) -> None:
    """A.2.4: g is in range, of order q, and the one the seed and index give."""
    if not 2 <= g <= p - 1:
        raise InvalidGroupError("g is not in [2, p-1]")
    if pow(g, q, p) != 1:
        raise InvalidGroupError("g does not have order q")
    if generate_g(p, q, seed, index) != g:
        raise InvalidGroupError("g is not the one the seed and index give")


def generate_bank_group(name: str, seed: bytes | None = None, index: int = 1) -> FipsGroup:
    """A bank's own FIPS 186-4 group, ready to publish with its seed."""
    p, q, domain_seed, counter = generate_pq(seed)
    return FipsGroup(name, p, q, generate_g(p, q, domain_seed, index), domain_seed, counter, index)


def verify_bank_group(obj: dict[str, Any]) -> FipsGroup:
    """Re-check a published FIPS group record from its seed; return it if it holds."""
    grp = FipsGroup.from_json(obj)
    validate_pq(grp.p, grp.q, grp.seed, grp.counter)
    validate_g(grp.p, grp.q, grp.g, grp.seed, grp.index)
    return grp


# --------------------------------------------------------------------------------------
# the secure group p = 2qh + 1
# --------------------------------------------------------------------------------------

SECURE_TAG: Final = b"jointpay/v1/secure-modp-group"


def _small_primes(limit: int) -> list[int]:
    sieve = bytearray([1]) * limit
    sieve[0:2] = b"\0\0"
    for i in range(2, int(limit**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytearray(len(sieve[i * i :: i]))
    return [i for i in range(3, limit) if sieve[i]]


@functools.cache
def _primorial() -> Any:
    """The product of the odd primes below 2^16, for a one-gcd sieve."""
    out = gmpy2.mpz(1)
    for sp in _small_primes(1 << 16):
        out *= sp
    return out


@dataclass(frozen=True, slots=True)
class SecureGroup:
    """``p = 2·q·h + 1`` with q and h prime, derived from ``seed``."""

    name: str
    p: int
    q: int
    h: int
    g: int
    seed: bytes
    q_counter: int
    h_counter: int
    index: int

    @property
    def params(self) -> ModpParams:
        return ModpParams(self.name, self.p, self.q, self.g)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "secure",
            "p": format(self.p, "x"),
            "q": format(self.q, "x"),
            "h": format(self.h, "x"),
            "g": format(self.g, "x"),
            "seed": self.seed.hex(),
            "q_counter": self.q_counter,
            "h_counter": self.h_counter,
            "index": self.index,
            "method": (
                "q = 2^255 + U + 1 - (U mod 2), U = SHA-256(LP(tag) || seed || 'q' || "
                "u32(q_counter)) mod 2^255, first prime; h = the first h_counter whose "
                "candidate lo + (E mod (hi - lo + 1)) | 1, E = 7 SHA-256 blocks of "
                "(LP(tag) || seed || 'h' || q || u32(h_counter) || u8(j)), with "
                "[lo, hi] the h giving a 2048-bit p = 2qh + 1, has h and p prime; "
                "g = SHA-256(seed || 'ggen' || index || u16(count))^(2h) mod p "
                "(FIPS 186-4 A.2.3 style)"
            ),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> SecureGroup:
        try:
            return cls(
                str(obj["name"]),
                int(obj["p"], 16),
                int(obj["q"], 16),
                int(obj["h"], 16),
                int(obj["g"], 16),
                bytes.fromhex(obj["seed"]),
                int(obj["q_counter"]),
                int(obj["h_counter"]),
                int(obj["index"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise InvalidGroupError(f"group record is malformed: {exc}") from exc


def _lp(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _secure_q(seed: bytes, counter: int) -> int:
    u = _hash(_lp(SECURE_TAG) + seed + b"q" + counter.to_bytes(4, "big")) % (1 << (N - 1))
    return (1 << (N - 1)) + u + 1 - (u % 2)


def _h_range(q: int) -> tuple[int, int]:
    """The h for which p = 2qh + 1 has exactly L bits."""
    lo = -(-((1 << (L - 1)) - 1) // (2 * q))
    hi = ((1 << L) - 2) // (2 * q)
    return lo, hi


def _secure_h(seed: bytes, q: int, counter: int) -> int:
    lo, hi = _h_range(q)
    blocks = b"".join(
        hashlib.sha256(
            _lp(SECURE_TAG)
            + seed
            + b"h"
            + q.to_bytes(32, "big")
            + counter.to_bytes(4, "big")
            + bytes((j,))
        ).digest()
        for j in range(7)
    )
    h = lo + int.from_bytes(blocks, "big") % (hi - lo + 1)
    h |= 1
    return h if h <= hi else h - 2


def _sieve_ok(n: int) -> bool:
    """No odd prime factor below 2^16 (a cheap filter before the primality tests)."""
    return bool(gmpy2.gcd(gmpy2.mpz(n), _primorial()) == 1)


def _cheap_filter(h: int, p: int) -> bool:
    """Small factors and a base-2 strong-probable-prime test, before the full tests."""
    return (
        _sieve_ok(h)
        and _sieve_ok(p)
        and bool(gmpy2.is_strong_prp(gmpy2.mpz(p), 2))
        and bool(gmpy2.is_strong_prp(gmpy2.mpz(h), 2))
    )


def generate_secure_group(
    name: str, seed: bytes, *, index: int = 1, progress: Callable[[int], None] | None = None
) -> SecureGroup:
    """Search from ``seed`` for the first q, then the first h with h and p prime."""
    q_counter = 0
    while not is_probable_prime(_secure_q(seed, q_counter)):
        q_counter += 1
    q = _secure_q(seed, q_counter)
    h_counter = 0
    while True:
        if progress is not None and h_counter % 1000 == 0:
            progress(h_counter)
        h = _secure_h(seed, q, h_counter)
        p = 2 * q * h + 1
        if _cheap_filter(h, p) and is_probable_prime(h) and is_probable_prime(p):
            g = _secure_g(p, q, h, seed, index)
            return SecureGroup(name, p, q, h, g, seed, q_counter, h_counter, index)
        h_counter += 1


def _secure_g(p: int, q: int, h: int, seed: bytes, index: int) -> int:
    del q
    for count in range(1, 1 << 16):
        w = _hash(seed + GGEN + bytes((index,)) + count.to_bytes(2, "big"))
        g = int(gmpy2.powmod(w, 2 * h, p))
        if g >= 2:  # pragma: no branch - g < 2 has probability ~2^-2000
            return g
    raise InvalidGroupError("no generator found")  # pragma: no cover - probability ~0


def validate_secure_group(obj: dict[str, Any], *, check_first: bool = False) -> SecureGroup:
    """Re-derive a published secure group from its seed and counters and check it.

    Checks: q is the ``q_counter``-th candidate and prime, h the ``h_counter``-th and
    prime, p = 2qh + 1 is a 2048-bit prime, g is the seed's generator and has order q.
    Then ``p - 1 = 2qh`` with q, h prime, so the subgroup orders are 1, 2, q, h, 2q,
    2h, qh and 2qh: the only elements of order below 2^255 are 1 and p - 1.
    ``check_first`` also checks that no earlier counter was acceptable (slow for h).
    """
    grp = SecureGroup.from_json(obj)
    if _secure_q(grp.seed, grp.q_counter) != grp.q:
        raise InvalidGroupError("q is not the one the seed and q_counter give")
    if not is_probable_prime(grp.q) or grp.q.bit_length() != N:
        raise InvalidGroupError("q is not a 256-bit prime")
    if _secure_h(grp.seed, grp.q, grp.h_counter) != grp.h:
        raise InvalidGroupError("h is not the one the seed and h_counter give")
    if grp.p != 2 * grp.q * grp.h + 1 or grp.p.bit_length() != L:
        raise InvalidGroupError("p is not 2qh + 1 with 2048 bits")
    if not is_probable_prime(grp.h):
        raise InvalidGroupError("h is not prime")
    if not is_probable_prime(grp.p):
        raise InvalidGroupError("p is not prime")
    if (
        grp.g != _secure_g(grp.p, grp.q, grp.h, grp.seed, grp.index)
        or pow(grp.g, grp.q, grp.p) != 1
    ):
        raise InvalidGroupError("g is not the seed's generator of order q")
    if check_first:
        for c in range(grp.q_counter):
            if is_probable_prime(_secure_q(grp.seed, c)):
                raise InvalidGroupError(f"an earlier q_counter ({c}) gives a prime q")
        for c in range(grp.h_counter):
            h = _secure_h(grp.seed, grp.q, c)
            if is_probable_prime(h) and is_probable_prime(2 * grp.q * h + 1):
                raise InvalidGroupError(f"an earlier h_counter ({c}) is acceptable")
    return grp
