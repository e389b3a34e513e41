"""The secp256k1 batch test accepts exactly what strict verification accepts.

Adversarial batches go through :func:`verify_batch_secp256k1` and, as the deposit
sends them, through :func:`verify_jobs`; every payment's answer must equal
:func:`verify_strict`'s. The adversary holds the cards' secrets, so it can sign over a
hint that hashes right but is off by any point it likes.
"""

from __future__ import annotations

import random
import secrets

import pytest
from coincurve import PublicKey
from hypothesis import HealthCheck, given, settings

from batch_cases import exponents_are_fresh, one_bad_among_ten_thousand_and_all_bad, plans
from jointpay.crypto.batch import (
    Item,
    verify_batch_secp256k1,
    verify_strict,
    z_widths,
)
from jointpay.crypto.group import Secp256k1Group, get_group
from jointpay.crypto.schnorr import PAYMENT_TAG, PaymentCert, SecretScalar, challenge, sign
from jointpay.service.verify_pool import SECP_BATCH_MIN, job_for, verify_jobs
from secp_points import off_curve_x, x_above_n

SECP = get_group("secp256k1")
assert isinstance(SECP, Secp256k1Group)


def point(k: int) -> bytes:
    return bytes(PublicKey.from_secret(k.to_bytes(32, "big")).format())


class Card:
    def __init__(self) -> None:
        self.x = SECP.random_scalar()
        self.y = SECP.public_key(self.x)

    def pay(self, ser: int, spec: bytes) -> Item:
        cert, a = sign(SECP, SecretScalar(self.x), self.y, ser, spec)
        return Item(self.y.encoded, cert, a.encoded, known=True)

    def forge(
        self,
        ser: int,
        spec: bytes,
        hint: bytes | None = None,
        off: int = 0,
        *,
        uncompressed: bool = False,
    ) -> Item:
        """b committed to a hint A that is not r·G + b·Y (off by D = off·G != 0); the
        hint handed over compressed, or uncompressed as terminals send it."""
        w = SECP.random_scalar()
        d = off or SECP.random_scalar()
        a = hint or bytes(
            PublicKey.combine_keys([PublicKey(point(w)), PublicKey(point(d))]).format()
        )
        b = challenge(SECP, PAYMENT_TAG, self.y.encoded, ser, spec, a)
        given = uncompressed_of(a) if uncompressed else a
        return Item(self.y.encoded, PaymentCert(ser, spec, b, (b * self.x + w) % SECP.q), given)


FIELD_P = 2**256 - 2**32 - 977


def uncompressed_of(compressed: bytes) -> bytes:
    return bytes(PublicKey(compressed).format(compressed=False))


def with_y(hint65: bytes, y: int) -> bytes:
    return hint65[:33] + (y % FIELD_P).to_bytes(32, "big")


KINDS = (
    "valid",
    "valid",
    "valid",
    "no_hint",
    "wrong_hint",
    "negated_hint",
    "hint_off_curve",
    "hint_x_above_n",
    "hint_bad_prefix",
    "hint_swapped",
    "signed_over_wrong_point",
    "signed_over_off_curve",
    "signed_over_x_above_n",
    "bad_key_signed",
    "bad_known_key_signed",
    "r_changed",
    "b_changed",
    "b_out_of_range",
    "r_zero",
    "bad_key",
    "duplicate",
    "uncompressed",
    "uncompressed",
    "uncompressed_negated",
    "uncompressed_off_curve_same_parity",
    "uncompressed_hybrid_prefix",
    "uncompressed_truncated",
    "signed_over_wrong_point_uncompressed",
)


def build(cards: list[Card], plan: list[tuple[str, int]]) -> list[Item]:
    items: list[Item] = []
    for n, (kind, who) in enumerate(plan):
        card = cards[who % len(cards)]
        spec = b"spec %d" % n
        it = card.pay(n, spec)
        c, y = it.cert, it.y_enc
        if kind == "no_hint":
            it = Item(y, c, b"")
        elif kind == "wrong_hint":
            it = Item(y, c, point(SECP.random_scalar()))
        elif kind == "negated_hint":
            it = Item(y, c, bytes((it.hint[0] ^ 1,)) + it.hint[1:])
        elif kind == "hint_off_curve":
            it = Item(y, c, off_curve_x())
        elif kind == "hint_x_above_n":
            it = Item(y, c, x_above_n())
        elif kind == "hint_bad_prefix":
            it = Item(y, c, b"\x04" + it.hint[1:])
        elif kind == "hint_swapped" and items:
            it = Item(y, c, items[-1].hint)
        elif kind == "signed_over_wrong_point":
            it = card.forge(n, spec)
        elif kind == "signed_over_off_curve":
            it = card.forge(n, spec, off_curve_x())
        elif kind == "signed_over_x_above_n":
            it = card.forge(n, spec, x_above_n())
        elif kind in ("bad_key_signed", "bad_known_key_signed"):  # the hint hashes right
            bad = off_curve_x()
            b = challenge(SECP, PAYMENT_TAG, bad, c.ser, c.spec, it.hint)
            known = kind == "bad_known_key_signed"
            it = Item(bad, PaymentCert(c.ser, c.spec, b, c.r), it.hint, known)
        elif kind == "r_changed":
            it = Item(y, PaymentCert(c.ser, c.spec, c.b, (c.r + 1) % SECP.q or 1), it.hint)
        elif kind == "b_changed":
            it = Item(y, PaymentCert(c.ser, c.spec, (c.b + 1) % SECP.q, c.r), it.hint)
        elif kind == "b_out_of_range":
            it = Item(y, PaymentCert(c.ser, c.spec, c.b + SECP.q, c.r), it.hint)
        elif kind == "r_zero":
            it = Item(y, PaymentCert(c.ser, c.spec, c.b, 0), it.hint)
        elif kind == "bad_key":
            it = Item(off_curve_x(), c, it.hint)
        elif kind == "duplicate" and items:
            it = items[-1]
        elif kind.startswith("uncompressed"):
            full = uncompressed_of(it.hint)
            y_int = int.from_bytes(full[33:], "big")
            hint = {
                "uncompressed": full,
                "uncompressed_negated": with_y(full, -y_int),  # -A: the other parity
                # the parity the challenge hashed, but no point: read strictly
                "uncompressed_off_curve_same_parity": with_y(full, y_int + 2),
                "uncompressed_hybrid_prefix": bytes((6 | (full[64] & 1),)) + full[1:],
                "uncompressed_truncated": full[:64],
            }[kind]
            it = Item(y, c, hint, it.known)
        elif kind == "signed_over_wrong_point_uncompressed":
            it = card.forge(n, spec, uncompressed=True)
        items.append(it)
    return items


def test_batched_cards_give_the_strict_answers() -> None:
    cards = [Card() for _ in range(3)]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(plans(KINDS))
    def prop(plan: list[tuple[str, int]]) -> None:
        items = build(cards, plan)
        strict = [verify_strict(SECP, it) for it in items]
        assert verify_batch_secp256k1(SECP, items) == strict
        jobs = [job_for(SECP, it.y_enc, it.cert, it.hint, it.known) for it in items]
        assert verify_jobs(jobs) == strict
        # as a chunk of a large deposit: exponents above 72 bits
        assert verify_batch_secp256k1(SECP, items, deposit=200_000) == strict
        assert verify_jobs(jobs, deposit=200_000) == strict

    prop()


def test_a_forged_hint_is_caught_whatever_its_neighbours() -> None:
    """The attack the batch test exists to stop: a hint that hashes right and is off by
    a point. Alone, among honest payments of its card, and as the whole batch."""
    card = Card()
    honest = [card.pay(i, b"ok %d" % i) for i in range(8)]
    evil = card.forge(99, b"evil")
    assert not verify_strict(SECP, evil)
    assert verify_batch_secp256k1(SECP, [*honest, evil]) == [True] * 8 + [False]
    assert verify_batch_secp256k1(SECP, [evil] * 6) == [False] * 6
    assert verify_batch_secp256k1(SECP, honest) == [True] * 8
    # hints that hash right but cannot be scaled: each goes to strict verification
    odd = [card.forge(100, b"x >= n", x_above_n()), card.forge(101, b"off", off_curve_x())]
    assert verify_batch_secp256k1(SECP, [*honest, *odd]) == [True] * 8 + [False, False]
    # handed over uncompressed, as terminals do: caught the same way
    evil_full = card.forge(102, b"evil, uncompressed", uncompressed=True)
    assert len(evil_full.hint) == 65
    assert not verify_strict(SECP, evil_full)
    assert verify_batch_secp256k1(SECP, [*honest, evil_full]) == [True] * 8 + [False]


def test_the_uncompressed_hint_names_the_point_the_challenge_hashed() -> None:
    card = Card()
    for i in range(64):  # both parities of y come up
        it = card.pay(i, b"u %d" % i)
        full = uncompressed_of(it.hint)
        assert SECP.hint_of(SECP.decode(it.hint)) == full  # what terminals hand over
        assert SECP.hint_encoding(full) == it.hint
        assert SECP.hint_point(full) == SECP.hint_point(it.hint)
    for bad in (full[:64], full + b"\x00", b"\x06" + full[1:], b"\x05" + full[1:], b""):
        assert SECP.hint_encoding(bad) is None
        assert SECP.hint_point(bad) is None
    assert SECP.hint_point(with_y(full, int.from_bytes(full[33:], "big") + 2)) is None


def test_sums_that_reach_the_point_at_infinity() -> None:
    """Valid payments whose nonces cancel (w, -w, v, -v) under equal z: both sides of
    the equation are the point at infinity, and the batch holds, as it should."""
    card = Card()
    items = []
    w, v = SECP.random_scalar(), 12345
    for ser, nonce in enumerate((w, SECP.q - w, v, SECP.q - v)):
        a = point(nonce)
        b = challenge(SECP, PAYMENT_TAG, card.y.encoded, ser, b"inf", a)
        cert = PaymentCert(ser, b"inf", b, (b * card.x + nonce) % SECP.q)
        items.append(Item(card.y.encoded, cert, a))
    assert [verify_strict(SECP, it) for it in items] == [True] * 4
    assert verify_batch_secp256k1(SECP, items, draw=lambda bits: 0) == [True] * 4


def test_offsets_that_cancel_need_the_random_exponents() -> None:
    """Two forgeries off by D and -D: the bare sum (every z = 1) balances, so it would
    accept both; fresh z_i make the two offsets count differently."""
    card = Card()
    d = SECP.random_scalar()
    pair = [card.forge(1, b"one", off=d), card.forge(2, b"two", off=SECP.q - d)]
    honest = [card.pay(i, b"ok %d" % i) for i in range(3, 9)]
    items = [*pair, *honest]
    assert verify_batch_secp256k1(SECP, items, draw=lambda bits: 0) == [True] * 8  # z = 1
    assert verify_batch_secp256k1(SECP, items) == [False, False] + [True] * 6


def test_one_bad_payment_among_ten_thousand_and_all_bad() -> None:
    cards = [Card() for _ in range(100)]
    base = [cards[i % 100].pay(i, b"p %d" % i) for i in range(300)]
    one_bad_among_ten_thousand_and_all_bad(base, lambda its: verify_batch_secp256k1(SECP, its))


@pytest.mark.parametrize("per_card", [1, SECP_BATCH_MIN - 1, SECP_BATCH_MIN, 40])
def test_verify_jobs_takes_the_batch_only_where_cards_repeat(
    per_card: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    import jointpay.service.verify_pool as pool

    cards = [Card() for _ in range(3)]
    items = [cards[i % 3].pay(i, b"j %d" % i) for i in range(3 * per_card)]
    batched: list[int] = []
    real = pool.verify_batch_secp256k1

    deposits: list[int | None] = []

    def spy(group: Secp256k1Group, its: list[Item], *, deposit: int | None = None) -> list[bool]:
        batched.append(len(its))
        deposits.append(deposit)
        return real(group, its, deposit=deposit)

    monkeypatch.setattr(pool, "verify_batch_secp256k1", spy)
    jobs = [job_for(SECP, it.y_enc, it.cert, it.hint, it.known) for it in items]
    assert verify_jobs(jobs) == [True] * len(items)
    assert batched == [len(items) if per_card >= SECP_BATCH_MIN else 0]
    assert deposits == [len(items)]  # no deposit given: these jobs are the deposit
    assert verify_jobs(jobs, deposit=50_000) == [True] * len(items)
    assert deposits[1:] == [50_000]


def test_random_exponents_come_from_the_csprng() -> None:
    card = Card()
    items = [card.pay(i, b"x") for i in range(8)]
    exponents_are_fresh(items, lambda its, draw: verify_batch_secp256k1(SECP, its, draw=draw))


def test_a_bisected_batch_draws_the_wider_exponents() -> None:
    """A forgery among 12 payments in a chunk of a 100,000-payment deposit: the first
    equation draws 79-bit exponents, the bisection's 81-bit ones, wider than a chunk of
    a small deposit draws. The seeded ``draw`` only
    replays the case; production draws from the CSPRNG."""
    card = Card()
    items = [card.pay(i, b"w %d" % i) for i in range(11)]
    items.insert(7, card.forge(99, b"evil", uncompressed=True))
    rng = random.Random(20261130)
    widths: list[int] = []

    def draw(bits: int) -> int:
        widths.append(bits)
        return rng.getrandbits(bits)

    want = [True] * 7 + [False] + [True] * 4
    assert verify_batch_secp256k1(SECP, items, deposit=100_000, draw=draw) == want
    first, bisect = z_widths(12, 100_000)
    assert (first, bisect) == (65 + 14, 81)
    assert widths[:12] == [first] * 12
    assert len(widths) > 12
    assert set(widths[12:]) == {bisect}
    widths.clear()
    assert verify_batch_secp256k1(SECP, items, draw=draw) == want  # alone: 12 is the deposit
    assert widths[:12] == [65] * 12
    assert set(widths[12:]) == {64 + 4}
    # near the widest exponents a deposit can have (2^126 each, for 2^63 payments)
    top = verify_batch_secp256k1(SECP, items[:4], deposit=2**63, draw=lambda b: (1 << b) - 1)
    assert top == [True] * 4


def test_wide_weights_are_summed_exactly() -> None:
    """Weights of random widths up to 2^129 in one call: the result is the sum of the
    multiples, also where wide weights cancel to the point at infinity."""
    pts = [PublicKey(point(SECP.random_scalar())) for _ in range(9)]
    weights = [secrets.randbits(secrets.choice([8, 64, 72, 73, 81, 128, 129])) + 1 for _ in pts]
    weights[0] = 1 << 128
    weights[1] = (1 << 72) - 1
    want = SECP.point_sum(
        [p.multiply((w % SECP.q).to_bytes(32, "big")) for p, w in zip(pts, weights, strict=True)]
    )
    assert SECP.weighted_sum(pts, weights) == want
    minus = PublicKey(bytes([5 - pts[0].format()[0]]) + pts[0].format()[1:])
    wide = (1 << 80) + 5
    assert SECP.weighted_sum([pts[0], minus], [wide, wide]) is None
    assert SECP.weighted_sum([pts[0], minus, pts[0]], [wide, wide, 2]) == SECP.point_sum(
        [pts[0], pts[0]]
    )
    assert SECP.weighted_sum([pts[0], minus], [1 << 80, 3]) == SECP.point_sum(
        [pts[0].multiply(((1 << 80) - 3).to_bytes(32, "big"))]
    )
