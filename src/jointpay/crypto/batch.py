"""Fast verification of many PAYMENT-CERTs, with exactly the strict rule's answers.

Three tools, all on public data only, so variable time is fine. For modp:

* :class:`FixedBase`, a window table for a base used with many exponents: ``g`` (once
  per group and process), or a card's ``Y`` when that card has many payments in a
  batch. ``g^r`` then costs 256/w multiplications instead of a full exponentiation.
* :func:`verify_batch`, the small-exponent batch test (Bellare, Garay, Rabin,
  EUROCRYPT 1998) over the terminal's hints ``a'``, for **secure** groups only
  (p = 2qh + 1 with q and h prime, see :func:`secure_cofactor`).

Soundness, in short (docs/crypto.md has the argument in full): each payment's hint
``A`` must hash to its ``b`` (checked one by one, so ``A`` is the only value that can
make the strict check pass) and be a quadratic residue (Legendre symbol 1, or given as
the square of a root the hint carries; so ``A`` lies in the subgroup of order qh,
which has no element of small order). With
``d_i = A_i / (g^r_i Y_i^b_i)`` in that subgroup, the batch equation
``prod A_i^z_i = g^(sum z_i r_i) prod_Y Y^(sum z_i b_i)`` says ``prod d_i^z_i = 1``; for
fresh uniform ``z_i`` in [1, 2^w] it holds while some ``d_i != 1`` with probability at
most 2^-w, because every non-trivial ``d_i`` has order q, h or qh, all above 2^128
(and w <= 128). So a passing equation has ``A_i = g^r_i Y_i^b_i`` for every i, which
with the hash check is the strict rule. A deposit evaluates many equations (one per
chunk and kind, more under bisection), and CONTRACT section 2 bounds the error per
deposit, so w grows with the deposit's size (:func:`z_widths`): the union bound over
every equation a deposit can evaluate is at most 2^-64. On the RFC 5114 group
(p - 1)/q has small factors and a hint with a small-order component would pass with
probability 1/d (Boyd and Pavlovski, 2000): there, and for payments without a usable
hint, every payment is verified strictly.

* :func:`verify_batch_secp256k1`, the same test on secp256k1, for cards with several
  payments in one batch. The group has prime order n and no cofactor, so the test is
  exact as it is: a nonzero ``d_i = A_i - (r_i·G + b_i·Y_i)`` has order n > 2^128. The
  sum of the ``z_i·A_i`` costs about 0.75 point additions a payment per 2 bits of z_i
  (24 for 64 bits; a bucket method, :meth:`Secp256k1Group.weighted_sum`; a third of a
  verification), and each card one ``r·G + b·Y``.

A failing batch is split in halves until the bad payments are found; small pieces
are verified strictly, so every payment gets the strict rule's answer.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, Final, Literal, NamedTuple

import gmpy2

from jointpay.crypto.errors import CryptoError
from jointpay.crypto.group import (
    COMB_ROWS,
    COMB_SPAN,
    Q_BITS,
    ROOT_HINT_TAG,
    Comb,
    FixedBase,
    Group,
    ModpGroup,
    ModpParams,
    Secp256k1Group,
    shipped_or_probable_prime,
)
from jointpay.crypto.schnorr import (
    MAX_SER,
    PAYMENT_TAG,
    PaymentCert,
    challenge,
    challenge_after,
    challenge_prefix,
    verify,
)

SOUNDNESS_BITS: Final = 64
"""CONTRACT section 2: a deposit's accepted set is the strict rule's except with
probability at most 2^-64 (:func:`z_widths` shares that among its equations)."""
Z_BITS_MAX: Final = 128
"""The widest random exponent :func:`z_widths` gives (deposits of up to 2^63
payments); :func:`secure_cofactor` asks q and h to be above 2^128."""
STRICT_BELOW: Final = 4
"""Pieces this small (after bisection) are verified payment by payment."""
G_COMB_MIN: Final = 1024
"""Payments verified at once from which :func:`verify_with_card_tables` builds ``g``'s
comb (:attr:`ModpGroup.g_comb`) if the group has none yet."""


@lru_cache(maxsize=32)
def secure_cofactor(params: ModpParams) -> int | None:
    """``h`` if p = 2qh + 1 with q and h primes above 2^128 (the only elements of small
    order are then 1 and -1, and every other element's order exceeds 2^w for any width
    w of :func:`z_widths`); None otherwise (the batch test is not used on such groups)."""
    p, q = params.p, params.q
    h = (p - 1) // (2 * q)  # exact: q is an odd prime dividing the even p - 1
    too_small = min(h, q).bit_length() <= Z_BITS_MAX
    if too_small or h == q or not shipped_or_probable_prime(h):
        return None
    return h


class ZWidths(NamedTuple):
    """Bits of the random exponents of one batch call (:func:`z_widths`)."""

    first: int
    """For the call's first equation, over all its batched payments."""
    bisect: int
    """For every equation made while bisecting a failed one."""


def z_widths(items: int, deposit: int | None = None) -> ZWidths:
    """The exponent widths for a batch call over ``items`` payments out of a deposit of
    ``deposit`` payments in all (default: the call is the whole deposit), such that the
    deposit is wrongly accepted with probability at most 2^-64 (CONTRACT section 2).

    An equation over z uniform in [1, 2^w] passes with some payment invalid with
    probability at most 2^-w, fresh z each time, so the deposit's error is at most the
    sum of 2^-w over the equations it can evaluate (the union bound). With n the
    deposit's size, n >= sum of the calls' ``items`` m:

    * each call's first equation gets ``65 + ceil(log2(n / m))`` bits, at most
      ``2^-65 · m / n``; the calls' m add up to at most n, so their firsts to at most
      2^-65, however a deposit is cut into chunks and a chunk into groups;
    * a part of s >= STRICT_BELOW payments makes at most s/2 - 1 equations, bisection
      included (true for 4 to 7, whose halves make at most one; above, by induction
      over the halves), so a call's bisection makes fewer than m/2 and the deposit's
      fewer than n/2, each with ``64 + ceil(log2(n))`` bits: at most 2^-65 together.

    For a deposit of 100,000 in chunks of 512: 73 bits for a full chunk's equation, 81
    while bisecting."""
    m = max(items, 1)
    n = max(m, deposit or 0)
    first = SOUNDNESS_BITS + 1 + ((n - 1) // m).bit_length()  # 2^k >= ceil(n / m)
    bisect = SOUNDNESS_BITS + (n - 1).bit_length()  # 2^k >= n
    if max(first, bisect) > Z_BITS_MAX:
        raise ValueError(f"a deposit of {n} payments is beyond the batch test's exponents")
    return ZWidths(first, bisect)


def multi_pow(bases: Sequence[Any], exps: Sequence[int], p: Any) -> Any:
    """``prod bases[i]^exps[i] mod p`` by Pippenger's bucket method (public inputs)."""
    n = len(bases)
    if n == 0:
        return gmpy2.mpz(1)
    if n < 8:
        acc = gmpy2.mpz(1)
        for b, e in zip(bases, exps, strict=True):
            acc = acc * gmpy2.powmod(b, e, p) % p
        return acc
    bits = max(e.bit_length() for e in exps)
    c = _window(n, bits)
    mask = (1 << c) - 1
    one = gmpy2.mpz(1)
    acc = one
    for shift in range(((bits + c - 1) // c - 1) * c, -1, -c):
        if acc != one:
            for _ in range(c):
                acc = acc * acc % p
        buckets: list[Any] = [None] * (mask + 1)
        for b, e in zip(bases, exps, strict=True):
            d = (e >> shift) & mask
            if d:
                cur = buckets[d]
                buckets[d] = b if cur is None else cur * b % p
        running = one
        total = one
        for d in range(mask, 0, -1):  # sum_d d * bucket[d] as a running product
            bd = buckets[d]
            if bd is not None:
                running = running * bd % p
            if running != one:
                total = total * running % p
        if total != one:
            acc = acc * total % p
    return acc


@lru_cache(maxsize=256)
def _window(n: int, bits: int) -> int:
    """The window width that makes :func:`multi_pow` cheapest for ``n`` bases of
    ``bits``-bit exponents: per window, ``n`` multiplications into the buckets (a zero
    digit adds nothing), two per bucket to sum them, and ``c`` squarings. (A width of
    ``log2(n) - 2`` cost 15 % more at 512 bases, for 64-bit and for 256-bit exponents.)"""

    def cost(c: int) -> float:
        return -(-bits // c) * (n * (1 - 2.0**-c) + 2 * ((1 << c) - 1) + c)

    return min(range(1, 17), key=cost)


def _in_range(c: PaymentCert, q: int) -> bool:
    """CONTRACT section 2's range rules, which strict verification refuses outside."""
    return 0 <= c.b < q and 0 < c.r < q and 0 <= c.ser <= MAX_SER


class Item(NamedTuple):
    """One payment to verify: the card's key (encoded, already validated), the
    certificate and the terminal's hint (untrusted; may be empty). A named tuple: one
    is made per payment, and a frozen dataclass costs six times as much to build."""

    y_enc: bytes
    cert: PaymentCert
    hint: bytes = b""
    known: bool = False
    """Y was validated when its CARD-CERT was issued and stored (see ``Group.decode``)."""
    powers: bytes = b""
    """modp: Y's comb powers, stored by the bank with that certificate (``known`` only;
    see :meth:`ModpGroup.comb`)."""


def verify_with_card_tables(group: ModpGroup, items: Sequence[Item], min_uses: int) -> list[bool]:
    """The strict rule, item by item, computing each ``Y^b`` with a window table for a
    card's Y that has at least ``min_uses`` payments here, else by a comb where the
    bank stored Y's powers (:meth:`ModpGroup.comb`; then with ``g^r`` on the same
    squarings, :meth:`Comb.pow_with`), else by exponentiation (any modp group: no batch
    test involved)."""
    uses: dict[bytes, int] = {}
    for it in items:
        uses[it.y_enc] = uses.get(it.y_enc, 0) + 1
    tables: dict[bytes, FixedBase | Comb | None] = {}
    out: list[bool] = []
    p, q = gmpy2.mpz(group.p), group.q
    # g^r on the combs' squarings: a worker's group has it built; in process, worth
    # its 30 ms from about a thousand payments
    g_comb = group.g_comb if group.has_g_comb or len(items) >= G_COMB_MIN else None
    for it in items:
        table = tables.get(it.y_enc, _UNMADE)
        if table is _UNMADE:
            table = tables[it.y_enc] = _key_table(group, it, uses[it.y_enc] >= min_uses)
        if table is None:
            out.append(verify_strict(group, it))
            continue
        c = it.cert
        if not _in_range(c, q):
            out.append(False)
            continue
        if g_comb is not None and isinstance(table, Comb):
            v = table.pow_with(c.b, g_comb, c.r)
        else:
            v = group.g_table.pow(c.r) * table.pow(c.b) % p
        if v == 1:
            out.append(False)
            continue
        a_enc = group.encode_value(v)
        out.append(challenge(group, PAYMENT_TAG, it.y_enc, c.ser, c.spec, a_enc) == c.b)
    return out


_UNMADE: Final[Any] = object()


def _key_table(group: ModpGroup, it: Item, many: bool) -> FixedBase | Comb | None:
    """How :func:`verify_with_card_tables` raises this card's Y: a window table for
    ``many`` payments, a comb from the stored powers, or None (strict verification,
    which also refuses a Y that does not decode)."""
    if not many and not (it.known and it.powers):
        return None
    try:
        y = group.decode(it.y_enc, known=it.known)
    except CryptoError:
        return None
    if many:
        return FixedBase(y.native, group.p, bits=Q_BITS, w=4)
    return group.comb(y, it.powers)


def verify_strict(group: Group, item: Item) -> bool:
    try:
        verify(group, group.decode(item.y_enc, known=item.known), item.cert)
    except CryptoError:
        return False
    return True


def verify_batch(
    group: ModpGroup, items: Sequence[Item], *, deposit: int | None = None, draw: Any = None
) -> list[bool]:
    """The strict rule's answer for every item, using the batch test where it is exact.

    ``deposit``: the number of payments in the deposit these items are part of (each
    payment of it in at most one call); the exponents' widths follow from it and from
    ``len(items)`` (:func:`z_widths`). Left out, the items are the whole deposit.
    ``draw(bits)`` gives the random exponents (the OS CSPRNG by default; tests pass a
    seeded one only to replay a case, never in production).
    """
    if secure_cofactor(group.params) is None:
        return [verify_strict(group, it) for it in items]
    widths = z_widths(len(items), deposit)
    rand = draw if draw is not None else secrets.randbits
    out: list[bool | None] = [None] * len(items)
    ready: list[tuple[int, Any, Any]] = []  # (index, A, Y) that passed the single checks
    p = gmpy2.mpz(group.p)
    q = group.q
    cards = _Cards(group)
    for i, it in enumerate(items):
        checked = _single_checks(group, it, p, q, cards)
        if checked is None:
            out[i] = verify_strict(group, it)  # no usable hint: the strict rule itself
        elif checked is False:
            out[i] = False  # the certificate breaks a range rule: strict refuses it too
        else:
            ready.append((i, checked[0], checked[1]))
    _bisect(group, items, ready, out, p, widths, rand, cards)
    return [bool(v) for v in out]


class _Cards:
    """What the payments of one card share in a batch, made at its first: the
    challenge's hash fed with the card's part (:func:`challenge_prefix`; both batch
    tests), its ``Y`` as a number (None if it does not decode; modp), and the powers
    of ``Y`` the bank stored with its certificate (:meth:`ModpGroup.key_rows`)."""

    __slots__ = ("group", "keys", "prefixes", "rows_of")

    def __init__(self, group: Group) -> None:
        self.group = group
        self.prefixes: dict[bytes, Any] = {}
        self.keys: dict[tuple[bytes, bool], Any] = {}
        self.rows_of: dict[bytes, list[Any] | None] = {}

    def rows(self, group: ModpGroup, it: Item, y: Any) -> list[Any] | None:
        """``[Y, Y^(2^32), ..., Y^(2^224)]`` for an item whose key ``y`` (a number) the
        bank stored with its powers (``known``); None otherwise, or if they do not
        read back."""
        if not (it.known and it.powers):
            return None
        if it.y_enc not in self.rows_of:
            self.rows_of[it.y_enc] = group.key_rows(y, it.powers)
        return self.rows_of[it.y_enc]

    def prefix(self, y_enc: bytes) -> Any:
        prefix = self.prefixes.get(y_enc)
        if prefix is None:
            prefix = self.prefixes[y_enc] = challenge_prefix(self.group, PAYMENT_TAG, y_enc)
        return prefix

    def key(self, y_enc: bytes, known: bool) -> Any:
        key = self.keys.get((y_enc, known), _UNMADE)
        if key is _UNMADE:
            try:
                key = self.group.decode(y_enc, known=known).native
            except CryptoError:
                key = None
            self.keys[(y_enc, known)] = key
        return key


def _single_checks(
    group: ModpGroup, it: Item, p: Any, q: int, cards: _Cards
) -> tuple[Any, Any] | Literal[False] | None:
    """Per-payment checks. None: verify strictly; False: invalid; (A, Y): batch it."""
    c = it.cert
    if not _in_range(c, q):
        return False
    a = _residue(group, it.hint, p)
    if a is None:
        return None
    a_enc = it.hint if len(it.hint) == group.element_len else group.encode_value(a)
    if challenge_after(cards.prefix(it.y_enc), q, c.ser, c.spec, a_enc) != c.b:
        return None  # a wrong hint; the payment may still be valid
    y = cards.key(it.y_enc, it.known)
    if y is None:
        return False
    return a, y


def _residue(group: ModpGroup, hint: bytes, p: Any) -> Any:
    """The hint's ``A``, a quadratic residue other than 1, or None (verify strictly).

    Two forms: ``enc(A)`` itself, whose Legendre symbol must be 1 (11.6 µs here), or
    ``01 || enc(s)`` with ``1 < s < p``, and then ``A = s^2`` is a residue by
    construction (one squaring, 2.7 µs; :meth:`ModpGroup.combine_rooted`)."""
    n = group.element_len
    if len(hint) == n:
        a = gmpy2.mpz(int.from_bytes(hint, "big"))
        return a if 1 < a < p and gmpy2.legendre(a, p) == 1 else None
    if len(hint) == n + 1 and hint[:1] == ROOT_HINT_TAG:
        s = gmpy2.mpz(int.from_bytes(hint[1:], "big"))
        if not 1 < s < p:
            return None
        a = s * s % p
        return a if a != 1 else None  # s = p - 1
    return None


def _bisect(
    group: ModpGroup,
    items: Sequence[Item],
    ready: list[tuple[int, Any, Any]],
    out: list[bool | None],
    p: Any,
    widths: ZWidths,
    rand: Any,
    cards: _Cards,
) -> None:
    stack = [(ready, widths.first)]
    while stack:
        part, z_bits = stack.pop()
        if not part:
            continue
        if len(part) < STRICT_BELOW:
            for i, _, _ in part:
                out[i] = verify_strict(group, items[i])
            continue
        if _batch_equation(group, items, part, p, z_bits, rand, cards):
            for i, _, _ in part:
                out[i] = True
            continue
        mid = len(part) // 2
        stack.append((part[mid:], widths.bisect))
        stack.append((part[:mid], widths.bisect))


def _batch_equation(
    group: ModpGroup,
    items: Sequence[Item],
    part: list[tuple[int, Any, Any]],
    p: Any,
    z_bits: int,
    rand: Any,
    cards: _Cards,
) -> bool:
    """prod A_i^z_i == g^(sum z_i r_i) * prod_Y Y^(sum z_i b_i), fresh z_i.

    A card whose ``Y`` the bank stored with its powers ``Y^(2^(32 j))`` enters the
    right side as those eight bases, its exponent cut into eight 32-bit words: for
    100 cards in a chunk of 512 payments, about 10 multiplications a payment where
    the 256-bit exponents cost 16 (the bases are the bank's own data, like ``Y``:
    were they wrong, the equation would fail and bisection end in the strict rule)."""
    q = group.q
    zs = [rand(z_bits) + 1 for _ in part]  # uniform in [1, 2^z_bits]
    g_exp = 0
    y_exp: dict[bytes, int] = {}
    y_item: dict[bytes, tuple[Item, Any]] = {}
    for (i, _, y), z in zip(part, zs, strict=True):
        it = items[i]
        c = it.cert
        g_exp += z * c.r
        y_exp[it.y_enc] = y_exp.get(it.y_enc, 0) + z * c.b
        y_item[it.y_enc] = (it, y)
    left = multi_pow([a for _, a, _ in part], zs, p)
    # one g^e a chunk: from the table if this process has it, else by exponentiation
    # (0.6 ms, where building the table costs 28 ms: a worker of the secure group
    # builds it only should strict verification need it)
    g_exp %= q
    right = group.g_table.pow(g_exp) if group.has_g_table else gmpy2.powmod(group.g, g_exp, p)
    words: tuple[list[Any], list[int]] = ([], [])  # bases and 32-bit exponents
    whole: tuple[list[Any], list[int]] = ([], [])  # bases and 256-bit exponents
    for key, e in y_exp.items():
        it, y = y_item[key]
        e %= q
        rows = cards.rows(group, it, y)
        if rows is None:
            whole[0].append(y)
            whole[1].append(e)
            continue
        words[0].extend(rows)
        words[1].extend(e >> (COMB_SPAN * j) & _WORD for j in range(COMB_ROWS))
    right = right * multi_pow(*words, p) % p * multi_pow(*whole, p) % p
    return bool(left == right)


_WORD: Final = (1 << COMB_SPAN) - 1


def verify_batch_secp256k1(
    group: Secp256k1Group, items: Sequence[Item], *, deposit: int | None = None, draw: Any = None
) -> list[bool]:
    """The strict rule's answer for every item, batching those with a usable hint.

    Worth it where cards repeat (the caller batches cards with several payments): each
    card adds one ``r·G + b·Y`` to the equation, each payment about 0.75 point
    additions per 2 bits of its exponent (:meth:`Secp256k1Group.weighted_sum`).
    ``deposit`` and ``draw`` as for :func:`verify_batch`.
    """
    widths = z_widths(len(items), deposit)
    rand = draw if draw is not None else secrets.randbits
    q = group.q
    out: list[bool | None] = [None] * len(items)
    keys: dict[bytes, Any] = {}
    cards = _Cards(group)
    hints: dict[int, Any] = {}
    ready: list[int] = []
    for i, it in enumerate(items):
        c = it.cert
        if not _in_range(c, q):
            out[i] = False  # a range rule the strict check refuses too
            continue
        point = None
        enc = group.hint_encoding(it.hint)
        if (
            enc is not None
            and challenge_after(cards.prefix(it.y_enc), q, c.ser, c.spec, enc) == c.b
        ):
            point = group.hint_point(it.hint, shape_checked=True)
        if point is None:
            out[i] = verify_strict(group, it)  # no hint, a wrong one, or no point
            continue
        if it.y_enc not in keys:
            try:
                key = group.decode(it.y_enc, known=it.known)
                key.native  # noqa: B018 - a key read back unparsed is parsed here, once
            except CryptoError:
                key = None
            keys[it.y_enc] = key
        if keys[it.y_enc] is None:
            out[i] = False  # no valid key: strict refuses every payment under it
            continue
        hints[i] = point
        ready.append(i)
    stack = [(ready, widths.first)]
    while stack:
        part, z_bits = stack.pop()
        if len(part) < STRICT_BELOW:
            for i in part:
                out[i] = verify_strict(group, items[i])
        elif _secp_equation(group, items, keys, hints, part, z_bits, rand):
            for i in part:
                out[i] = True
        else:
            mid = len(part) // 2
            stack.append((part[mid:], widths.bisect))
            stack.append((part[:mid], widths.bisect))
    return [bool(v) for v in out]


def _secp_equation(
    group: Secp256k1Group,
    items: Sequence[Item],
    keys: dict[bytes, Any],
    hints: dict[int, Any],
    part: list[int],
    z_bits: int,
    rand: Any,
) -> bool:
    """sum z_i·A_i == sum over cards of (sum z_i r_i)·G + (sum z_i b_i)·Y, fresh z_i."""
    q = group.q
    zs = [rand(z_bits) + 1 for _ in part]  # uniform in [1, 2^z_bits]
    sums: dict[bytes, list[int]] = {}
    for i, z in zip(part, zs, strict=True):
        it = items[i]
        acc = sums.setdefault(it.y_enc, [0, 0])
        acc[0] += z * it.cert.r
        acc[1] += z * it.cert.b
    left = group.weighted_sum([hints[i] for i in part], zs)
    right: list[Any] = []
    for y_enc, (r_sum, b_sum) in sums.items():
        term = group.combine(r_sum % q, keys[y_enc], b_sum % q)
        if term is not None:  # the identity adds nothing
            right.append(term.native)
    return left == group.point_sum(right)
