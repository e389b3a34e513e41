"""Properties of the signature: sign-then-verify holds; any single-bit change fails."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jointpay.crypto.certs import CardCert, CardMode, SigningKey, issue_card_cert
from jointpay.crypto.encoding import Reader, Writer
from jointpay.crypto.errors import CryptoError, InvalidSignature
from jointpay.crypto.group import get_group
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import PaymentCert, SecretScalar, sign, verify

SUITES = {"secp256k1": 60, "modp-2048-256": 15}
ser_st = st.integers(min_value=0, max_value=(1 << 64) - 1)
spec_st = st.binary(max_size=300)


@pytest.mark.parametrize(("suite", "examples"), SUITES.items())
def test_sign_then_verify(suite: str, examples: int) -> None:
    group = get_group(suite)

    @settings(max_examples=examples, deadline=None)
    @given(x=st.integers(min_value=1, max_value=group.q - 1), ser=ser_st, spec=spec_st)
    def prop(x: int, ser: int, spec: bytes) -> None:
        y = group.public_key(x)
        cert, a = sign(group, SecretScalar(x), y, ser, spec)
        assert verify(group, y, cert) == a

    prop()


@pytest.mark.parametrize(("suite", "examples"), SUITES.items())
def test_any_single_bit_change_fails(suite: str, examples: int) -> None:
    group = get_group(suite)
    x = SecretScalar(group.random_scalar())
    y = group.public_key(x.reveal())

    @settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(
        ser=ser_st,
        spec=spec_st.filter(len),
        field=st.sampled_from("bsrp"),
        bit=st.integers(min_value=0, max_value=255),
    )
    def prop(ser: int, spec: bytes, field: str, bit: int) -> None:
        cert, _ = sign(group, x, y, ser, spec)
        if field == "b":
            changed = PaymentCert(ser, spec, cert.b ^ (1 << bit), cert.r)
        elif field == "r":
            changed = PaymentCert(ser, spec, cert.b, cert.r ^ (1 << bit))
        elif field == "s":
            changed = PaymentCert(ser ^ (1 << (bit % 64)), spec, cert.b, cert.r)
        else:
            flipped = bytearray(spec)
            flipped[(bit // 8) % len(spec)] ^= 1 << (bit % 8)
            changed = PaymentCert(ser, bytes(flipped), cert.b, cert.r)
        with pytest.raises(InvalidSignature):
            verify(group, y, changed)

    prop()


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.integers(0, 255).map(lambda v: ("u8", v)),
            st.integers(0, (1 << 64) - 1).map(lambda v: ("u64", v)),
            st.binary(max_size=50).map(lambda v: ("blob", v)),
            st.text(max_size=20).filter(str.isprintable).map(lambda v: ("text", v)),
        )
    )
)
def test_encoding_round_trip(fields: list[tuple[str, object]]) -> None:
    w = Writer()
    for kind, value in fields:
        getattr(w, kind)(value)
    rd = Reader(w.finish(), "prop")
    assert [(k, getattr(rd, k)("f")) for k, _ in fields] == fields
    rd.finish()


BANK = SigningKey.generate("prop-bank")


@settings(max_examples=40, deadline=None)
@given(
    number=st.from_regex(r"\A[0-9]{8,19}\Z"),
    nb=st.integers(0, 1 << 40),
    span=st.integers(1, 1 << 40),
    max_amount=st.integers(0, (1 << 63) - 1),
    services=st.lists(st.from_regex(r"\A[a-z][a-z0-9]{0,10}\Z"), max_size=4),
    mode=st.sampled_from(list(CardMode)),
)
def test_card_cert_decode_encode_identity(
    number: str, nb: int, span: int, max_amount: int, services: list[str], mode: CardMode
) -> None:
    group = get_group("secp256k1")
    contribs = [
        prove_possession(group, SecretScalar(group.random_scalar()), number, r)
        for r in (Role.USER, Role.BANK)
    ]
    cert = issue_card_cert(
        BANK,
        group=group,
        card_number=number,
        contributions=contribs,
        currency="EUR",
        mode=mode,
        not_before=nb,
        not_after=nb + span,
        max_amount=max_amount,
        services=services,
    )
    data = cert.encode()
    assert CardCert.decode(data).encode() == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_card_cert_decode_is_total(data: bytes) -> None:
    with contextlib.suppress(CryptoError):
        CardCert.decode(data)
