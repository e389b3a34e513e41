"""A CARD-CERT read back from the bytes the bank stored (``decode(known=True)``) takes a
reader by offsets (``CardCert._decode_known``): it must accept exactly what the
field-by-field reader accepts with ``known``, and give the same certificate."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

from hypothesis import given, settings
from hypothesis import strategies as st

from jointpay.crypto.certs import CardCert, CardMode, SigningKey, claimed_card, issue_card_cert
from jointpay.crypto.errors import CryptoError
from jointpay.crypto.group import get_group
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import SecretScalar

BANK = SigningKey.generate("B1")
GROUPS = [
    ("secp256k1", None),
    ("modp-2048-256", None),
    ("modp-2048-256", "jointpay-secure-2048-256"),
]


@cache
def issued(which: int, services: tuple[str, ...], mode: CardMode) -> bytes:
    """A CARD-CERT of the bank, in each suite and group."""
    group = get_group(*GROUPS[which])
    number = "4000000000000002"
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
        not_before=1_800_000_000,
        not_after=1_900_000_000,
        max_amount=5_000,
        services=list(services),
    )
    return cert.encode()


def read(data: bytes) -> CardCert | None:
    try:
        return CardCert._read(data, get_group, known=True)
    except CryptoError:
        return None


_CERTS = st.builds(
    issued,
    st.integers(0, len(GROUPS) - 1),
    st.sampled_from([(), ("fuel",), ("fuel", "food.court")]),
    st.sampled_from(list(CardMode)),
)


@settings(max_examples=60, deadline=None)
@given(_CERTS)
def test_an_issued_certificate_is_read_by_offsets_as_by_the_reader(data: bytes) -> None:
    fast = CardCert._decode_known(data, get_group)
    assert fast is not None
    assert fast == read(data)
    assert fast.signature == data[-64:]
    assert fast.encode() == data
    assert CardCert.decode(data, known=True) == fast


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "cut", "insert", "delete"]),
        # the identifiers and names come first: most edits land among them
        st.integers(0, 100) | st.integers(0),
        st.integers(1, 255) | st.sampled_from(b" !~/+0aZ\x7f"),
    ),
    min_size=1,
    max_size=3,
)


def mutate(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    """``data`` with bytes flipped, set, cut short, inserted or deleted."""
    b = bytearray(data)
    for kind, where, value in edits:
        i = where % (len(b) + 1)
        if kind == "flip" and i < len(b):
            b[i] ^= value
        elif kind == "set" and i < len(b):
            b[i] = value
        elif kind == "cut":
            del b[i:]
        elif kind == "insert":
            b[i:i] = bytes([value])
        elif kind == "delete" and i < len(b):
            del b[i]
    return bytes(b)


@settings(max_examples=1500, deadline=None)
@given(_CERTS, _EDITS)
def test_a_mutated_certificate_gets_the_readers_answer(
    data: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """Bytes changed, cut short or grown: the reader by offsets gives up (and the
    field-by-field reader judges) or gives exactly the field-by-field reader's
    certificate; it never accepts what the reader refuses."""
    mutated = mutate(data, edits)
    fast = CardCert._decode_known(mutated, get_group)
    slow = read(mutated)
    if fast is not None:
        assert fast == slow
        assert slow is not None
        assert fast.signature == slow.signature
    try:
        got = CardCert.decode(mutated, known=True)
    except CryptoError:
        assert slow is None
    else:
        assert got == slow


@settings(max_examples=120, deadline=None)
@given(
    _CERTS,
    st.sampled_from(["bank_id", "card_number", "currency", "services"]),
    st.sampled_from(
        ["", " ", "E R", "eur", "EURO", "12", "bad id!", "-lead", "x" * 65, "\u00e9t\u00e9"]
    ),
)
def test_a_field_out_of_its_rules_is_refused_by_both(data: bytes, name: str, value: str) -> None:
    """The same certificate, re-encoded with one field breaking its rule (an identifier,
    a card number, a currency, a service): the reader by offsets refuses what the
    field-by-field reader refuses."""
    cert = read(data)
    assert cert is not None
    bad = replace(cert, **{name: (value,) if name == "services" else value})
    try:
        mutated = bad.encode()
    except (CryptoError, ValueError):  # too long to encode at all
        return
    slow = read(mutated)
    fast = CardCert._decode_known(mutated, get_group)
    assert fast == slow
    if slow is None:
        assert fast is None


@settings(max_examples=800, deadline=None)
@given(_CERTS, _EDITS)
def test_a_certificate_claims_the_card_the_reader_finds(
    data: bytes, edits: list[tuple[str, int, int]]
) -> None:
    """A deposit locks the cards its certificates claim (``claimed_card``) before it
    judges them: every certificate the reader accepts, mutated or not, claims exactly
    its own bank and card, so no card a valid certificate pays from goes unlocked; and
    no bytes make the claim raise."""
    assert claimed_card(data) == ("B1", "4000000000000002")
    mutated = mutate(data, edits)
    claim = claimed_card(mutated)
    cert = read(mutated)
    if cert is not None:
        assert claim == (cert.bank_id, cert.card_number)
    assert claimed_card(mutated[:20]) is None
