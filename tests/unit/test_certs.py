"""CARD-CERT, MERCHANT-CERT, bank keys and MACs: round trips and every refusal."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from jointpay.crypto.certs import (
    BankCert,
    BankRole,
    CardCert,
    CardMode,
    MerchantCert,
    SigningKey,
    VerifyKey,
    check_card_number,
    check_currency,
    check_ident,
    claimed_card,
    issue_bank_cert,
    issue_card_cert,
    mac,
    new_cert_id,
    verify_mac,
)
from jointpay.crypto.encoding import Writer
from jointpay.crypto.errors import (
    CryptoError,
    DecodeError,
    ExpiredCertificateError,
    InvalidCertificateError,
    InvalidSignature,
)
from jointpay.crypto.group import get_group
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import SecretScalar
from jointpay.domain.money import AmountError, format_amount, parse_amount, parse_rate
from jointpay.domain.money import check_currency as money_currency

SECP = get_group("secp256k1")
CARD = "4000000000000002"
BANK = SigningKey.generate("test-bank")


def contributions(card: str = CARD) -> list:  # type: ignore[type-arg]
    return [
        prove_possession(SECP, SecretScalar(SECP.random_scalar()), card, Role.USER),
        prove_possession(SECP, SecretScalar(SECP.random_scalar()), card, Role.BANK),
    ]


def card_cert(**kw: object) -> CardCert:
    args: dict[str, object] = {
        "group": SECP,
        "card_number": CARD,
        "contributions": contributions(),
        "currency": "EUR",
        "mode": CardMode.CASH,
        "not_before": 100,
        "not_after": 200,
        "max_amount": 5000,
        "services": ("retail", "transport"),
    }
    args.update(kw)
    return issue_card_cert(BANK, **args)  # type: ignore[arg-type]


def test_round_trip_and_verify() -> None:
    cert = card_cert()
    data = cert.encode()
    again = CardCert.decode(data)
    assert again == cert
    assert again.encode() == data
    again.verify(BANK.verify_key, at=150, check_proofs=True)
    assert cert.suite == "secp256k1"
    assert len(cert.id_hex) == 32
    assert len(cert.digest) == 32
    modp = get_group("modp-2048-256")
    cm = issue_card_cert(
        BANK,
        group=modp,
        card_number=CARD,
        contributions=[
            prove_possession(modp, SecretScalar(modp.random_scalar()), CARD, r)
            for r in (Role.USER, Role.BANK)
        ],
        currency="JPY",
        mode=CardMode.CREDIT,
        not_before=1,
        not_after=2,
    )
    assert CardCert.decode(cm.encode()) == cm


def test_validity() -> None:
    cert = card_cert()
    cert.check_validity(100)
    for t in (99, 200):
        with pytest.raises(ExpiredCertificateError):
            cert.verify(BANK.verify_key, at=t)


def test_verify_refusals() -> None:
    cert = card_cert()
    with pytest.raises(InvalidCertificateError, match="issued by"):
        cert.verify(VerifyKey("other", BANK.verify_key.raw))
    impostor = SigningKey.generate("test-bank")
    with pytest.raises(InvalidCertificateError, match="signature"):
        cert.verify(impostor.verify_key)
    other_y = SECP.public_key(7)
    forged = replace(cert, joint_key=other_y).signed(BANK)
    with pytest.raises(InvalidCertificateError, match="product"):
        forged.verify(BANK.verify_key)
    bad_proof = replace(
        cert,
        contributions=(
            cert.contributions[0],
            replace(cert.contributions[1], proof_s=cert.contributions[1].proof_s ^ 1),
        ),
    ).signed(BANK)
    bad_proof.verify(BANK.verify_key)  # proofs are checked only on request
    with pytest.raises(InvalidCertificateError, match="contributions"):
        bad_proof.verify(BANK.verify_key, check_proofs=True)
    with pytest.raises(ValueError, match="not signed"):
        replace(cert, signature=b"").encode()


def test_every_truncation_is_a_decode_error() -> None:
    data = card_cert().encode()
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            CardCert.decode(data[:n])
    with pytest.raises(DecodeError, match="trailing"):
        CardCert.decode(data + b"\x00")


def test_no_byte_flip_is_accepted_with_changed_content() -> None:
    cert = card_cert()
    data = cert.encode()
    for i in range(len(data)):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        try:
            CardCert.decode(bytes(flipped)).verify(BANK.verify_key)
        except CryptoError:
            continue
        raise AssertionError(f"a flip at byte {i} was accepted")


def test_a_certificate_claims_its_bank_and_card_from_its_bytes() -> None:
    """What a deposit locks before it judges the certificate: the bank id and card
    number at their offsets, or None where the bytes cannot hold them."""
    data = card_cert().encode()
    assert claimed_card(data) == ("test-bank", CARD)
    assert claimed_card(b"") is None
    assert claimed_card(b"\x02" + data[1:]) is None  # another version
    head = 1 + 16
    for n in range(head + 4 + len("test-bank") + 4 + len(CARD)):
        assert claimed_card(data[:n]) is None  # cut inside either field
    too_long = data[:head] + (65).to_bytes(4, "big") + b"b" * 65 + data[head + 13 :]
    assert claimed_card(too_long) is None  # a bank id over its 64 bytes
    not_text = bytearray(data)
    not_text[head + 4] = 0xFF  # no UTF-8
    assert claimed_card(bytes(not_text)) is None
    not_text[head + 4] = 0x07  # UTF-8, but a control character
    assert claimed_card(bytes(not_text)) is None


def _body(**over: object) -> bytes:
    """A CARD-CERT body written field by field, to reach each decode refusal."""
    cert = card_cert()
    f: dict[str, object] = {
        "version": 1,
        "card": CARD,
        "suite": "secp256k1",
        "group": "",
        "digest": None,
        "n": 2,
        "currency": "EUR",
        "mode": "cash",
        "nb": 100,
        "na": 200,
        "services": ["retail"],
    }
    f.update(over)
    w = Writer().u8(int(f["version"])).raw(cert.cert_id).text("test-bank").text(str(f["card"]))  # type: ignore[call-overload]
    w.text(str(f["suite"])).text(str(f["group"]))
    from jointpay.crypto.group import params_digest

    w.raw(f["digest"] if f["digest"] is not None else params_digest(SECP))  # type: ignore[arg-type]
    n = int(f["n"])  # type: ignore[call-overload]
    w.u8(n)
    for c in list(cert.contributions)[: min(n, 2)]:
        w.raw(c.encode())
    w.blob(cert.joint_key.encoded).text(str(f["currency"])).text(str(f["mode"]))
    w.u64(int(f["nb"])).u64(int(f["na"])).u64(0)  # type: ignore[call-overload]
    services = list(f["services"])  # type: ignore[call-overload]
    w.u8(len(services))
    for s in services:
        w.text(s)
    return w.raw(bytes(64)).finish()


@pytest.mark.parametrize(
    ("over", "msg"),
    [
        ({"version": 2}, "version"),
        ({"card": "12"}, "card number"),
        ({"suite": "ed448"}, "unusable group"),
        ({"digest": bytes(32)}, "group parameters"),
        ({"n": 1}, "contributions"),
        ({"currency": "eur"}, "currency"),
        ({"mode": "barter"}, "mode"),
        ({"nb": 300}, "interval"),
        ({"services": ["x"] * 17}, "services"),
        ({"services": ["bad service"]}, "service"),
    ],
)
def test_card_cert_decode_refusals(over: dict[str, object], msg: str) -> None:
    with pytest.raises(DecodeError, match=msg):
        CardCert.decode(_body(**over))


def test_issue_refusals() -> None:
    with pytest.raises(DecodeError):
        card_cert(card_number="abc")
    with pytest.raises(DecodeError):
        card_cert(currency="euro")
    with pytest.raises(DecodeError):
        card_cert(services=("no spaces",))
    with pytest.raises(ValueError, match="empty validity"):
        card_cert(not_before=5, not_after=5)


def test_identifier_checks() -> None:
    assert check_ident("bank-1.a:b_c", "x") == "bank-1.a:b_c"
    # "\n" last: a pattern's "$" matches before a final newline, which must not pass
    for bad in ("", "-lead", "a" * 65, "sp ace", 5, "bank\n"):
        with pytest.raises(DecodeError):
            check_ident(bad, "x")  # type: ignore[arg-type]
    assert check_card_number("12345678") == "12345678"
    for bad in ("1234567", "1" * 20, "12a45678", "12345678\n"):
        with pytest.raises(DecodeError):
            check_card_number(bad)
    for bad in ("EU", "EUR\n"):
        with pytest.raises(DecodeError):
            check_currency(bad)


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (lambda t: parse_amount(t, "EUR"), "12.34\n"),
        (lambda t: parse_amount(t, "EUR"), "12\n"),
        (parse_rate, "0.92\n"),
        (money_currency, "EUR\n"),
        (lambda t: format_amount(5, t), "EUR\n"),
    ],
)
def test_money_text_with_a_final_newline_is_refused(parse: Any, text: str) -> None:
    with pytest.raises(AmountError):
        parse(text)


def merchant_cert() -> MerchantCert:
    key = SigningKey.generate("SP1")
    return MerchantCert(
        new_cert_id(), "test-bank", "SP1", "Corner Shop", key.verify_key.raw, 100, 200
    ).signed(BANK)


def test_merchant_cert() -> None:
    mc = merchant_cert()
    again = MerchantCert.decode(mc.encode())
    assert again == mc
    again.verify(BANK.verify_key, at=150)
    assert again.verify_key.owner == "SP1"
    with pytest.raises(ExpiredCertificateError):
        mc.verify(BANK.verify_key, at=200)
    with pytest.raises(InvalidCertificateError, match="issued by"):
        mc.verify(VerifyKey("x", BANK.verify_key.raw))
    with pytest.raises(InvalidCertificateError, match="signature"):
        replace(mc, name="Other Shop").verify(BANK.verify_key)
    with pytest.raises(ValueError, match="not signed"):
        replace(mc, signature=b"").encode()
    data = mc.encode()
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            MerchantCert.decode(data[:n])


@pytest.mark.parametrize(
    ("field", "msg"),
    [("version", "version"), ("name", "name"), ("key", "key"), ("interval", "interval")],
)
def test_merchant_cert_decode_refusals(field: str, msg: str) -> None:
    w = Writer().u8(2 if field == "version" else 1).raw(bytes(16)).text("bank").text("SP1")
    w.text("  " if field == "name" else "Shop").blob(bytes(31 if field == "key" else 32))
    w.u64(300 if field == "interval" else 100).u64(200).raw(bytes(64))
    with pytest.raises(DecodeError, match=msg):
        MerchantCert.decode(w.finish())


def test_keys_and_macs() -> None:
    key = SigningKey.generate("owner")
    assert "hidden" in repr(key)
    assert key.private_bytes().hex() not in repr(key) + str(key)
    again = SigningKey.from_private_bytes("owner", key.private_bytes())
    assert again.verify_key == key.verify_key
    assert len(key.verify_key.fingerprint) == 16
    sig = key.sign(b"tag", b"msg")
    key.verify_key.verify(b"tag", b"msg", sig)
    with pytest.raises(InvalidSignature):
        key.verify_key.verify(b"other-tag", b"msg", sig)
    with pytest.raises(InvalidSignature, match="64 bytes"):
        key.verify_key.verify(b"tag", b"msg", sig[:-1])
    with pytest.raises(DecodeError):
        SigningKey.from_private_bytes("owner", bytes(31))
    with pytest.raises(DecodeError):
        VerifyKey("owner", bytes(31))
    k = bytes(32)
    verify_mac(k, b"t", b"m", mac(k, b"t", b"m"))
    with pytest.raises(InvalidSignature):
        verify_mac(k, b"t", b"m", mac(k, b"u", b"m"))
    with pytest.raises(ValueError, match="32 bytes"):
        mac(bytes(16), b"t", b"m")


SCHEME = SigningKey.generate("scheme")


def test_bank_cert_round_trip_and_refusals() -> None:
    bc = issue_bank_cert(
        SCHEME,
        bank_id="bank-b",
        public_key=BANK.verify_key.raw,
        role=BankRole.BANK,
        not_before=100,
        not_after=200,
    )
    again = BankCert.decode(bc.encode())
    assert again == bc
    again.verify(SCHEME.verify_key, at=150, role=BankRole.BANK)
    assert again.verify_key == VerifyKey("bank-b", BANK.verify_key.raw)
    with pytest.raises(ExpiredCertificateError):
        bc.verify(SCHEME.verify_key, at=200)
    with pytest.raises(InvalidCertificateError, match="not a clearing"):
        bc.verify(SCHEME.verify_key, role=BankRole.CLEARING)
    with pytest.raises(InvalidCertificateError, match="issued by scheme"):
        bc.verify(VerifyKey("other", SCHEME.verify_key.raw))
    with pytest.raises(InvalidCertificateError, match="signature"):
        replace(bc, role=BankRole.CLEARING).verify(SCHEME.verify_key)
    with pytest.raises(ValueError, match="not signed"):
        replace(bc, signature=b"").encode()
    data = bc.encode()
    for n in range(len(data)):
        with pytest.raises(DecodeError):
            BankCert.decode(data[:n])
    with pytest.raises(ValueError, match="empty"):
        issue_bank_cert(
            SCHEME,
            bank_id="b",
            public_key=BANK.verify_key.raw,
            role=BankRole.BANK,
            not_before=5,
            not_after=5,
        )


@pytest.mark.parametrize(
    ("field", "msg"),
    [("version", "version"), ("role", "role"), ("key", "key"), ("interval", "interval")],
)
def test_bank_cert_decode_refusals(field: str, msg: str) -> None:
    w = Writer().u8(2 if field == "version" else 1).raw(bytes(16)).text("scheme").text("b")
    w.text("king" if field == "role" else "bank").blob(bytes(31 if field == "key" else 32))
    w.u64(300 if field == "interval" else 100).u64(200).raw(bytes(64))
    with pytest.raises(DecodeError, match=msg):
        BankCert.decode(w.finish())
