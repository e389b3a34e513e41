"""The vectors of CONTRACT section 3, checked by an independent verifier and by jointpay."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from plain_verifier import (
    GX,
    GY,
    RFC5114_G,
    RFC5114_P,
    RFC5114_Q,
    ec_add,
    ec_decode,
    ec_encode,
    ec_mul,
    verify_case,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = json.loads((ROOT / "vectors" / "payment_cert.json").read_text(encoding="utf-8"))
CASES = DOC["cases"]


def test_schema() -> None:
    assert set(DOC) >= {"description", "groups", "cases"}
    assert DOC["groups"]["rfc5114-2.3"] == {
        "p": format(RFC5114_P, "x"),
        "q": format(RFC5114_Q, "x"),
        "g": format(RFC5114_G, "x"),
    }
    keys = {"suite", "group", "joint_public_key", "ser", "spec", "b", "r", "valid", "comment"}
    for case in CASES:
        assert set(case) == keys, case
        if case["valid"]:
            assert len(bytes.fromhex(case["b"])) == 32
            assert len(bytes.fromhex(case["r"])) == 32
    counts = Counter((c["suite"], c["group"], c["valid"]) for c in CASES)
    for suite, group in (("secp256k1", None), ("modp-2048-256", "rfc5114-2.3")):
        assert counts[(suite, group, True)] >= 10
        assert counts[(suite, group, False)] >= 20


@pytest.mark.parametrize(
    "rule",
    [
        "tampered b",
        "tampered r",
        "tampered ser",
        "tampered spec",
        "wrong key",
        "r = 0",
        "r = q",
        "b = q",
        "identity",
        "b is 31 bytes",
        "r is 33 bytes",
        "ser = 2^64",
    ],
)
def test_every_rule_has_invalid_cases_in_each_suite(rule: str) -> None:
    for suite in ("secp256k1", "modp-2048-256"):
        assert any(
            rule in c["comment"] and not c["valid"] and c["suite"] == suite for c in CASES
        ), (rule, suite)


def test_subgroup_and_curve_rules_covered() -> None:
    comments = " | ".join(c["comment"] for c in CASES if not c["valid"])
    for phrase in (
        "outside the order-q subgroup",
        "off the curve",
        "field prime",
        "uncompressed",
        "Y is 255 bytes",
        "Y is 34 bytes",
        "prefix 04",
    ):
        assert phrase in comments


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['suite']}-{c['group']}-{c['comment']}")
def test_independent_verifier_agrees(case: dict[str, Any]) -> None:
    assert verify_case(case, DOC["groups"]) is case["valid"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['suite']}-{c['group']}-{c['comment']}")
def test_jointpay_agrees(case: dict[str, Any]) -> None:
    from jointpay.crypto.errors import CryptoError
    from jointpay.crypto.group import get_group
    from jointpay.crypto.schnorr import PaymentCert, verify

    group = get_group(case["suite"], case["group"])
    try:
        y = group.decode(bytes.fromhex(case["joint_public_key"]))
        cert = PaymentCert.parse(
            group,
            case["ser"],
            bytes.fromhex(case["spec"]),
            bytes.fromhex(case["b"]),
            bytes.fromhex(case["r"]),
        )
        verify(group, y, cert)
    except CryptoError:
        assert not case["valid"]
    else:
        assert case["valid"]


def test_generator_reproduces_the_files() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen_vectors.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_plain_curve_arithmetic_against_known_multiples() -> None:
    g2 = ec_mul(2, (GX, GY))
    assert g2 == (
        0xC6047F9441ED7D6D3045406E95C07CD85C778E4B8CEF3CA7ABAC09B95C709EE5,
        0x1AE168FEA63DC339A3C58419466CEAEEF7F632653266D0E1236431A950CFE52A,
    )
    g3 = ec_add(g2, (GX, GY))
    assert g3 is not None
    assert g3[0] == 0xF9308A019258C31049344F85F89D5229B531C845836F99B08601F113BCE036F9
    assert ec_decode(ec_encode(g3)) == g3
    assert (
        ec_mul(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141, (GX, GY)) is None
    )


def test_rfc5114_generator_has_order_q() -> None:
    assert pow(RFC5114_G, RFC5114_Q, RFC5114_P) == 1
    assert (RFC5114_P - 1) % RFC5114_Q == 0


def test_card_cert_vectors() -> None:
    from jointpay.crypto.certs import CardCert, VerifyKey
    from jointpay.crypto.errors import CryptoError, DecodeError

    doc = json.loads((ROOT / "vectors" / "card_cert.json").read_text(encoding="utf-8"))
    key = VerifyKey(doc["bank_id"], bytes.fromhex(doc["bank_public_key"]))
    for case in doc["cases"]:
        data = bytes.fromhex(case["cert"])
        if case["valid"]:
            cert = CardCert.decode(data)
            cert.verify(key, at=1_800_000_000, check_proofs=True)
            assert cert.encode() == data
            continue
        if case["expect"] == "decode":
            with pytest.raises(DecodeError):
                CardCert.decode(data)
        else:
            with pytest.raises(CryptoError):
                CardCert.decode(data).verify(key)
