"""Unit tests of jointpay.crypto: groups, Schnorr, joint keys, encoding."""

from __future__ import annotations

import json
import pickle
import secrets
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from coincurve import PublicKey

from jointpay.crypto import group as grp
from jointpay.crypto.encoding import MAX_FIELD, Reader, Writer, lp, u64
from jointpay.crypto.errors import (
    DecodeError,
    InvalidElementError,
    InvalidGroupError,
    InvalidProofError,
    InvalidScalarError,
    InvalidSignature,
)
from jointpay.crypto.group import (
    SECP256K1_N,
    SECP256K1_P,
    ModpGroup,
    ModpParams,
    get_group,
    group_for,
    params_digest,
    validate_modp_params,
)
from jointpay.crypto.joint import (
    Contribution,
    Role,
    aggregate,
    combine_shares,
    derive_secret,
    prove_possession,
    verify_possession,
)
from jointpay.crypto.schnorr import (
    PAYMENT_TAG,
    PaymentCert,
    SecretScalar,
    challenge,
    derive_nonce,
    sign,
    verify,
)
from secp_points import off_curve_x, x_above_n

SECP = get_group("secp256k1")
MODP = get_group("modp-2048-256")
GROUPS = [SECP, MODP]


def keypair(group: grp.Group) -> tuple[SecretScalar, grp.Element]:
    x = SecretScalar(group.random_scalar())
    return x, group.public_key(x.reveal())


# -- groups ----------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_element_basics(group: grp.Group) -> None:
    _, y = keypair(group)
    again = group.decode(y.encoded)
    assert again == y
    assert hash(again) == hash(y)
    assert y != y.encoded
    assert group.suite in repr(y)
    assert group.describe() == {"suite": group.suite, "group": group.name}
    assert group.suite in repr(group)
    with pytest.raises(InvalidScalarError):
        group.public_key(0)
    with pytest.raises(InvalidScalarError):
        group.public_key(group.q)
    with pytest.raises(InvalidScalarError):
        group.g_pow_secret(0)
    assert group.g_pow(0) is None
    assert group.g_pow(group.q) is None
    assert group.product([]) is None
    assert group.product([y]) == y


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_decode_scalar(group: grp.Group) -> None:
    assert group.decode_scalar(bytes(32)) == 0
    with pytest.raises(InvalidScalarError, match="zero"):
        group.decode_scalar(bytes(32), allow_zero=False)
    with pytest.raises(InvalidScalarError, match="32 bytes"):
        group.decode_scalar(bytes(31))
    with pytest.raises(InvalidScalarError, match="32 bytes"):
        group.decode_scalar("00" * 32)  # type: ignore[arg-type]
    with pytest.raises(InvalidScalarError, match="order"):
        group.decode_scalar(group.q.to_bytes(32, "big"))


def test_modp_decode_rules_and_cache() -> None:
    assert isinstance(MODP, ModpGroup)
    p = MODP.p
    for bad in (
        b"\x00" * 256,
        (1).to_bytes(256, "big"),
        (p - 1).to_bytes(256, "big"),
        p.to_bytes(256, "big"),
        b"\x01" * 255,
        "x" * 256,
    ):
        with pytest.raises(InvalidElementError):
            MODP.decode(bad)  # type: ignore[arg-type]
    fresh = ModpGroup(MODP.params)
    fresh._CACHE_SIZE = 2  # type: ignore[misc]
    keys = [keypair(fresh)[1] for _ in range(3)]
    for k in keys:
        fresh.decode(k.encoded)
    assert len(fresh._valid) == 2
    assert fresh.decode(keys[-1].encoded) == keys[-1]  # a cache hit
    assert fresh.g == MODP.g
    assert fresh.g_pow(1) is not None
    assert MODP.combine(0, keys[0], 0) is None  # g^0 · Y^0 is the identity


def test_secp_decode_rules() -> None:
    _, y = keypair(SECP)
    full = PublicKey(y.encoded).format(compressed=False)
    for bad in (
        bytes(33),
        b"\x04" + y.encoded[1:],
        full,
        y.encoded[:32],
        b"\x02" + (SECP256K1_P + 1).to_bytes(32, "big"),
        "02" * 33,
    ):
        with pytest.raises(InvalidElementError):
            SECP.decode(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidElementError, match="not a point"):
        SECP.decode(off_curve_x())
    with pytest.raises(InvalidScalarError):
        SECP.g_pow_secret(SECP256K1_N)


def test_secp_combine_paths_agree() -> None:
    x, y = keypair(SECP)
    plain = [
        (r, b) for r, b in ((5, 0), (0, 7), (secrets.randbelow(SECP.q), secrets.randbelow(SECP.q)))
    ]
    for r, b in plain:
        got = SECP.combine(r, y, b)
        assert got is not None
        want = SECP.product(e for e in (SECP.g_pow(r), _mul(y, b)) if e is not None)
        assert got == want
    b = 12345
    r = b * x.reveal() % SECP.q  # r·G + b·Y = g^(r - b·x) = identity
    assert SECP.combine(r, y, b) is None
    assert grp._recover_combination(r, y.encoded, b) is None


def _mul(y: grp.Element, b: int) -> grp.Element | None:
    if b % SECP.q == 0:
        return None
    return grp.Element(
        SECP,
        y.native.multiply(b.to_bytes(32, "big")),
        y.native.multiply(b.to_bytes(32, "big")).format(),
    )


def test_secp_point_with_x_above_n_takes_the_plain_path() -> None:
    y = SECP.decode(x_above_n())
    assert grp._recovery_x(y.encoded) is None
    assert SECP.hint_point(y.encoded) is not None  # a hint may be such a point
    r, b = 3, 4
    got = SECP.combine(r, y, b)
    want = PublicKey.combine_keys(
        [PublicKey.from_secret(r.to_bytes(32, "big")), y.native.multiply(b.to_bytes(32, "big"))]
    )
    assert got is not None
    assert got.encoded == want.format()
    only_y = SECP.combine(0, y, b)  # r = 0 on the plain path
    assert only_y is not None
    assert only_y.encoded == y.native.multiply(b.to_bytes(32, "big")).format()


def test_secp_product_identity() -> None:
    x, y = keypair(SECP)
    neg = SECP.g_pow_secret(x.reveal())  # g^x = Y^-1
    assert SECP.product([y, neg]) is None


def test_registry() -> None:
    assert get_group("secp256k1") is SECP
    assert get_group("modp-2048-256", "rfc5114-2.3") is MODP
    with pytest.raises(InvalidGroupError, match="no group name"):
        get_group("secp256k1", "rfc5114-2.3")
    with pytest.raises(InvalidGroupError, match="unknown modp group"):
        get_group("modp-2048-256", "nope")
    with pytest.raises(InvalidGroupError, match="unknown suite"):
        get_group("ed448")
    assert group_for("modp-2048-256", MODP.params).params == MODP.params  # type: ignore[attr-defined]
    assert group_for("secp256k1", None) is SECP
    assert "jointpay-secure-2048-256" in grp.named_modp_groups()
    assert params_digest(SECP) != params_digest(MODP)


def test_modp_params_json_and_validation() -> None:
    params = MODP.params  # type: ignore[attr-defined]
    assert ModpParams.from_json(params.name, params.to_json()) == params
    with pytest.raises(InvalidGroupError, match="expected an object"):
        ModpParams.from_json("x", [])
    with pytest.raises(InvalidGroupError, match="hex"):
        ModpParams.from_json("x", {"p": "zz", "q": "1", "g": "2"})
    p, q, g = params.p, params.q, params.g
    bad = [
        (ModpParams("s", p >> 1, q, g), "p has"),
        (ModpParams("s", p, q >> 1, g), "q has"),
        (ModpParams("s", p, q + 2, g), "does not divide"),
        (ModpParams("s", p, q, 1), "not in"),
        (ModpParams("s", p, q, p - 1), "order q"),
    ]
    for prm, msg in bad:
        with pytest.raises(InvalidGroupError, match=msg):
            validate_modp_params(prm)
    # an even (so composite) 256-bit q, q | p - 1, and g = p - 1 with g^q = (-1)^q = 1
    q_even = (1 << 255) + 2
    p_even = q_even * ((1 << 1792) + 1) + 1
    with pytest.raises(InvalidGroupError, match="q is not prime"):
        validate_modp_params(ModpParams("e", p_even, q_even, p_even - 1))


def test_validate_refuses_composite_p(monkeypatch: pytest.MonkeyPatch) -> None:
    params = MODP.params  # type: ignore[attr-defined]
    monkeypatch.setattr(grp, "SHIPPED_PRIMES", frozenset())  # no pin vouches for p
    monkeypatch.setattr(grp, "is_probable_prime", lambda n: n == params.q)
    with pytest.raises(InvalidGroupError, match="p is not prime"):
        validate_modp_params(params)


def test_the_pinned_primes_are_the_shipped_groups_and_are_prime() -> None:
    """SHIPPED_PRIMES spares a process the primality tests of the shipped groups: it
    holds exactly their p and q, and the secure group's h, and each passes the full
    test here. A number one bit away is not vouched for, and is tested."""
    from jointpay.crypto.batch import secure_cofactor

    numbers = []
    for params in grp.named_modp_groups().values():
        numbers += [params.p, params.q]
        h = (params.p - 1) // (2 * params.q)
        if grp.is_probable_prime(h):
            numbers.append(h)
            assert secure_cofactor(params) == h
        else:
            assert secure_cofactor(params) is None
    assert len(numbers) == 5  # RFC 5114 (h composite) and the secure group
    assert {grp.prime_digest(n) for n in numbers} == grp.SHIPPED_PRIMES
    assert all(grp.is_probable_prime(n) for n in numbers)  # the full test, not the pin
    for n in numbers:
        assert grp.prime_digest(n ^ 2) not in grp.SHIPPED_PRIMES
        assert grp.shipped_or_probable_prime(n ^ 2) is False  # odd, tested: composite
        assert grp.shipped_or_probable_prime(n) is True


def test_group_folder_loading(tmp_path: Path) -> None:
    assert grp.load_group_folder(tmp_path / "missing") == {}
    (tmp_path / "README.txt").write_text("not a group")
    params = MODP.params  # type: ignore[attr-defined]
    (tmp_path / "g.json").write_text(json.dumps({"name": "mine", **params.to_json()}))
    assert grp.load_group_folder(tmp_path) == {
        "mine": ModpParams("mine", params.p, params.q, params.g)
    }


# -- Schnorr ------------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_sign_verify_and_every_range_rule(group: grp.Group) -> None:
    x, y = keypair(group)
    cert, a = sign(group, x, y, 9, b"spec")
    assert verify(group, y, cert) == a
    q = group.q
    for bad in (
        PaymentCert(9, b"spec", q, cert.r),
        PaymentCert(9, b"spec", cert.b, 0),
        PaymentCert(9, b"spec", cert.b, q),
        PaymentCert(1 << 64, b"spec", cert.b, cert.r),
        PaymentCert(10, b"spec", cert.b, cert.r),
    ):
        with pytest.raises(InvalidSignature):
            verify(group, y, bad)
    other = get_group("secp256k1") if group is MODP else MODP
    _, y_other = keypair(other)
    with pytest.raises(InvalidSignature, match="another group"):
        verify(group, y_other, cert)
    with pytest.raises(InvalidSignature):
        verify(group, y, cert, tag=b"jointpay/v1/other")
    with pytest.raises(ValueError, match="ser"):
        sign(group, x, y, 1 << 64, b"")
    with pytest.raises(ValueError, match="spec"):
        sign(group, x, y, 0, bytes(64 * 1024 + 1))
    with pytest.raises(InvalidScalarError):
        sign(group, SecretScalar(0), y, 0, b"")


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_payment_cert_parse(group: grp.Group) -> None:
    z, one = bytes(32), (1).to_bytes(32, "big")
    assert PaymentCert.parse(group, 3, b"s", z, one) == PaymentCert(3, b"s", 0, 1)
    cases = [
        ((True, b"s", z, one), "ser"),
        ((-1, b"s", z, one), "ser"),
        ((1 << 64, b"s", z, one), "ser"),
        ((0, "s", z, one), "spec"),
        ((0, bytes(70_000), z, one), "spec"),
        ((0, b"s", "z", one), "bytes"),
        ((0, b"s", group.q.to_bytes(32, "big"), one), "b:"),
        ((0, b"s", z, z), "r:"),
        ((0, b"s", z, bytes(31)), "r:"),
    ]
    for args, msg in cases:
        with pytest.raises(DecodeError, match=msg):
            PaymentCert.parse(group, *args)
    cert = PaymentCert(1, b"", 5, 6)
    assert cert.b_bytes == (5).to_bytes(32, "big")
    assert cert.r_bytes == (6).to_bytes(32, "big")


def test_hedged_nonces() -> None:
    x, y = keypair(SECP)
    a1 = sign(SECP, x, y, 1, b"m")[1]
    a2 = sign(SECP, x, y, 1, b"m")[1]
    assert a1 != a2  # fresh randomness: the same (ser, spec) gets a new nonce
    aux = bytes(32)
    assert sign(SECP, x, y, 1, b"m", aux=aux) == sign(SECP, x, y, 1, b"m", aux=aux)
    with pytest.raises(ValueError, match="32 bytes"):
        derive_nonce(SECP, x, PAYMENT_TAG, y.encoded, 1, b"m", bytes(31))


def test_nonce_rejection_sampling_in_range() -> None:
    x, y = keypair(MODP)
    for i in range(200):  # q is ~0.55 · 2^256: about 45 % of draws are rejected
        w = derive_nonce(MODP, x, PAYMENT_TAG, y.encoded, i, b"", secrets.token_bytes(32))
        assert 0 < w < MODP.q


def test_challenge_is_the_contract_bytes() -> None:
    import hashlib

    y_enc, a_enc = bytes(33), bytes(33)
    want = hashlib.sha256(
        lp(b"jointpay/v1/payment") + lp(b"secp256k1") + lp(y_enc) + u64(5) + lp(b"ab") + lp(a_enc)
    ).digest()
    assert (
        challenge(SECP, PAYMENT_TAG, y_enc, 5, b"ab", a_enc) == int.from_bytes(want, "big") % SECP.q
    )


def test_secret_scalar_never_shows() -> None:
    s = SecretScalar(123456789)
    assert "123456789" not in repr(s)
    assert "123456789" not in str(s)
    assert s == SecretScalar(123456789)
    assert s != SecretScalar(1)
    assert s.__eq__(5) is NotImplemented
    with pytest.raises(TypeError):
        hash(s)
    with pytest.raises(TypeError):
        pickle.dumps(s)


# -- joint keys -------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_aggregate_and_refusals(group: grp.Group) -> None:
    card = "4000000000000002"
    su, sc, sg = (SecretScalar(group.random_scalar()) for _ in range(3))
    cu = prove_possession(group, su, card, Role.USER)
    cb = prove_possession(group, sc, card, Role.BANK)
    cg = prove_possession(group, sg, card, Role.GUARANTOR)
    y = aggregate(group, [cu, cb, cg], card)
    assert y == group.public_key(combine_shares(group, [su, sc, sg]).reveal())
    with pytest.raises(InvalidProofError, match="2 to 8"):
        aggregate(group, [cu], card)
    with pytest.raises(InvalidProofError, match="2 to 8"):
        aggregate(group, [cu] * 9, card)
    with pytest.raises(InvalidProofError, match="more than once"):
        aggregate(group, [cu, cu], card)
    with pytest.raises(InvalidProofError, match="missing"):
        aggregate(group, [cu, cg], card)
    same_key = Contribution(Role.GUARANTOR.value, cb.public, cb.proof_c, cb.proof_s)
    with pytest.raises(InvalidProofError, match="same public key"):
        aggregate(group, [cu, cb, same_key], card)
    with pytest.raises(InvalidProofError, match="proof of possession"):
        aggregate(group, [cu, cb], "4000000000000010")  # proofs bound to another card
    swapped = Contribution(Role.BANK.value, cu.public, cu.proof_c, cu.proof_s)
    with pytest.raises(InvalidProofError):  # proofs bound to the role
        verify_possession(group, swapped, card)
    other = SECP if group is MODP else MODP
    foreign = prove_possession(other, SecretScalar(other.random_scalar()), card, Role.BANK)
    with pytest.raises(InvalidProofError, match="another group"):
        aggregate(group, [cu, foreign], card)
    neg = SecretScalar(group.q - su.reveal())
    cneg = prove_possession(group, neg, card, Role.BANK)
    with pytest.raises(InvalidElementError, match="identity"):
        aggregate(group, [cu, cneg], card)


@pytest.mark.parametrize("group", GROUPS, ids=lambda g: g.suite)
def test_rogue_key_cannot_prove_possession(group: grp.Group) -> None:
    """A bank choosing P_rogue = g^-s · P_U^-1 would know the joint secret s alone."""
    card = "4000000000000002"
    su = SecretScalar(group.random_scalar())
    cu = prove_possession(group, su, card, Role.USER)
    s = group.random_scalar()
    rogue = group.product([group.public_key(s), group.g_pow_secret(su.reveal())])
    assert rogue is not None
    # it can copy any proof, but none verifies for P_rogue without log(P_rogue)
    fake = Contribution(Role.BANK.value, rogue, cu.proof_c, cu.proof_s)
    with pytest.raises(InvalidProofError):
        aggregate(group, [cu, fake], card)
    guess = prove_possession(group, SecretScalar(s), card, Role.BANK)
    forged = Contribution(Role.BANK.value, rogue, guess.proof_c, guess.proof_s)
    with pytest.raises(InvalidProofError):
        aggregate(group, [cu, forged], card)


def test_contribution_encoding_and_errors() -> None:
    c = prove_possession(SECP, SecretScalar(7), "4000000000000002", Role.USER)
    rd = Reader(c.encode(), "c")
    assert Contribution.read(SECP, rd) == c
    bad = Writer().text("mallory").blob(c.public.encoded).raw(bytes(64)).finish()
    with pytest.raises(DecodeError, match="unknown contribution role"):
        Contribution.read(SECP, Reader(bad, "c"))


def test_combine_shares_and_derive() -> None:
    with pytest.raises(InvalidProofError, match="zero"):
        combine_shares(SECP, [SecretScalar(5), SecretScalar(SECP.q - 5)])
    a = derive_secret(SECP, b"seed", b"label")
    assert a == derive_secret(SECP, b"seed", b"label")
    assert a != derive_secret(SECP, b"seed", b"other")


# -- encoding ---------------------------------------------------------------------------


def test_writer_reader_round_trip_and_errors() -> None:
    data = Writer().u8(1).u32(2).u64(3).raw(b"ab").blob(b"xyz").text("hé").finish()
    rd = Reader(data, "thing")
    assert (rd.u8("a"), rd.u32("b"), rd.u64("c"), rd.raw(2, "d"), rd.blob("e"), rd.text("f")) == (
        1,
        2,
        3,
        b"ab",
        b"xyz",
        "hé",
    )
    assert rd.remaining() == 0
    rd.finish()
    for fn in (
        lambda: Writer().u8(256),
        lambda: Writer().u32(1 << 32),
        lambda: u64(-1),
        lambda: Writer().blob(bytes(MAX_FIELD + 1)),
    ):
        with pytest.raises(ValueError):
            fn()
    with pytest.raises(DecodeError, match="expected bytes"):
        Reader("str", "x")  # type: ignore[arg-type]
    with pytest.raises(DecodeError, match="truncated"):
        Reader(b"\x00", "x").u32("n")
    with pytest.raises(DecodeError, match="limit"):
        Reader(Writer().blob(b"abc").finish(), "x").blob("f", max_len=2)
    with pytest.raises(DecodeError, match="UTF-8"):
        Reader(Writer().blob(b"\xff").finish(), "x").text("f")
    with pytest.raises(DecodeError, match="control"):
        Reader(Writer().text("a\nb").finish(), "x").text("f")
    with pytest.raises(DecodeError, match="trailing"):
        Reader(b"\x00", "x").finish()
    assert Reader(memoryview(b"\x07"), "x").u8("a") == 7


@pytest.mark.parametrize(
    ("data", "read", "message"),
    [
        (b"", lambda rd: rd.u8("f"), "need 1 bytes at offset 0, have 0"),
        (b"\x00\x00\x00", lambda rd: rd.u32("f"), "need 4 bytes at offset 0, have 3"),
        (bytes(7), lambda rd: rd.u64("f"), "need 8 bytes at offset 0, have 7"),
        (b"a", lambda rd: rd.raw(2, "f"), "need 2 bytes at offset 0, have 1"),
        (b"\x00\x00", lambda rd: rd.blob("f"), "need 4 bytes at offset 0, have 2"),
        (b"\x00\x00\x00\x05abc", lambda rd: rd.blob("f"), "need 5 bytes at offset 4, have 3"),
        (b"\x00\x00\x00\x02a", lambda rd: rd.text("f"), "need 2 bytes at offset 4, have 1"),
    ],
)
def test_every_reader_names_the_truncated_field(data: bytes, read: Any, message: str) -> None:
    with pytest.raises(DecodeError, match=f"truncated in field 'f' \\({message}\\)"):
        read(Reader(data, "x"))


def test_known_modp_bytes_skip_only_the_subgroup_test() -> None:
    """``known=True`` (a bank reading back a CARD-CERT it stored) skips the one
    exponentiation; length and range are still checked, and the result is not cached
    as validated for callers that did not say ``known``."""
    from jointpay.crypto.errors import InvalidElementError
    from jointpay.crypto.group import ModpGroup, get_group

    group = get_group("modp-2048-256", "jointpay-secure-2048-256")
    assert isinstance(group, ModpGroup)
    minus_one = (group.p - 1).to_bytes(group.element_len, "big")  # order 2: not a key
    assert group.decode(minus_one, known=True).encoded == minus_one
    with pytest.raises(InvalidElementError, match="subgroup"):
        group.decode(minus_one)  # the unchecked decode left nothing in the cache
    with pytest.raises(InvalidElementError, match=r"\(1, p\)"):
        group.decode(b"\x00" * group.element_len, known=True)
    with pytest.raises(InvalidElementError, match="exactly"):
        group.decode(b"\x01", known=True)


@pytest.mark.parametrize("suite", ["secp256k1", "modp-2048-256"])
def test_an_element_decoded_known_is_the_same_element(suite: str) -> None:
    """``known`` leaves the library value unparsed (both suites); it is then parsed on
    first use and is the same value as a full decode's."""
    group = get_group(suite)
    y = group.public_key(group.random_scalar())
    fresh = group.decode(y.encoded, known=True)
    assert fresh == y
    assert group.native_of(y.encoded) == y.native
    assert fresh.native == y.native


def test_a_known_secp_point_that_is_no_point_fails_on_first_use() -> None:
    lazy = SECP.decode(off_curve_x(), known=True)  # form only
    with pytest.raises(InvalidElementError):
        lazy.native  # noqa: B018
    with pytest.raises(InvalidElementError):
        SECP.decode(lazy.encoded)


def test_hint_point_refuses_what_is_no_point() -> None:
    a = SECP.public_key(SECP.random_scalar()).encoded
    got = SECP.hint_point(a)
    assert got is not None
    assert got.format() == a
    for data in (a[:32], a + b"\0", b"\x04" + a[1:], b"\x00" + a[1:], off_curve_x(), b""):
        assert SECP.hint_point(data) is None


def _multiply(point: PublicKey, k: int) -> PublicKey | None:
    k %= SECP.q  # coincurve takes a scalar below the group order
    return None if k == 0 else point.multiply(k.to_bytes(32, "big"))


@pytest.mark.parametrize("n", [0, 1, 2, 7, 9, 11, 40])
def test_weighted_sum_is_the_sum_of_the_multiples(n: int) -> None:
    points = [PublicKey.from_secret(SECP.random_scalar().to_bytes(32, "big")) for _ in range(n)]
    # every weight shape: zero, one, each digit at the top, 64 bits, 2^64, just under and
    # at 2^72, an odd width, just under 2^256 (its bytes follow the widest weight)
    edge = [0, 1, 2, 3, 4, (1 << 64) - 1, 1 << 64, (1 << 72) - 1, 1 << 72, (1 << 129) + 7]
    edge += [(1 << 256) - 1]
    weights = [edge[i] if i < len(edge) else secrets.randbits(64) + 1 for i in range(n)]
    multiples = [
        m for m in (_multiply(p, w) for p, w in zip(points, weights, strict=True)) if m is not None
    ]
    assert SECP.weighted_sum(points, weights) == SECP.point_sum(multiples)


def test_weighted_sum_through_infinity() -> None:
    """Partial sums and the total may be the point at infinity (P and -P, 2P and -2P)."""
    p = PublicKey.from_secret(SECP.random_scalar().to_bytes(32, "big"))
    minus = PublicKey(bytes([5 - p.format()[0]]) + p.format()[1:])
    two_p = p.multiply((2).to_bytes(32, "big")).format()
    assert SECP.weighted_sum([p, minus], [5, 5]) is None
    assert SECP.weighted_sum([p, minus, p], [(1 << 64) - 1, (1 << 64) - 1, 2]) == two_p
    assert SECP.weighted_sum([p, p], [1, 1]) == two_p
    wide = (1 << 80) + 5  # wide weights that cancel, and that leave 2P
    assert SECP.weighted_sum([p, minus], [wide, wide]) is None
    assert SECP.weighted_sum([p, minus, p], [wide, wide, 2]) == two_p
    assert SECP.point_sum([p, minus]) is None  # the right side's sum may be infinity too
    assert SECP.point_sum([p, minus, p]) == p.format()


def test_weighted_sum_refuses_bad_weights() -> None:
    p = PublicKey.from_secret((7).to_bytes(32, "big"))
    with pytest.raises(ValueError, match="one weight per point"):
        SECP.weighted_sum([p], [1, 2])
    for w in (-1, 1 << 256):
        with pytest.raises(ValueError, match="weights are in"):
            SECP.weighted_sum([p], [w])


def test_a_groups_key_cache_is_safe_to_share_between_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server's deposits decode keys in one group from several threads. With the
    cache's look-up and its move to the front apart, a key evicted in between by
    another thread raised KeyError out of ``decode`` (seen at once with a cache of one
    and the interpreter switching threads every microsecond)."""
    group = get_group("modp-2048-256")
    keys = [group.g_pow(k).encoded for k in (2, 3)]
    monkeypatch.setattr(type(group), "_CACHE_SIZE", 1)
    errors: list[BaseException] = []

    def decode_many(step: int) -> None:
        try:
            for n in range(1500):
                assert group.decode(keys[(n * step) % 2]).encoded == keys[(n * step) % 2]
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=decode_many, args=(s,)) for s in (1, 2, 3, 5)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
