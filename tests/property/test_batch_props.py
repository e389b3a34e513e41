"""The fast paths accept exactly what strict verification accepts.

Adversarial batches go through :func:`verify_batch` (the small-exponent test over the
terminal's hints, on the secure group) and :func:`verify_with_card_tables`, and every
payment's answer must equal :func:`verify_strict`'s. The adversary holds the cards'
secrets, so it can make certificates whose hint is off by exactly the components the
batch test is weakest against: -1 and an element of order h.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from functools import cache
from typing import Any

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings

from batch_cases import exponents_are_fresh, one_bad_among_ten_thousand_and_all_bad, plans
from jointpay.crypto.batch import (
    STRICT_BELOW,
    Item,
    _batch_equation,
    _Cards,
    multi_pow,
    secure_cofactor,
    verify_batch,
    verify_strict,
    verify_with_card_tables,
    z_widths,
)
from jointpay.crypto.errors import InvalidElementError
from jointpay.crypto.group import ROOT_HINT_TAG, Comb, ModpGroup, get_group
from jointpay.crypto.schnorr import PAYMENT_TAG, PaymentCert, SecretScalar, challenge, sign, verify

SECURE = get_group("modp-2048-256", "jointpay-secure-2048-256")
RFC5114 = get_group("modp-2048-256")
assert isinstance(SECURE, ModpGroup)
assert isinstance(RFC5114, ModpGroup)


def enc(group: ModpGroup, v: Any) -> bytes:
    return int(v).to_bytes(group.element_len, "big")


class Card:
    def __init__(self, group: ModpGroup) -> None:
        self.group = group
        self.x = group.random_scalar()
        self.y = group.public_key(self.x)

    def pay(self, ser: int, spec: bytes, delta: Any = 1, *, rooted: bool = False) -> Item:
        """A certificate whose b commits to a' = g^w * delta (delta = 1: an honest one).
        ``rooted``: b commits to a' = (g^w * delta)^2 and the hint is its root, the form
        our terminals send (01 || enc(s))."""
        g = self.group
        w = g.random_scalar()
        a = g.g_table.pow(w) * gmpy2.mpz(delta) % g.p
        root = a
        if rooted:
            a, w = a * a % g.p, 2 * w % g.q
        b = challenge(g, PAYMENT_TAG, self.y.encoded, ser, spec, enc(g, a))
        r = (b * self.x + w) % g.q
        hint = ROOT_HINT_TAG + enc(g, root) if rooted else enc(g, a)
        return Item(self.y.encoded, PaymentCert(ser, spec, b, r), hint)


def order_h_element(group: ModpGroup) -> Any:
    """An element of order exactly h (a QR that is not in the order-q subgroup)."""
    p, q = gmpy2.mpz(group.p), group.q
    while True:
        e = gmpy2.powmod(secrets.randbelow(group.p - 3) + 2, 2 * q, p)
        if e != 1:
            return e


def test_the_secure_group_is_secure_and_rfc5114_is_not() -> None:
    h = secure_cofactor(SECURE.params)
    assert h is not None
    assert SECURE.p == 2 * SECURE.q * h + 1
    assert secure_cofactor(RFC5114.params) is None


def test_multi_pow_matches_the_naive_product() -> None:
    p = gmpy2.mpz(SECURE.p)
    sizes = (0, 1, 7, 8, 9, 64, 300, 600, 1100)  # window widths 1 to 8
    cases = [(n, None) for n in sizes] + [(9, 1 << 40)]  # and empty windows
    for n, fixed in cases:
        bases = [gmpy2.mpz(secrets.randbelow(SECURE.p - 2) + 2) for _ in range(n)]
        exps = [fixed or secrets.randbits(secrets.choice([1, 64, 256])) for _ in range(n)]
        naive = gmpy2.mpz(1)
        for b, e in zip(bases, exps, strict=True):
            naive = naive * gmpy2.powmod(b, e, p) % p
        assert multi_pow(bases, exps, p) == naive


def test_the_window_table_agrees_with_powmod_for_every_exponent() -> None:
    g, p = SECURE.g_table, gmpy2.mpz(SECURE.p)
    for e in (0, 1, 255, 256, (1 << 255) + 1, SECURE.q - 1, SECURE.q + 5, 1 << 300, -3):
        assert g.pow(e) == gmpy2.powmod(SECURE.g, e, p)


def test_keys_outside_the_subgroup_and_an_identity_a_are_refused_by_every_path() -> None:
    card = Card(SECURE)
    # r = x*b makes g^r * Y^b = 1: strict refuses a' = 1, and so must the fast paths.
    b = 12345
    identity = Item(card.y.encoded, PaymentCert(1, b"s", b, b * card.x % SECURE.q), enc(SECURE, 1))
    # -1 has order 2: not a valid key, even under a hint that hashes right.
    bad_y = enc(SECURE, SECURE.p - 1)
    hint = card.pay(2, b"t").hint
    forged_b = challenge(SECURE, PAYMENT_TAG, bad_y, 2, b"t", hint)
    bad_key = Item(bad_y, PaymentCert(2, b"t", forged_b, 5), hint)
    items = [identity, identity, bad_key, bad_key, card.pay(3, b"u")]
    strict = [verify_strict(SECURE, it) for it in items]
    assert strict == [False, False, False, False, True]
    assert verify_batch(SECURE, items) == strict
    assert verify_with_card_tables(SECURE, items, 2) == strict


@pytest.mark.parametrize("group", [SECURE, RFC5114], ids=["secure", "rfc5114"])
def test_the_range_rules_hold_on_every_path(group: ModpGroup) -> None:
    """Not left to Hypothesis's draws: b out of range and r = 0, from a card that has
    payments enough for its window table and with hints, in either hint form."""
    card = Card(group)
    items = [card.pay(i, b"ok %d" % i, rooted=i % 2 == 1) for i in range(4)]
    c = items[0].cert
    items.append(Item(card.y.encoded, PaymentCert(7, c.spec, c.b + group.q, c.r), items[0].hint))
    items.append(Item(card.y.encoded, PaymentCert(8, c.spec, c.b, 0), items[1].hint))
    strict = [verify_strict(group, it) for it in items]
    assert strict == [True] * 4 + [False] * 2
    assert verify_batch(group, items) == strict
    assert verify_with_card_tables(group, items, 2) == strict


def test_a_minus_one_hint_fools_the_bare_equation_but_not_the_verifier() -> None:
    """Boyd and Pavlovski's attack: the hint -a' passes the plain small-exponent test
    whenever z is even; the Legendre check sends it to strict verification instead."""
    card = Card(SECURE)
    honest = [card.pay(i, b"ok %d" % i) for i in range(6)]
    evil = card.pay(99, b"evil", delta=SECURE.p - 1)
    items = [*honest, evil]
    ready = [
        (i, gmpy2.mpz(int.from_bytes(it.hint, "big")), card.y.native) for i, it in enumerate(items)
    ]
    p = gmpy2.mpz(SECURE.p)
    assert _batch_equation(SECURE, items, ready, p, 1, lambda bits: 1, _Cards(SECURE))  # z = 2
    assert not verify_strict(SECURE, evil)
    assert verify_batch(SECURE, items) == [True] * 6 + [False]


def test_a_root_hint_proves_a_residue_and_the_batch_still_catches_order_h(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hint our terminals send is a square root s of a'; s^2 is a quadratic residue
    whatever s is, so a -1 component cannot hide there, and a forgery off by an
    element of order h is caught by the batch equation as before."""
    import jointpay.crypto.batch as batch_mod

    card = Card(SECURE)
    honest = [card.pay(i, b"ok %d" % i, rooted=True) for i in range(6)]
    assert {len(it.hint) for it in honest} == {SECURE.element_len + 1}
    assert [verify_strict(SECURE, it) for it in honest] == [True] * 6
    one_by_one: list[Item] = []
    real = batch_mod.verify_strict
    monkeypatch.setattr(
        batch_mod, "verify_strict", lambda g, it: one_by_one.append(it) or real(g, it)
    )
    assert verify_batch(SECURE, honest) == [True] * 6
    assert one_by_one == []  # all six went through the batch equation
    monkeypatch.undo()
    evil = card.pay(99, b"evil", delta=order_h_element(SECURE), rooted=True)
    assert not verify_strict(SECURE, evil)
    assert verify_batch(SECURE, [*honest, evil]) == [True] * 6 + [False]
    assert verify_batch(SECURE, [evil] * 5) == [False] * 5


def test_strict_verification_keeps_the_root_a_terminal_hands_over() -> None:
    """verify() computes a' as s^2 with s = g^(r/2) Y^(b/2): the same a' (the hash says
    so), and hint_of gives the root form, which the bank batches without a Legendre
    symbol."""
    card = Card(SECURE)
    for i in range(8):
        cert, a = sign(SECURE, SecretScalar(card.x), card.y, i, b"v %d" % i)
        got = verify(SECURE, card.y, cert)
        assert got == a
        hint = SECURE.hint_of(got)
        assert hint[:1] == ROOT_HINT_TAG
        root = gmpy2.mpz(int.from_bytes(hint[1:], "big"))
        assert enc(SECURE, root * root % SECURE.p) == a.encoded
    assert SECURE.hint_of(a) == a.encoded  # an element with no root: its encoding


def test_stored_powers_stand_for_the_key_in_the_batch_equation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A card the bank stored with its key's powers enters the right side as eight
    bases with 32-bit exponents. They are the bank's data, not checked again: were one
    wrong, the equation fails (so they are what it computes with), bisection ends in
    the strict rule, and the answers are still strict's."""
    import jointpay.crypto.batch as batch_mod

    card = Card(SECURE)
    powers = SECURE.key_powers(card.y)
    honest = [card.pay(i, b"ok %d" % i)._replace(known=True, powers=powers) for i in range(8)]
    p = gmpy2.mpz(SECURE.p)
    ready = [
        (i, gmpy2.mpz(int.from_bytes(it.hint, "big")), card.y.native) for i, it in enumerate(honest)
    ]
    n = SECURE.element_len
    other = enc(SECURE, SECURE.g_table.pow(SECURE.random_scalar()))
    cases = {
        "stored": (powers, True),
        "none stored": (b"", True),
        "cut short": (powers[:-1], True),  # not seven residues: Y itself, 256-bit
        "one wrong": (powers[: 3 * n] + other + powers[4 * n :], False),
        "a zero row": (powers[: 6 * n] + bytes(n), True),  # refused like a short one
    }
    kept, SECURE._g_table = SECURE._g_table, None  # as in a worker: no window table
    try:
        assert _batch_equation(SECURE, honest, ready, p, 64, secrets.randbits, _Cards(SECURE))
        assert not SECURE.has_g_table  # g^e by one exponentiation, no table built for it
    finally:
        SECURE._g_table = kept
    real = batch_mod.verify_strict
    for name, (stored, passes) in cases.items():
        items = [it._replace(powers=stored) for it in honest]
        got = _batch_equation(SECURE, items, ready, p, 64, secrets.randbits, _Cards(SECURE))
        assert got is passes, name
        one_by_one: list[Item] = []
        monkeypatch.setattr(
            batch_mod,
            "verify_strict",
            lambda g, it, seen=one_by_one: seen.append(it) or real(g, it),
        )
        assert verify_batch(SECURE, items) == [True] * len(items), name
        assert (one_by_one == []) is passes, name
        monkeypatch.undo()


KINDS = (
    "valid",
    "no_hint",
    "wrong_hint",
    "hint_times_minus_one",
    "hint_times_order_h",
    "signed_over_minus_one",
    "signed_over_order_h",
    "hint_one",
    "hint_swapped",
    "r_changed",
    "b_changed",
    "b_out_of_range",
    "duplicate",
    "rooted",
    "rooted",
    "rooted_negated",
    "rooted_times_order_h",
    "rooted_signed_over_order_h",
    "rooted_signed_over_minus_one",
    "rooted_p_minus_one",
    "rooted_one",
    "rooted_p",
    "rooted_bad_tag",
    "rooted_truncated",
)


def build(group: ModpGroup, cards: list[Card], plan: list[tuple[str, int]]) -> list[Item]:
    items: list[Item] = []
    for n, (kind, who) in enumerate(plan):
        card = cards[who % len(cards)]
        it = card.pay(n, b"spec %d" % n)
        c = it.cert
        if kind == "no_hint":
            it = Item(it.y_enc, c, b"")
        elif kind == "wrong_hint":
            it = Item(it.y_enc, c, enc(group, group.g_table.pow(group.random_scalar())))
        elif kind == "hint_times_minus_one":
            it = Item(it.y_enc, c, enc(group, (group.p - int.from_bytes(it.hint, "big"))))
        elif kind == "hint_times_order_h":
            a = gmpy2.mpz(int.from_bytes(it.hint, "big")) * order_h_element(group) % group.p
            it = Item(it.y_enc, c, enc(group, a))
        elif kind == "signed_over_minus_one":
            it = card.pay(n, b"spec %d" % n, delta=group.p - 1)
        elif kind == "signed_over_order_h":
            it = card.pay(n, b"spec %d" % n, delta=order_h_element(group))
        elif kind == "hint_one":
            it = Item(it.y_enc, c, enc(group, 1))
        elif kind == "hint_swapped" and items:
            it = Item(it.y_enc, c, items[-1].hint)
        elif kind == "r_changed":
            it = Item(it.y_enc, PaymentCert(c.ser, c.spec, c.b, (c.r + 1) % group.q or 1), it.hint)
        elif kind == "b_changed":
            it = Item(it.y_enc, PaymentCert(c.ser, c.spec, (c.b + 1) % group.q, c.r), it.hint)
        elif kind == "b_out_of_range":
            it = Item(it.y_enc, PaymentCert(c.ser, c.spec, c.b + group.q, c.r), it.hint)
        elif kind == "duplicate" and items:
            it = items[-1]
        elif kind.startswith("rooted_signed_over"):
            delta = order_h_element(group) if kind.endswith("order_h") else group.p - 1
            it = card.pay(n, b"spec %d" % n, delta=delta, rooted=True)
        elif kind.startswith("rooted"):
            it = card.pay(n, b"spec %d" % n, rooted=True)
            c, root = it.cert, gmpy2.mpz(int.from_bytes(it.hint[1:], "big"))
            hint = {
                "rooted": it.hint,
                "rooted_negated": ROOT_HINT_TAG + enc(group, group.p - root),  # same square
                "rooted_times_order_h": ROOT_HINT_TAG
                + enc(group, root * order_h_element(group) % group.p),
                "rooted_p_minus_one": ROOT_HINT_TAG + enc(group, group.p - 1),  # square 1
                "rooted_one": ROOT_HINT_TAG + enc(group, 1),
                "rooted_p": ROOT_HINT_TAG + enc(group, group.p),
                "rooted_bad_tag": b"\x02" + it.hint[1:],
                "rooted_truncated": it.hint[:-1],
            }[kind]
            it = Item(it.y_enc, c, hint)
        items.append(it)
    return items


@pytest.mark.parametrize("group", [SECURE, RFC5114], ids=["secure", "rfc5114"])
def test_fast_paths_give_the_strict_answers(group: ModpGroup) -> None:
    cards = [Card(group) for _ in range(3)]

    powers = {card.y.encoded: group.key_powers(card.y) for card in cards}

    @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plans(KINDS))
    def prop(plan: list[tuple[str, int]]) -> None:
        items = build(group, cards, plan)
        strict = [verify_strict(group, it) for it in items]
        assert verify_batch(group, items) == strict
        assert verify_with_card_tables(group, items, 2) == strict
        # the bank's own certificates, with the comb powers it stored: every card
        # below the window table's threshold goes through its comb
        stored = [it._replace(known=True, powers=powers[it.y_enc]) for it in items]
        assert verify_with_card_tables(group, stored, 10**9) == strict
        assert verify_batch(group, stored) == strict
        # as a chunk of a large deposit: wider exponents, the same answers
        assert verify_batch(group, items, deposit=200_000) == strict

    with _without_g_comb(group):  # g^r from the window table, beside each comb
        prop()
    group.g_comb  # noqa: B018 - built: now g^r rides on each comb's squarings
    with _counting(Comb, "pow_with") as calls:
        prop()
    assert calls


@contextmanager
def _without_g_comb(group: ModpGroup) -> Iterator[None]:
    """The group as a process has it before anything built its ``g`` comb."""
    kept, group._g_comb = group._g_comb, None
    try:
        yield
    finally:
        group._g_comb = kept


@contextmanager
def _counting(cls: type, name: str) -> Iterator[list[int]]:
    calls: list[int] = []
    method = getattr(cls, name)

    def counted(*args: object) -> object:
        calls.append(1)
        return method(*args)

    setattr(cls, name, counted)
    try:
        yield calls
    finally:
        setattr(cls, name, method)


@pytest.mark.parametrize("group", [SECURE, RFC5114], ids=["secure", "rfc5114"])
def test_the_comb_agrees_with_powmod_for_every_exponent(group: ModpGroup) -> None:
    y = Card(group).y
    comb = group.comb(y, group.key_powers(y))
    assert comb is not None
    p = gmpy2.mpz(group.p)
    edges = [0, 1, 2, (1 << 32) - 1, 1 << 32, 1 << 128, 1 << 224, group.q - 1, (1 << 256) - 1]
    exps = edges + [secrets.randbits(secrets.choice([8, 64, 65, 200, 256])) for _ in range(60)]
    for e in exps:
        assert comb.pow(e) == gmpy2.powmod(y.native, e, p), e
    g = gmpy2.mpz(group.g)
    for e, r in [*zip(exps, reversed(exps), strict=True), *((e, e) for e in edges)]:
        want = gmpy2.powmod(y.native, e, p) * gmpy2.powmod(g, r, p) % p
        assert comb.pow_with(e, group.g_comb, r) == want, (e, r)
    for e in (-1, 1 << 256):
        with pytest.raises(ValueError, match="comb exponent"):
            comb.pow(e)
        with pytest.raises(ValueError, match="comb exponents"):
            comb.pow_with(e, group.g_comb, 1)
        with pytest.raises(ValueError, match="comb exponents"):
            comb.pow_with(1, group.g_comb, e)
    other = SECURE if group is RFC5114 else RFC5114
    with pytest.raises(ValueError, match="same p"):
        comb.pow_with(1, other.g_comb, 1)


def test_the_comb_takes_only_three_residues_in_range() -> None:
    y = Card(RFC5114).y
    good = RFC5114.key_powers(y)
    n = RFC5114.element_len
    assert len(good) == 7 * n
    for bad in (
        b"",
        good[:-1],
        good + b"\x00",
        enc(RFC5114, 1) + good[n:],
        good[:n] + enc(RFC5114, RFC5114.p) + good[2 * n :],
    ):
        assert RFC5114.comb(y, bad) is None
    with pytest.raises(ValueError, match="takes 8 powers"):
        Comb([y.native], gmpy2.mpz(RFC5114.p))
    with pytest.raises(InvalidElementError):
        RFC5114.key_powers(SECURE.public_key(5))  # another group's element


def test_one_bad_payment_among_ten_thousand_and_all_bad() -> None:
    cards = [Card(SECURE) for _ in range(100)]
    base = [cards[i % 100].pay(i, b"p %d" % i) for i in range(400)]
    one_bad_among_ten_thousand_and_all_bad(base, lambda its: verify_batch(SECURE, its))


def test_random_exponents_come_from_the_csprng() -> None:
    card = Card(SECURE)
    items = [card.pay(i, b"x") for i in range(8)]
    exponents_are_fresh(items, lambda its, draw: verify_batch(SECURE, its, draw=draw))


@cache
def most_equations(s: int) -> int:
    """The most batch equations a part of ``s`` payments can make: every one fails,
    and the bisection of :func:`verify_batch` splits it into its floor and ceiling
    halves down to parts below STRICT_BELOW, which are verified strictly."""
    if s < STRICT_BELOW:
        return 0
    return 1 + most_equations(s // 2) + most_equations(s - s // 2)


def deposit_error_bound(calls: list[int], n: int) -> Fraction:
    """The union bound for a deposit of ``n`` payments verified by batch calls over
    ``calls`` payments each: every equation each call can make, at its width."""
    total = Fraction(0)
    for m in calls:
        widths = z_widths(m, n)
        eqs = most_equations(m)
        if eqs:
            total += Fraction(1, 2**widths.first) + Fraction(eqs - 1, 2**widths.bisect)
    return total


def test_the_exponent_widths_bound_a_whole_deposit_at_2_to_the_minus_64() -> None:
    """CONTRACT section 2 bounds the error per deposit. A deposit goes in chunks of 512,
    each chunk in one batch call per group (or, for secp256k1, only some of its
    payments); every equation a call can make has fresh exponents of its width, and
    the sum of 2^-width over all of them stays at or below 2^-64, however the chunks
    are cut."""
    for s in range(1, 300):
        assert most_equations(s) <= max(0, s // 2 - 1), s
    assert most_equations(512) == 255  # a chunk all bad: 127 splits, 128 parts of 4
    chunk = 512
    # the widths of a full chunk's equation and of bisection, for a few deposit sizes
    table = {n: tuple(z_widths(min(n, chunk), n)) for n in (100, 1_000, 10_000, 100_000)}
    assert table == {100: (65, 71), 1_000: (66, 74), 10_000: (70, 78), 100_000: (73, 81)}
    assert tuple(z_widths(chunk, 200_000)) == (74, 82)  # the largest batch a bank takes
    assert tuple(z_widths(512)) == (65, 73)  # a direct caller: its items are the deposit
    bound = Fraction(1, 2**64)
    for n in (1, 4, 7, 100, 511, 512, 513, 1_000, 10_000, 100_000, 200_000):
        chunks = [min(chunk, n - k) for k in range(0, n, chunk)]
        cuts = {
            "one call a chunk": chunks,
            "two groups a chunk": [x for c in chunks for x in (c // 2, c - c // 2)],
            "a group of 4 beside each chunk": [x for c in chunks for x in (c - 4, 4) if x],
            "parts of 4": [4] * (n // 4),
            "parts of 7": [7] * (n // 7),
        }
        for name, calls in cuts.items():
            assert sum(calls) <= n, name
            got = deposit_error_bound(calls, n)
            assert got <= bound, (n, name, float(got / bound))
    # the reviewer's deposit: 200,000 payments in groups of two valid and two invalid
    # ones, whose errors cancel, so that every chunk bisects down to its parts of 4;
    # with 64-bit exponents everywhere its bound was 2^-48
    calls = [chunk] * 390 + [200_000 - 390 * chunk]
    assert Fraction(sum(most_equations(m) for m in calls), 2**64) > Fraction(1, 2**48)
    assert deposit_error_bound(calls, 200_000) <= bound
    with pytest.raises(ValueError, match="beyond the batch test"):
        z_widths(1, 2**63 + 1)
    assert max(z_widths(1, 2**63)) == 128


def test_the_bisection_makes_no_more_equations_than_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The count :func:`most_equations` gives is the real bisection's: a batch of
    forgeries (each passes the one-by-one checks and fails every equation) makes exactly
    that many equations."""
    import jointpay.crypto.batch as batch_mod

    card = Card(SECURE)
    forged = [card.pay(i, b"f %d" % i, delta=order_h_element(SECURE)) for i in range(37)]
    sizes: list[int] = []
    real = batch_mod._batch_equation

    def counted(*args: Any) -> bool:
        sizes.append(len(args[2]))
        return real(*args)

    monkeypatch.setattr(batch_mod, "_batch_equation", counted)
    for s in (4, 5, 7, 8, 13, 37):
        sizes.clear()
        assert verify_batch(SECURE, forged[:s]) == [False] * s
        assert len(sizes) == most_equations(s), s
        assert min(sizes) >= STRICT_BELOW


def test_a_bisected_batch_draws_the_wider_exponents() -> None:
    """One bad payment among 16 in a chunk of a 100,000-payment deposit: the first
    equation draws 17 exponents of 65 + ceil(log2(100,000 / 17)) = 78 bits, every
    equation of the bisection 64 + ceil(log2(100,000)) = 81 bits. The seeded ``draw``
    only replays the case; production draws from the CSPRNG."""
    card = Card(SECURE)
    items = [card.pay(i, b"w %d" % i, rooted=True) for i in range(16)]
    evil = card.pay(99, b"evil", delta=order_h_element(SECURE), rooted=True)
    items.insert(5, evil)
    rng = random.Random(20261130)
    widths: list[int] = []

    def draw(bits: int) -> int:
        widths.append(bits)
        return rng.getrandbits(bits)

    want = [True] * 5 + [False] + [True] * 11
    assert verify_batch(SECURE, items, deposit=100_000, draw=draw) == want
    assert z_widths(17, 100_000) == (78, 81)
    assert widths[:17] == [78] * 17
    assert len(widths) > 17  # it bisected
    assert set(widths[17:]) == {81}
    widths.clear()
    assert verify_batch(SECURE, items, draw=draw) == want  # alone: 17 is the deposit
    assert widths[:17] == [65] * 17
    assert set(widths[17:]) == {64 + 5}
    # the top of [1, 2^w] needs w + 1 bits: the equation takes it
    assert verify_batch(SECURE, items[:4], draw=lambda bits: (1 << bits) - 1) == [True] * 4
