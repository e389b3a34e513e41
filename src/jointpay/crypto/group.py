"""The two suites of CONTRACT section 2 behind one small interface.

A :class:`Group` is a prime-order group with a generator ``g`` and order ``q``:

* ``modp-2048-256``: a subgroup of order q of Z_p^*, arithmetic with gmpy2. The default
  parameters are RFC 5114 section 2.3; a bank may use a named *secure* group shipped
  with jointpay or its own FIPS 186-4 group (see :mod:`jointpay.crypto.fips186`).
* ``secp256k1``: SEC 2 secp256k1 through libsecp256k1 (coincurve), written
  multiplicatively here so both suites read the same way (``g^k`` is ``k·G``).

Elements that come from outside are validated when decoded (in the group, not the
identity) and are then wrapped in an :class:`Element`, so code that holds an
``Element`` never has to ask again. Exponentiation by a *secret* uses the libraries'
constant-time routines (``mpz_powm_sec``, ``secp256k1_ecmult_gen``); exponentiation by
public values (verification) uses the faster variable-time ones.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import threading
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from itertools import compress
from operator import getitem
from typing import Any, Final

import gmpy2
from coincurve import PublicKey as _CurvePoint

from jointpay.crypto.errors import (
    DecodeError,
    InvalidElementError,
    InvalidGroupError,
    InvalidScalarError,
)

SUITE_MODP: Final = "modp-2048-256"
SUITE_SECP256K1: Final = "secp256k1"
SUITES: Final = (SUITE_MODP, SUITE_SECP256K1)
DEFAULT_MODP_GROUP: Final = "rfc5114-2.3"
SCALAR_LEN: Final = 32


class Element:
    """A validated, non-identity element of a :class:`Group`.

    ``native`` is the library's own value (a gmpy2 ``mpz`` or a coincurve point) and
    ``encoded`` its canonical encoding (CONTRACT ``enc``). Equality is by group and
    encoding. An element decoded from bytes the caller validated before (``known``)
    may be built with ``native=None``: it is then parsed on first use.
    """

    __slots__ = ("_native", "encoded", "group")

    def __init__(self, group: Group, native: Any, encoded: bytes) -> None:
        self.group = group
        self._native = native
        self.encoded = encoded

    @property
    def native(self) -> Any:
        value = self._native
        if value is None:
            value = self._native = self.group.native_of(self.encoded)
        return value

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Element)
            and other.group is self.group
            and other.encoded == self.encoded
        )

    def __hash__(self) -> int:
        return hash((self.group.suite, self.encoded))

    def __repr__(self) -> str:
        return f"Element({self.group.suite}, {self.encoded[:8].hex()}…)"


class RootedElement(Element):
    """An element computed as the square of ``root`` (modp: the verification equation
    taken through its square root, see :meth:`ModpGroup.combine_rooted`). ``root`` is
    the terminal's hint for the bank (:meth:`Group.hint_of`)."""

    __slots__ = ("root",)

    def __init__(self, group: Group, native: Any, encoded: bytes, root: Any) -> None:
        super().__init__(group, native, encoded)
        self.root = root


ROOT_HINT_TAG: Final = b"\x01"
"""The first byte of a modp hint given by its square root: ``01 || enc(s)``, s^2 = a'."""


class Group(ABC):
    """A prime-order group of one suite. Instances are immutable and shared."""

    suite: str
    """The suite name, exactly as CONTRACT section 2 spells it."""
    name: str | None
    """For modp, the name of the parameter set (``rfc5114-2.3``...); None for curves."""
    q: int
    """The prime order of the group."""
    element_len: int
    """Length of ``enc`` for this group."""

    # -- encoding -------------------------------------------------------------------
    @abstractmethod
    def decode(self, data: bytes, *, known: bool = False) -> Element:
        """Parse ``enc(Y)``; raise :class:`InvalidElementError` unless valid non-identity.

        ``known``: the caller validated these exact bytes before and kept them (a bank
        reading back a CARD-CERT it issued and stored); a modp group then skips the
        subgroup test (one exponentiation) and checks only length and range, and
        secp256k1 checks the encoding's form; either parses the value on first use.
        """

    @abstractmethod
    def native_of(self, data: bytes) -> Any:
        """The library value of an element decoded ``known`` and left unparsed."""

    def decode_scalar(self, data: bytes, *, allow_zero: bool = True) -> int:
        """Parse a 32-byte big-endian scalar in ``[0, q)`` (``(0, q)`` unless ``allow_zero``)."""
        if not isinstance(data, bytes) or len(data) != SCALAR_LEN:
            got = len(data) if isinstance(data, bytes) else type(data).__name__
            raise InvalidScalarError(f"a scalar is exactly {SCALAR_LEN} bytes, got {got}")
        k = int.from_bytes(data, "big")
        if k >= self.q:
            raise InvalidScalarError("scalar is not below the group order q")
        if k == 0 and not allow_zero:
            raise InvalidScalarError("scalar must not be zero")
        return k

    @staticmethod
    def encode_scalar(k: int) -> bytes:
        return k.to_bytes(SCALAR_LEN, "big")

    # -- arithmetic -----------------------------------------------------------------
    @abstractmethod
    def g_pow_secret(self, k: int) -> Element:
        """``g^k`` for a secret ``k`` in ``[1, q)``, in constant time."""

    @abstractmethod
    def g_pow(self, k: int) -> Element | None:
        """``g^k`` for a public ``k`` (variable time); None for the identity."""

    @abstractmethod
    def hint_of(self, a: Element) -> bytes:
        """How a terminal hands ``a' = g^r·Y^b`` to the bank as its untrusted hint, in
        the form the bank checks cheapest: on secp256k1 uncompressed (read without a
        square root), on modp by its square root when :meth:`combine_rooted` kept one
        (a residue without a Legendre symbol), else the element's encoding."""

    def combine_rooted(self, r: int, y: Element, b: int) -> Element | None:
        """:meth:`combine`, computed so that :meth:`hint_of` can hand the bank the
        cheapest hint to check (modp: through the square root)."""
        return self.combine(r, y, b)

    @abstractmethod
    def combine(self, r: int, y: Element, b: int) -> Element | None:
        """``g^r · Y^b`` for public ``r``, ``b`` (the verification equation).

        Returns None when the result is the identity, which no honest ``a = g^w`` with
        ``w`` in ``[1, q)`` ever is.
        """

    @abstractmethod
    def product(self, elements: Iterable[Element]) -> Element | None:
        """The group product of ``elements``; None for the identity."""

    def public_key(self, secret: int) -> Element:
        """``P = g^-S`` (the patent's sign convention), in constant time."""
        if not 0 < secret < self.q:
            raise InvalidScalarError("a secret key is in [1, q)")
        return self.g_pow_secret(self.q - secret)

    def random_scalar(self) -> int:
        """A uniform scalar in ``[1, q)`` from the OS CSPRNG."""
        import secrets

        return secrets.randbelow(self.q - 1) + 1

    def describe(self) -> dict[str, str | None]:
        return {"suite": self.suite, "group": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.suite}, {self.name})"


# --------------------------------------------------------------------------------------
# modp
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModpParams:
    """The public parameters (p, q, g) of a Schnorr subgroup of Z_p^*."""

    name: str
    p: int
    q: int
    g: int

    def to_json(self) -> dict[str, str]:
        return {"p": format(self.p, "x"), "q": format(self.q, "x"), "g": format(self.g, "x")}

    @classmethod
    def from_json(cls, name: str, obj: object) -> ModpParams:
        if not isinstance(obj, dict):
            raise InvalidGroupError(f"group {name!r}: expected an object with p, q, g")
        try:
            return cls(name, *(int(str(obj[k]), 16) for k in ("p", "q", "g")))
        except (KeyError, ValueError) as exc:
            raise InvalidGroupError(f"group {name!r}: p, q and g must be hex strings") from exc


P_BITS: Final = 2048
Q_BITS: Final = 256
_MR_ROUNDS: Final = 64


def is_probable_prime(n: int) -> bool:
    """BPSW plus 64 random-base Miller-Rabin rounds (FIPS 186-4 C.3 asks for fewer)."""
    m = gmpy2.mpz(n)
    return bool(gmpy2.is_strong_bpsw_prp(m)) and bool(gmpy2.is_prime(m, _MR_ROUNDS))


SHIPPED_PRIMES: Final = frozenset(
    {
        # RFC 5114 section 2.3: p, q
        "19f37c31f951436e0fbcc4d6adf7718aedcd1d110896b3d940fc4c8034d4a8ee",
        "a33667d608d3e76a347c0e1dde24a271171f8f9c142107eeb08a2a489e4fbffb",
        # jointpay-secure-2048-256: p, q, h
        "36e2ddf740b95fa32a831aa29273bde1127583af03ae9b3eb396b6bf905d4100",
        "cf94b65d923229b84e2f1894b46ab621943ab801df86ad6f707ee2f8a8532025",
        "998c74b675cb5a1ae807a02a13b8786a30750399478f501fb12cc07a4848a7dd",
    }
)
"""The primes of the groups this package ships, pinned by :func:`prime_digest`: their
tests' outcome is a fact about these numbers, checked by the test suite (and from the
secure group's seed by ``tools/gen_secure_group.py --check``), so a process need not
run them again each time it starts (123 ms for a group's p and q, 90 ms for the secure
group's h). A number that differs in any bit has another digest and is tested."""


def prime_digest(n: int) -> str:
    return hashlib.sha256(
        b"jointpay/v1/shipped-prime\x00" + n.to_bytes((n.bit_length() + 7) // 8, "big")
    ).hexdigest()


def shipped_or_probable_prime(n: int) -> bool:
    """:func:`is_probable_prime`, answered at once for the shipped groups' primes
    (:data:`SHIPPED_PRIMES`). For validating parameters when a process loads them;
    generating a group, or re-deriving one from its seed, tests every number."""
    return (n > 0 and prime_digest(n) in SHIPPED_PRIMES) or is_probable_prime(n)


def validate_modp_params(params: ModpParams) -> None:
    """Check (p, q, g) as a verifier must before trusting them; raise if unfit.

    p is a 2048-bit prime, q a 256-bit prime dividing p - 1, and g an element of
    order exactly q (1 < g < p and g^q = 1; since q is prime that fixes the order).
    """
    p, q, g = params.p, params.q, params.g
    where = f"modp group {params.name!r}"
    if p.bit_length() != P_BITS:
        raise InvalidGroupError(f"{where}: p has {p.bit_length()} bits, need {P_BITS}")
    if q.bit_length() != Q_BITS:
        raise InvalidGroupError(f"{where}: q has {q.bit_length()} bits, need {Q_BITS}")
    if (p - 1) % q != 0:
        raise InvalidGroupError(f"{where}: q does not divide p - 1")
    if not 1 < g < p:
        raise InvalidGroupError(f"{where}: g is not in (1, p)")
    if pow(g, q, p) != 1:
        raise InvalidGroupError(f"{where}: g does not have order q")
    if not shipped_or_probable_prime(q):
        raise InvalidGroupError(f"{where}: q is not prime")
    if not shipped_or_probable_prime(p):
        raise InvalidGroupError(f"{where}: p is not prime")


COMB_ROWS: Final = 8
COMB_SPAN: Final = Q_BITS // COMB_ROWS
"""A card's key ``Y`` and its stored powers ``Y^(2^(32 j))``, j = 1..7 (:class:`Comb`)."""
G_COMB_ROWS: Final = 13
G_COMB_SPAN: Final = -(-Q_BITS // G_COMB_ROWS)
"""``g``'s rows in :class:`GComb`: 13 rows of 20 bits, one table of 8,191 products."""


def _bit_tables(nbytes: int, place: Callable[[int], int | None]) -> tuple[tuple[int, ...], ...]:
    """``t[k][v]``: the bits of byte value ``v`` at byte ``k`` (little-endian) of an
    exponent, each bit ``b = 8k + u`` moved to bit ``place(b)`` (None: dropped). The sum
    of ``t[k][e_k]`` over an exponent's bytes applies that bit permutation with one
    lookup a byte: 5.5 µs for a 256-bit exponent here, where spreading its eight words
    through masks took 9.5."""
    tables = []
    for k in range(nbytes):
        row = []
        for v in range(256):
            moved = 0
            for u in range(8):
                where = place(8 * k + u)
                if v >> u & 1 and where is not None:
                    moved |= 1 << where
            row.append(moved)
        tables.append(tuple(row))
    return tuple(tables)


_STEP_BITS: Final = 32
"""Each step of :class:`Comb` reads one 32-bit field: bits 0-7 the key's rows
(:data:`_Y_STEPS`), bits 8-20 ``g``'s (:class:`GComb`)."""
_Y_STEPS: Final = _bit_tables(Q_BITS // 8, lambda b: _STEP_BITS * (b % COMB_SPAN) + b // COMB_SPAN)
"""Bit ``32 j + i`` of an exponent (bit i of row j) to bit j of step field i."""
_G_STEPS: Final = _bit_tables(
    -(-G_COMB_ROWS * G_COMB_SPAN // 8),
    lambda b: (
        _STEP_BITS * (b % G_COMB_SPAN) + COMB_ROWS + b // G_COMB_SPAN
        if b < G_COMB_ROWS * G_COMB_SPAN
        else None
    ),
)
"""Bit ``20 j + i`` of an exponent (bit i of g's row j) to bit 8 + j of step field i."""
_FIELDS: Final = struct.Struct(f"<{COMB_SPAN}I")


def _moved(tables: tuple[tuple[int, ...], ...], e: int) -> int:
    """``e``'s bits moved as :func:`_bit_tables` made ``tables`` say (``e`` has at most
    as many bytes as there are tables)."""
    return sum(map(getitem, tables, e.to_bytes(len(tables), "little")))


class Comb:
    """``y^e mod p`` for ``0 <= e < 2^256`` from ``y`` and its powers ``y^(2^(32 j))``,
    j = 1..7 (Lim and Lee's comb, CRYPTO '94, with eight rows in two tables): the
    exponent's eight 32-bit words are read a bit of each at a time, and each of the 32
    steps is one squaring and at most two multiplications, by one of the 15 products of
    rows 0-3 and one of the 15 of rows 4-7 (22 multiplications to make). About 113
    multiplications and squarings in all, where an exponentiation by a 256-bit exponent
    makes 256 squarings and some 50 multiplications (measured here, the table included:
    about half the time). With :meth:`pow_with`, ``g^r`` rides on the same squarings
    (:class:`GComb`). For a public exponent and a public base (verification)."""

    __slots__ = ("high", "low", "p")

    def __init__(self, powers: Sequence[Any], p: Any) -> None:
        if len(powers) != COMB_ROWS:
            raise ValueError(f"a comb takes {COMB_ROWS} powers")
        self.p = p
        self.low = _products(powers[:4], p)
        self.high = _products(powers[4:], p)

    def pow(self, e: int) -> Any:
        if not 0 <= e < 1 << Q_BITS:
            raise ValueError("a comb exponent is in [0, 2^256)")
        return self._steps(_moved(_Y_STEPS, e), ())

    def pow_with(self, e: int, g: GComb, r: int) -> Any:
        """``y^e · g^r mod p`` (both exponents in [0, 2^256)): ``g``'s comb shares the
        squarings, and costs one multiplication in each of its last 20 steps, where
        ``g^r`` from the window table costs 32 (with the table lookups' own work, about
        20 µs less a payment, of some 330)."""
        if not (0 <= e < 1 << Q_BITS and 0 <= r < 1 << Q_BITS) or g.p != self.p:
            raise ValueError("comb exponents are in [0, 2^256), over the same p")
        return self._steps(_moved(_Y_STEPS, e) + _moved(_G_STEPS, r), g.table)

    def _steps(self, steps: int, g_table: Sequence[Any]) -> Any:
        """The 32 steps, from the top bit of the rows down: a squaring, then the key's
        two products and ``g``'s (:data:`_STEP_BITS`) that the step's field names."""
        p, low, high = self.p, self.low, self.high
        acc = gmpy2.mpz(1)  # squaring it while the leading steps are zero costs little
        for field in reversed(_FIELDS.unpack(steps.to_bytes(_FIELDS.size, "little"))):
            acc = acc * acc % p
            m = field & 15
            if m:
                acc = acc * low[m] % p
            m = field >> 4 & 15
            if m:
                acc = acc * high[m] % p
            m = field >> COMB_ROWS
            if m:
                acc = acc * g_table[m] % p
        return acc


class GComb:
    """``g``'s half of :meth:`Comb.pow_with`: the products of ``g``'s 13 rows
    ``g^(2^(20 j))``, 8,191 of them (about 2 MB, 17 to 30 ms to make once a process), so
    that each of the comb's last 20 steps reads 13 bits of ``r`` with one
    multiplication. A group builds it on first use (:attr:`ModpGroup.g_comb`)."""

    __slots__ = ("p", "table")

    def __init__(self, g: Any, p: Any) -> None:
        self.p = p
        self.table = _products(comb_powers(g, p, G_COMB_ROWS, G_COMB_SPAN), p)


def _products(rows: Sequence[Any], p: Any) -> list[Any]:
    """``t[m]`` = the product of the ``rows`` whose bit is set in ``m`` (one
    multiplication each but for the rows themselves: 11 for four rows)."""
    table: list[Any] = [gmpy2.mpz(1)] * (1 << len(rows))
    for m in range(1, len(table)):
        low = m & -m
        row = rows[low.bit_length() - 1]
        table[m] = row if m == low else table[m ^ low] * row % p
    return table


def comb_powers(y: Any, p: Any, rows: int = COMB_ROWS, span: int = COMB_SPAN) -> list[Any]:
    """``[y, y^(2^span), ..., y^(2^(span (rows - 1)))]``, a comb's rows: by default what
    :class:`Comb` needs of a card's key (224 squarings, once a card); :class:`GComb`'s
    for ``g``."""
    out = [gmpy2.mpz(y)]
    for _ in range(rows - 1):
        out.append(gmpy2.powmod(out[-1], 1 << span, p))
    return out


class FixedBase:
    """``base^e mod p`` for many ``e < 2^bits``: a table of ``base^(d * 2^(w*j))``."""

    def __init__(self, base: Any, p: Any, *, bits: int = 256, w: int = 8) -> None:
        self.p = gmpy2.mpz(p)
        self.w = w
        self.mask = (1 << w) - 1
        self.windows = -(-bits // w)
        self.bits = bits
        rows: list[list[Any]] = []
        step = gmpy2.mpz(base) % self.p
        one = gmpy2.mpz(1)
        for _ in range(self.windows):
            row = [one, step]
            for _ in range(2, 1 << w):
                row.append(row[-1] * step % self.p)
            rows.append(row)
            step = row[-1] * step % self.p  # base^(2^(w*(j+1)))
        self.rows = rows

    def pow(self, e: int) -> Any:
        if e < 0 or e.bit_length() > self.bits:
            return gmpy2.powmod(self.rows[0][1], e, self.p)
        acc = gmpy2.mpz(1)
        p, mask, w, rows = self.p, self.mask, self.w, self.rows
        j = 0
        while e:
            d = e & mask
            if d:
                acc = acc * rows[j][d] % p
            e >>= w
            j += 1
        return acc


class ModpGroup(Group):
    """The order-q subgroup of Z_p^* for validated (p, q, g)."""

    suite = SUITE_MODP
    element_len = P_BITS // 8
    _CACHE_SIZE: Final = 4096

    def __init__(self, params: ModpParams) -> None:
        validate_modp_params(params)
        self.params = params
        self.name = params.name
        self.q = params.q
        self._p = gmpy2.mpz(params.p)
        self._q = gmpy2.mpz(params.q)
        self._g = gmpy2.mpz(params.g)
        self._one = gmpy2.mpz(1)
        n = self.element_len
        # (1, p) as encodings: equal-length big-endian byte strings compare as numbers
        self._enc_one, self._enc_p = (1).to_bytes(n, "big"), params.p.to_bytes(n, "big")
        # Validating Y costs one full exponentiation (Y^q = 1), as much as half a
        # verification. Keys repeat (a card signs many payments), so remember the ones
        # already checked. Only valid encodings are cached.
        self._valid: OrderedDict[bytes, Element] = OrderedDict()
        self._valid_lock = threading.Lock()  # a server's deposits share the group
        self._g_table: FixedBase | None = None
        self._g_comb: GComb | None = None

    @property
    def g_comb(self) -> GComb:
        """``g``'s table for :meth:`Comb.pow_with`, built on first use (17 to 30 ms)."""
        if self._g_comb is None:
            self._g_comb = GComb(self._g, self._p)
        return self._g_comb

    @property
    def has_g_comb(self) -> bool:
        """Whether :attr:`g_comb` is built already."""
        return self._g_comb is not None

    @property
    def has_g_table(self) -> bool:
        """Whether :attr:`g_table` is built already."""
        return self._g_table is not None

    @property
    def g_table(self) -> FixedBase:
        """A window table for ``g`` (w = 8, about 2 MB), built on first use: g^r for a
        public r in 32 multiplications instead of a full exponentiation."""
        if self._g_table is None:
            self._g_table = FixedBase(self._g, self._p, bits=Q_BITS, w=8)
        return self._g_table

    @property
    def p(self) -> int:
        return self.params.p

    @property
    def g(self) -> int:
        return self.params.g

    def _wrap(self, value: Any) -> Element:
        return Element(self, value, self.encode_value(value))

    def native_of(self, data: bytes) -> Any:
        return gmpy2.mpz(int.from_bytes(data, "big"))  # known: validated when stored

    def encode_value(self, value: Any) -> bytes:
        """``enc`` of a residue: ``element_len`` bytes, big-endian."""
        return int(value).to_bytes(self.element_len, "big")

    def key_powers(self, y: Element) -> bytes:
        """``enc(Y^(2^32)) || enc(Y^(2^64)) || ... || enc(Y^(2^224))`` for a validated key
        ``y``: what a bank stores beside a card's certificate so that :meth:`comb`
        can raise ``Y`` to a payment's ``b`` (224 squarings, once a card)."""
        if y.group is not self:
            raise InvalidElementError("the key is not an element of this group")
        powers = comb_powers(y.native, self._p)
        return b"".join(self.encode_value(v) for v in powers[1:])

    def comb(self, y: Element, powers: bytes) -> Comb | None:
        """A :class:`Comb` for ``y`` from its :meth:`key_powers`; None for anything
        else than seven residues in ``(1, p)``. The bytes are the bank's own, stored
        beside the certificate whose key it validated (like ``known``): their
        relation to ``y`` is not checked again (that would cost what the comb saves)."""
        rows = self.key_rows(y.native, powers)
        return None if rows is None else Comb(rows, self._p)

    def key_rows(self, y: Any, powers: bytes) -> list[Any] | None:
        """``[y, y^(2^32), ..., y^(2^224)]`` from ``y`` (a number: an element's
        ``native``) and its :meth:`key_powers`: a
        :class:`Comb`'s rows, or the bases that stand for ``y`` in a
        multi-exponentiation with its exponent cut into eight 32-bit words; None as in
        :meth:`comb`."""
        n = self.element_len
        if len(powers) != (COMB_ROWS - 1) * n:
            return None
        values = [
            gmpy2.mpz(int.from_bytes(powers[i : i + n], "big")) for i in range(0, len(powers), n)
        ]
        if not all(1 < v < self._p for v in values):
            return None
        return [gmpy2.mpz(y), *values]

    def decode(self, data: bytes, *, known: bool = False) -> Element:
        if not isinstance(data, bytes) or len(data) != self.element_len:
            got = len(data) if isinstance(data, bytes) else type(data).__name__
            raise InvalidElementError(
                f"a {self.suite} element is exactly {self.element_len} bytes, got {got}"
            )
        if known:  # the subgroup test was passed when the bytes were stored
            if not self._enc_one < data < self._enc_p:
                raise InvalidElementError("element is not in (1, p)")
            return Element(self, None, data)  # parsed on first use (a deposit: mostly never)
        with self._valid_lock:
            hit = self._valid.get(data)
            if hit is not None:
                self._valid.move_to_end(data)
                return hit
        y = gmpy2.mpz(int.from_bytes(data, "big"))
        if not self._one < y < self._p:
            raise InvalidElementError("element is not in (1, p)")
        if gmpy2.powmod(y, self._q, self._p) != self._one:
            raise InvalidElementError("element is not in the order-q subgroup")
        element = Element(self, y, data)
        with self._valid_lock:
            self._valid[data] = element
            while len(self._valid) > self._CACHE_SIZE:
                self._valid.popitem(last=False)
        return element

    def g_pow_secret(self, k: int) -> Element:
        if not 0 < k < self.q:
            raise InvalidScalarError("secret exponent out of [1, q)")
        return self._wrap(gmpy2.powmod_sec(self._g, gmpy2.mpz(k), self._p))

    def g_pow(self, k: int) -> Element | None:
        v = self.g_table.pow(k % self.q)  # g has order q
        return None if v == self._one else self._wrap(v)

    def combine(self, r: int, y: Element, b: int) -> Element | None:
        p = self._p
        v = self.g_table.pow(r % self.q) * gmpy2.powmod(y.native, b, p) % p
        return None if v == self._one else self._wrap(v)

    def combine_rooted(self, r: int, y: Element, b: int) -> Element | None:
        """``g^r · Y^b`` computed as ``s^2`` with ``s = g^(r/2) · Y^(b/2)`` (halves mod
        q: g and Y have the odd order q, so ``s^2`` is the same element), for one
        squaring more than :meth:`combine`. ``s`` is kept: a terminal hands it to the
        bank as its hint, which proves ``a'`` a quadratic residue by one squaring where
        a Legendre symbol costs four times as much (crypto.md)."""
        p, q = self._p, self.q
        half = (q + 1) // 2
        s = self.g_table.pow(r * half % q) * gmpy2.powmod(y.native, b * half % q, p) % p
        v = s * s % p
        if v == self._one:
            return None
        return RootedElement(self, v, self.encode_value(v), s)

    def hint_of(self, a: Element) -> bytes:
        if isinstance(a, RootedElement):
            return ROOT_HINT_TAG + self.encode_value(a.root)
        return a.encoded

    def product(self, elements: Iterable[Element]) -> Element | None:
        v = self._one
        for e in elements:
            v = v * e.native % self._p
        return None if v == self._one else self._wrap(v)


# --------------------------------------------------------------------------------------
# secp256k1
# --------------------------------------------------------------------------------------

SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_P: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F


class Secp256k1Group(Group):
    """SEC 2 secp256k1 through libsecp256k1 (coincurve)."""

    suite = SUITE_SECP256K1
    name = None
    q = SECP256K1_N
    element_len = 33

    def decode(self, data: bytes, *, known: bool = False) -> Element:
        # a point's decoding is its validation. ``known`` (bytes validated and stored
        # before, such as the CARD-CERTs a bank reads back for a deposit of 10,000
        # cards) defers the parse to the point's first use: most are never used.
        if not isinstance(data, bytes) or len(data) != self.element_len:
            got = len(data) if isinstance(data, bytes) else type(data).__name__
            raise InvalidElementError(
                f"a {self.suite} point is a 33-byte compressed SEC1 encoding, got {got}"
            )
        if data[0] not in (2, 3):
            raise InvalidElementError("a secp256k1 point must start with 02 or 03")
        if int.from_bytes(data[1:], "big") >= SECP256K1_P:
            raise InvalidElementError("x coordinate is not below the field prime")
        return Element(self, None if known else self.native_of(data), data)

    def native_of(self, data: bytes) -> _CurvePoint:
        try:
            return _CurvePoint(data)
        except (ValueError, TypeError) as exc:
            raise InvalidElementError("not a point on secp256k1") from exc

    def _wrap(self, point: _CurvePoint) -> Element:
        return Element(self, point, point.format(compressed=True))

    def g_pow_secret(self, k: int) -> Element:
        if not 0 < k < self.q:
            raise InvalidScalarError("secret exponent out of [1, q)")
        return self._wrap(_CurvePoint.from_secret(k.to_bytes(32, "big")))

    def g_pow(self, k: int) -> Element | None:
        k %= self.q
        if k == 0:
            return None
        return self._wrap(_CurvePoint.from_secret(k.to_bytes(32, "big")))

    def combine(self, r: int, y: Element, b: int) -> Element | None:
        r %= self.q
        b %= self.q
        if b == 0:
            return self.g_pow(r)
        fast = _recover_combination(r, y.encoded, b)
        if fast is not None:
            return self._wrap(fast)
        yb = y.native.multiply(b.to_bytes(32, "big"))
        if r == 0:
            return self._wrap(yb)
        try:
            return self._wrap(
                _CurvePoint.combine_keys([_CurvePoint.from_secret(r.to_bytes(32, "big")), yb])
            )
        except ValueError:
            return None  # r·G = -b·Y: the sum is the point at infinity

    def hint_of(self, a: Element) -> bytes:
        return bytes(a.native.format(compressed=False))

    def hint_encoding(self, data: bytes) -> bytes | None:
        """The compressed encoding (the one the challenge hashes) of the point a hint
        names, without reading the point: the hint itself if compressed; for an
        uncompressed ``04 || x || y``, the prefix of y's parity and x. None for any
        other shape. Whether the point is on the curve is :meth:`hint_point`'s to say."""
        if len(data) == 33 and data[0] in (2, 3):
            return data
        if len(data) == 65 and data[0] == 4:
            return bytes((2 | (data[64] & 1),)) + data[1:33]
        return None

    def hint_point(self, data: bytes, *, shape_checked: bool = False) -> _CurvePoint | None:
        """The point a terminal's untrusted hint names, SEC1 compressed (33 bytes) or
        uncompressed (65 bytes, ``04 || x || y``), or None when it names none: the
        batch test then leaves it out (that payment is verified strictly).

        The uncompressed form costs a check of the curve equation (0.8 µs here), the
        compressed one a square root (6.4 µs): terminals send the former
        (:meth:`hint_of`). Hybrid encodings (06, 07) are refused. ``shape_checked``: the
        caller had :meth:`hint_encoding` accept ``data`` already."""
        if not shape_checked and self.hint_encoding(data) is None:
            return None
        try:
            return _CurvePoint(data)
        except (ValueError, TypeError):
            return None

    @staticmethod
    def weighted_sum(points: Sequence[_CurvePoint], weights: Sequence[int]) -> bytes | None:
        """The encoding of ``sum weights[i]·points[i]`` for public weights in [0, 2^256);
        None for the point at infinity.

        Variable time, for public data only (the batch test's hints and exponents). A
        multiplication per point would cost about half a verification each. Here the
        weights are cut into 2-bit digits, and for each digit position the points are
        sorted into three buckets (digits 1, 2 and 3) that libsecp256k1 adds up in one
        call each (``combine_keys``); then ``W = B1 + 2·B2 + 3·B3`` and, from the top
        position down, ``R = 4·R + W``. A point costs about 0.75 additions per 2 bits
        of its weight: 24 for a 64-bit weight, against some 80 point operations for a
        multiplication, and the sorting is done by C loops over bytes.
        """
        if len(points) != len(weights):
            raise ValueError("one weight per point")
        if any(not 0 <= w < 1 << 256 for w in weights):
            raise ValueError("weights are in [0, 2^256)")
        top = max(weights, default=0).bit_length()
        width = (top + 7) // 8 or 1  # bytes of the widest weight
        # byte k of every weight, then digit m of that byte, selected by a C loop
        digits = b"".join(w.to_bytes(width, "little") for w in weights)
        total: _CurvePoint | None = None
        for pos in reversed(range((top + 1) // 2)):
            column = digits[pos // 4 :: width]
            terms: list[_CurvePoint] = []
            for d in (1, 2, 3):
                bucket = _sum_or_none(list(compress(points, column.translate(_DIGIT[pos % 4][d]))))
                if bucket is not None:
                    terms += [bucket] * d
            if total is not None:
                terms += [total] * 4
            total = _sum_or_none(terms)
        return None if total is None else bytes(total.format(compressed=True))

    @staticmethod
    def point_sum(points: Sequence[_CurvePoint]) -> bytes | None:
        """The encoding of the sum of ``points``; None for the point at infinity."""
        if not points:
            return None
        if len(points) == 1:
            return bytes(points[0].format(compressed=True))
        try:
            return bytes(_CurvePoint.combine_keys(list(points)).format(compressed=True))
        except ValueError:
            return None

    def product(self, elements: Iterable[Element]) -> Element | None:
        points = [e.native for e in elements]
        if not points:
            return None
        if len(points) == 1:
            return self._wrap(points[0])
        try:
            return self._wrap(_CurvePoint.combine_keys(points))
        except ValueError:
            return None


def _recovery_x(y_enc: bytes) -> int | None:
    """``x(Y)`` when ``Y`` can pose as an ECDSA ``R``; else None."""
    rx = int.from_bytes(y_enc[1:], "big")
    if not 0 < rx < SECP256K1_N:
        return None  # x(Y) >= n (probability ~2^-128): cannot be an ECDSA r value
    return rx


def _recover_combination(r: int, y_enc: bytes, b: int) -> _CurvePoint | None:
    """``r·G + b·Y`` through libsecp256k1's ECDSA public-key recovery.

    Recovery computes ``Q = x(R)^-1 · (s·R - z·G)`` with one variable-time
    double-scalar multiplication (Strauss-wNAF), which the public API does not
    otherwise expose. Taking ``R = Y``, ``s = b·x(Y)`` and ``z = -r·x(Y)`` gives
    ``Q = b·Y + r·G`` exactly. Returns None where the trick does not apply (``b = 0``,
    ``x(Y) >= n``) or the result is the identity; the caller then takes the plain path,
    which decides those cases itself.
    """
    rx = _recovery_x(y_enc)
    if rx is None:
        return None
    n = SECP256K1_N
    s = b * rx % n
    z = -r * rx % n
    sig = rx.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes((y_enc[0] - 2,))
    try:
        return _CurvePoint.from_signature_and_message(sig, z.to_bytes(32, "big"), hasher=None)
    except ValueError:
        return None


def _sum_or_none(points: list[_CurvePoint]) -> _CurvePoint | None:
    """The sum of ``points`` (None if there are none, or they add up to infinity)."""
    if not points:
        return None
    try:
        return _CurvePoint.combine_keys(points)
    except ValueError:  # libsecp256k1's answer for the point at infinity
        return None


_DIGIT: Final = tuple(
    tuple(bytes(1 if (v >> (2 * m)) & 3 == d else 0 for v in range(256)) for d in range(4))
    for m in range(4)
)
"""``_DIGIT[m][d]`` maps a byte to 1 where its m-th 2-bit digit is d, else 0 (for
``bytes.translate``: a selector of ``itertools.compress``)."""

# --------------------------------------------------------------------------------------
# the registry
# --------------------------------------------------------------------------------------

_RFC5114_2_3: Final = ModpParams(
    DEFAULT_MODP_GROUP,
    p=int(
        "87A8E61DB4B6663CFFBBD19C651959998CEEF608660DD0F25D2CEED4435E3B00E00DF8F1D61957D4"
        "FAF7DF4561B2AA3016C3D91134096FAA3BF4296D830E9A7C209E0C6497517ABD5A8A9D306BCF67ED"
        "91F9E6725B4758C022E0B1EF4275BF7B6C5BFC11D45F9088B941F54EB1E59BB8BC39A0BF12307F5C"
        "4FDB70C581B23F76B63ACAE1CAA6B7902D52526735488A0EF13C6D9A51BFA4AB3AD8347796524D8E"
        "F6A167B5A41825D967E144E5140564251CCACB83E6B486F6B3CA3F7971506026C0B857F689962856"
        "DED4010ABD0BE621C3A3960A54E710C375F26375D7014103A4B54330C198AF126116D2276E11715F"
        "693877FAD7EF09CADB094AE91E1A1597",
        16,
    ),
    q=int("8CF83642A709A097B447997640129DA299B1A47D1EB3750BA308B0FE64F5FBD3", 16),
    g=int(
        "3FB32C9B73134D0B2E77506660EDBD484CA7B18F21EF205407F4793A1A0BA12510DBC15077BE463F"
        "FF4FED4AAC0BB555BE3A6C1B0C6B47B1BC3773BF7E8C6F62901228F8C28CBB18A55AE31341000A65"
        "0196F931C77A57F2DDF463E5E9EC144B777DE62AAAB8A8628AC376D282D6ED3864E67982428EBC83"
        "1D14348F6F2F9193B5045AF2767164E1DFC967C1FB3F2E55A4BD1BFFE83B9C80D052B985D182EA0A"
        "DB2A3B7313D3FE14C8484B1E052588B9B7D2BBD2DF016199ECD06E1557CD0915B3353BBB64E0EC37"
        "7FD028370DF92B52C7891428CDC67EB6184B523D1DB246C32F63078490F00EF8D647D148D4795451"
        "5E2327CFEF98C582664B4C0F6CC41659",
        16,
    ),
)


def load_group_folder(folder: Traversable) -> dict[str, ModpParams]:
    """The named modp groups of a folder of JSON files (keys name, p, q, g as hex)."""
    out: dict[str, ModpParams] = {}
    if not folder.is_dir():
        return out
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            doc = json.loads(entry.read_text(encoding="utf-8"))
            name = str(doc["name"])
            out[name] = ModpParams.from_json(name, doc)
    return out


@functools.cache
def named_modp_groups() -> dict[str, ModpParams]:
    """RFC 5114 section 2.3 and the groups shipped in ``jointpay/crypto/groups/``."""
    shipped = load_group_folder(resources.files("jointpay.crypto").joinpath("groups"))
    return {DEFAULT_MODP_GROUP: _RFC5114_2_3, **shipped}


@functools.lru_cache(maxsize=64)
def _modp_group(params: ModpParams) -> ModpGroup:
    return ModpGroup(params)


_SECP256K1: Final = Secp256k1Group()


def modp_group(params: ModpParams) -> ModpGroup:
    """A validated group for ``params``; validation runs once per distinct parameter set."""
    return _modp_group(params)


def get_group(suite: str, group: str | None = None) -> Group:
    """The group of ``suite``; for modp, ``group`` names a shipped parameter set."""
    if suite == SUITE_SECP256K1:
        if group not in (None, ""):
            raise InvalidGroupError("secp256k1 takes no group name")
        return _SECP256K1
    if suite == SUITE_MODP:
        name = group or DEFAULT_MODP_GROUP
        groups = named_modp_groups()
        if name not in groups:
            raise InvalidGroupError(
                f"unknown modp group {name!r}; known: {', '.join(sorted(groups))}"
            )
        return modp_group(groups[name])
    raise InvalidGroupError(f"unknown suite {suite!r}; known: {', '.join(SUITES)}")


def group_for(suite: str, params: ModpParams | None) -> Group:
    """The group for a suite and explicit (already published) modp parameters."""
    if suite == SUITE_MODP and params is not None:
        return modp_group(params)
    return get_group(suite, None)


GroupResolver = Callable[[str, str | None], Group]


def resolver(extra: Mapping[str, ModpParams]) -> GroupResolver:
    """A group lookup that knows ``extra`` modp groups (a bank's own) besides the shipped."""

    def resolve(suite: str, name: str | None) -> Group:
        if suite == SUITE_MODP and name is not None and name in extra:
            return modp_group(extra[name])
        return get_group(suite, name)

    return resolve


@functools.lru_cache(maxsize=64)
def params_digest(group: Group) -> bytes:
    """A 32-byte fingerprint of the group's parameters (for certificates).

    Cached per group object (groups are immutable): every CARD-CERT decoded or
    encoded names its group by this digest."""
    if isinstance(group, ModpGroup):
        w = group.params
        data = (
            b"modp" + w.p.to_bytes(256, "big") + w.q.to_bytes(32, "big") + w.g.to_bytes(256, "big")
        )
    else:
        data = group.suite.encode()
    return hashlib.sha256(b"jointpay/v1/group-params\x00" + data).digest()


__all__ = [
    "DEFAULT_MODP_GROUP",
    "SCALAR_LEN",
    "SUITES",
    "SUITE_MODP",
    "SUITE_SECP256K1",
    "DecodeError",
    "Element",
    "Group",
    "ModpGroup",
    "ModpParams",
    "Secp256k1Group",
    "get_group",
    "group_for",
    "is_probable_prime",
    "modp_group",
    "named_modp_groups",
    "params_digest",
    "shipped_or_probable_prime",
    "validate_modp_params",
]
