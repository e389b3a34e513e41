"""FIG. 8's on-line check answers the bank's own service providers only.

The question is signed with the terminal's key and fresh by its timestamp. Before, anyone
who knew a card number could ask ``POST /v1/online-check`` for the card's balance. Now an
unsigned, forged, stale or misdirected question changes nothing and learns nothing, and
no answer gives the balance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jointpay.api.server import create_app
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import OnlineCheck
from jointpay.service.bank import Bank
from worlds import PIN, Clock


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    h = Home(tmp_path, None, clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
        tf = h.open_merchant(bank, "Shop")
    bank = Bank(h.store(), clock=clock)
    client = TestClient(create_app(lambda: bank, admin_token="t" * 32))
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    return {"home": h, "bank": bank, "client": client, "card": card, "key": key, "clock": clock}


def ask(w: dict[str, Any], amount: int, **changes: Any) -> dict[str, Any]:
    """A question signed by the Shop's terminal; ``changes`` alter it before signing."""
    key: SigningKey = changes.pop("key", w["key"])
    fields: dict[str, Any] = {
        "bank_id": "test-bank",
        "sid": key.owner,
        "card": w["card"],
        "amount": amount,
        "issuer": None,
        "time": w["clock"](),
    }
    return OnlineCheck(**{**fields, **changes}).signed(key)


def post(w: dict[str, Any], body: object) -> tuple[int, dict[str, Any]]:
    r = w["client"].post("/v1/online-check", json=body)
    return r.status_code, r.json()


def test_the_banks_merchant_gets_an_answer_without_the_balance(world: dict[str, Any]) -> None:
    assert post(world, ask(world, 20_000)) == (
        200,
        {"approved": True, "reason": None, "topup": 0},
    )
    status, answer = post(world, ask(world, 20_001))
    assert (status, answer["approved"], answer["reason"]) == (200, False, "insufficient_balance")
    assert "available" not in answer


def test_the_merchant_command_asks_the_same(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    answer = h.online_check("Shop", world["card"], "200.00", world["bank"])
    assert (answer["approved"], answer["currency"]) == (True, "EUR")
    assert h.online_check("Shop", world["card"], "200.01", world["bank"])["approved"] is False


def test_an_unsigned_question_is_malformed(world: dict[str, Any]) -> None:
    """The old form, {card, amount}, which anyone could send."""
    status, answer = post(world, {"card": world["card"], "amount": 1})
    assert (status, answer["code"]) == (400, "malformed")


@pytest.mark.parametrize(
    ("change", "want"),
    [
        ({"key": SigningKey.generate("stranger")}, (404, "unknown_merchant")),
        ({"bank_id": "other-bank"}, (422, "wrong_bank")),
        ({"time": 1}, (422, "stale_message")),
    ],
    ids=["stranger", "other-bank", "stale"],
)
def test_a_question_from_a_stranger_another_banks_or_stale_is_refused(
    world: dict[str, Any], change: dict[str, Any], want: tuple[int, str]
) -> None:
    status, answer = post(world, ask(world, 1, **change))
    assert (status, answer["code"]) == want
    assert "approved" not in answer


def test_a_forged_or_altered_question_is_refused(world: dict[str, Any]) -> None:
    """The Shop's S_id with another key; the Shop's signature over another amount."""
    forged = ask(world, 1, key=SigningKey.generate(world["key"].owner))
    assert post(world, forged)[1]["code"] == "bad_signature"
    altered = {**ask(world, 1), "amount": 20_000}
    status, answer = post(world, altered)
    assert (status, answer["code"]) == (422, "bad_signature")


@pytest.mark.parametrize("amount", ["100", 1.0, True, 0])
def test_the_amount_is_a_positive_json_integer(world: dict[str, Any], amount: object) -> None:
    body = {**ask(world, 100), "amount": amount}
    status, answer = post(world, body)
    assert (status, answer["code"]) == (400, "malformed")


def test_an_unknown_field_is_refused(world: dict[str, Any]) -> None:
    status, answer = post(world, {**ask(world, 1), "available": True})
    assert (status, answer["code"]) == (400, "malformed")


def test_issuer_may_be_left_out_or_null_as_long_as_the_signature_covers_what_was_sent(
    world: dict[str, Any],
) -> None:
    """The signature covers the fields as sent: a client that leaves the optional
    ``issuer`` out and one that sends it as null are both answered."""
    from jointpay.protocol.deposit import ONLINE_CHECK_TAG, canonical_json

    key: SigningKey = world["key"]
    fields = {
        "format": "jointpay-online-check/1",
        "bank_id": "test-bank",
        "sid": key.owner,
        "card": world["card"],
        "amount": 100,
        "time": world["clock"](),
    }
    for body in (fields, {**fields, "issuer": None}):
        signed = {**body, "signature": key.sign(ONLINE_CHECK_TAG, canonical_json(body)).hex()}
        assert post(world, signed) == (200, {"approved": True, "reason": None, "topup": 0})
    # a signature over one form does not pass for the other
    null_signed = key.sign(ONLINE_CHECK_TAG, canonical_json({**fields, "issuer": None})).hex()
    assert post(world, {**fields, "signature": null_signed})[1]["code"] == "bad_signature"


def test_an_unknown_card_is_answered_as_the_issuer_answers_it(world: dict[str, Any]) -> None:
    """Not a 404 for the bank's own card numbers and an answer for other banks' ones."""
    assert post(world, ask(world, 1, card="4000000000000002")) == (
        200,
        {"approved": False, "reason": "unknown_card", "topup": 0},
    )


def test_a_question_is_fresh_for_the_policys_online_window(world: dict[str, Any]) -> None:
    now = world["clock"]()
    assert post(world, ask(world, 1, time=now - 300))[0] == 200
    status, answer = post(world, ask(world, 1, time=now - 301))
    assert (status, answer["code"]) == (422, "stale_message")
