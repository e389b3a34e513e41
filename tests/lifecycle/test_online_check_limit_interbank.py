"""The issuer's limit on on-line checks holds for another bank's merchants too: their
questions come through a clearing house naming the acquirer and the merchant's S_id, and
the card's bank counts them under (acquirer, S_id), as it counts its own merchants'.

Before, the issuer answered every question the house brought; now past its policy's
``online_checks`` it answers ``too_many_checks`` (signed, as any answer), the house
carries that back, and the acquirer refuses its merchant with the same code."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from jointpay.service.errors import BadInput, Refused
from jointpay.service.policy import Policy
from jointpay.service.scheme import CLEAR_TAG, INTERBANK_TAG, sign_body
from scheme_world import Scheme, scheme


def house_question(w: Scheme, **changes: object) -> dict[str, object]:
    """bank-a's question to the house about bank-b's card, signed by bank-a."""
    body: dict[str, object] = {
        "format": "jointpay-online/1",
        "acquirer": "bank-a",
        "clearing_house": "ch-1",
        "issuer": "bank-b",
        "merchant": "SP-test",
        "card": w.card,
        "amount": 1_000,
        "time": w.clock(),
    }
    return sign_body(w.a.signing_key, CLEAR_TAG, {**body, **changes})


def issuer_question(w: Scheme, **changes: object) -> dict[str, object]:
    """The house's question to bank-b, signed by the house."""
    body: dict[str, object] = {
        "format": "jointpay-online/1",
        "clearing_house": "ch-1",
        "acquirer": "bank-a",
        "issuer": "bank-b",
        "merchant": "SP-test",
        "card": w.card,
        "amount": 1_000,
        "time": w.clock(),
    }
    return sign_body(w.house._key, INTERBANK_TAG, {**body, **changes})


def test_the_issuer_limits_another_banks_merchant_by_its_bank_and_sid(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    w = scheme(tmp_path, policy_b=Policy(online_checks=2))
    sid = w.ha.terminal_file("Shop").sid
    for _ in range(2):
        assert w.ha.online_check("Shop", w.card, 1_000, w.a, issuer="bank-b")["approved"]
    with caplog.at_level(logging.INFO, logger="jointpay.online"), pytest.raises(Refused) as third:
        w.ha.online_check("Shop", w.card, 1_000, w.a, issuer="bank-b")
    assert third.value.code == "too_many_checks"
    assert "bank-b" in third.value.message
    assert third.value.retry_after == 86_400  # the issuer's word, carried by the house
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"online check by bank-a/{sid}: card ...{w.card[-4:]}, 1000: "
            "too_many_checks (2 within 86400 s)",
        )
    ]
    # another merchant of bank-a is still answered about the same card
    w.ha.open_merchant(w.a, "Cafe")
    assert w.ha.online_check("Cafe", w.card, 1_000, w.a, issuer="bank-b")["approved"] is True
    # and so is the same S_id at another acquirer: the key is (acquirer, S_id)
    other = w.b.interbank_online_check(issuer_question(w, acquirer="bank-c", merchant=sid))
    assert (other["approved"], other["reason"]) == (True, None)
    # the issuer's answer past the limit is signed and carried back by the house as is
    for _ in range(2):
        assert w.house.online_check(house_question(w))["approved"] is True
    refused = w.house.online_check(house_question(w))
    assert (refused["approved"], refused["reason"], refused["topup"]) == (
        False,
        "too_many_checks",
        0,
    )
    assert refused["retry_after"] == 86_400
    assert w.audits_ok()


def test_the_window_slides_for_another_banks_merchant_too(tmp_path: Path) -> None:
    w = scheme(tmp_path, policy_b=Policy(online_checks=1, online_checks_window=600))
    assert w.ha.online_check("Shop", w.card, 1_000, w.a, issuer="bank-b")["approved"]
    with pytest.raises(Refused):
        w.ha.online_check("Shop", w.card, 1_000, w.a, issuer="bank-b")
    w.clock.now += 600
    assert w.ha.online_check("Shop", w.card, 1_000, w.a, issuer="bank-b")["approved"]


def test_the_issuer_refuses_a_question_it_could_not_count(tmp_path: Path) -> None:
    """What the issuer counts under must be a card number, an acquirer's id and an S_id
    (or ``-``, the acquirer's own question): a 40-digit "card" or an empty merchant is
    malformed, not counted (it would not fit the count's columns)."""
    w = scheme(tmp_path)
    for change in (
        {"card": "4" * 40},
        {"card": "card"},
        {"merchant": ""},
        {"merchant": "x" * 65},
        {"acquirer": "bank a"},
    ):
        with pytest.raises(BadInput) as bad:
            w.b.interbank_online_check(issuer_question(w, **change))
        assert bad.value.code == "malformed", change
    assert w.b.interbank_online_check(issuer_question(w, merchant="-"))["approved"] is True
