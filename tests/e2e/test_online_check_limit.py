"""The policy's limit on on-line checks: one merchant may ask about one card
``online_checks`` times within ``online_checks_window``.

Yes or no to many amounts brackets a balance: about 40 questions find a card's balance
to the minor unit. Before, every question was answered (and only logged). Now past the
limit the bank refuses ``too_many_checks`` (HTTP 429) and changes nothing; another
merchant asking about the same card is still answered; the window slides; and a card
number the bank never issued is counted exactly as one of its cards, so the limit tells
no one which numbers are the bank's. Run on memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jointpay.api.server import create_app
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import OnlineCheck
from jointpay.service.bank import Bank
from jointpay.service.errors import BadInput, Refused
from jointpay.service.policy import DAY, Policy
from pg import fresh_schema, schema_url
from worlds import PIN, Clock

UNKNOWN = "4000000000000002"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, Any]]:
    with fresh_schema() if request.param == "postgres" else nullcontext("") as schema:
        url = {"memory": "memory:", "sqlite": None, "postgres": schema and schema_url(schema)}[
            request.param
        ]
        clock = Clock()
        h = Home(tmp_path, url, clock)
        h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
        with h.bank() as bank:
            bank.open_account("alice", 50_000)
            card = h.issue_card(
                bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
            ).card_number
            shop, cafe = h.open_merchant(bank, "Shop"), h.open_merchant(bank, "Cafe")
        bank = Bank(h.store(), clock=clock)
        bank.set_policy(online_checks=3, online_checks_window=3_600)
        client = TestClient(create_app(lambda: bank, admin_token="t" * 32))
        keys = {
            name: SigningKey.from_private_bytes(tf.sid, tf.signing_key)
            for name, tf in (("Shop", shop), ("Cafe", cafe))
        }
        yield {
            "home": h,
            "bank": bank,
            "client": client,
            "card": card,
            "keys": keys,
            "clock": clock,
        }
        bank.close()
        bank.store.close()


def post(w: dict[str, Any], amount: int, merchant: str = "Shop", card: str | None = None) -> Any:
    """``POST /v1/online-check``, signed by the merchant's terminal: (status, body)."""
    key: SigningKey = w["keys"][merchant]
    body = OnlineCheck("test-bank", key.owner, card or w["card"], amount, None, w["clock"]())
    r = w["client"].post("/v1/online-check", json=body.signed(key))
    return r.status_code, r.json()


def books(bank: Bank) -> dict[str, int]:
    with bank.store.transaction() as tx:
        return {a.id: a.balance for a in tx.list_accounts()}


def test_past_the_limit_the_merchant_is_refused_429_and_nothing_changes(
    world: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    assert [post(world, a)[1]["approved"] for a in (10_000, 30_000, 20_000)] == [
        True,
        False,
        True,
    ]  # 20,000 < balance <= 30,000 after three questions; a fourth is not answered
    before = books(world["bank"])
    with caplog.at_level(logging.INFO, logger="jointpay.online"):
        status, problem = post(world, 25_000)
    assert status == 429
    assert problem["code"] == problem["title"] == "too_many_checks"
    assert problem["status"] == 429
    assert "approved" not in problem
    assert "25000" not in problem["detail"]
    assert "3 times within 3600 s" in problem["detail"]
    assert books(world["bank"]) == before
    sid = world["keys"]["Shop"].owner
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            f"online check by {sid}: card ...{world['card'][-4:]}, 25000: "
            "too_many_checks (3 within 3600 s)",
        )
    ]
    # refusals are not counted: it stays refused, and no longer than the window
    world["clock"].now += 60
    assert post(world, 1)[0] == 429


def test_another_merchant_is_still_answered_about_the_same_card(world: dict[str, Any]) -> None:
    """Counted per (card, merchant): one shop's questions cannot use a card's quota up
    and have it refused at every other shop."""
    for _ in range(3):
        assert post(world, 1)[0] == 200
    assert post(world, 1)[0] == 429
    assert post(world, 1, merchant="Cafe") == (200, {"approved": True, "reason": None, "topup": 0})


def test_after_the_window_the_merchant_is_answered_again(world: dict[str, Any]) -> None:
    clock = world["clock"]
    start = clock.now
    assert post(world, 1)[0] == 200
    clock.now = start + 1_000
    assert post(world, 1)[0] == post(world, 1)[0] == 200
    clock.now = start + 3_599
    assert post(world, 1)[0] == 429
    clock.now = start + 3_600  # the first question is out of the window, not the others
    assert post(world, 1)[0] == 200
    assert post(world, 1)[0] == 429
    clock.now = start + 1_000 + 3_600
    assert post(world, 1)[0] == post(world, 1)[0] == 200


def test_a_refusal_says_when_the_merchant_may_ask_again(world: dict[str, Any]) -> None:
    """429 carries Retry-After (and the problem's ``retry_after``): the seconds until
    enough of the merchant's oldest questions about the card leave the window."""
    clock = world["clock"]
    start = clock.now
    key: SigningKey = world["keys"]["Shop"]

    def asked() -> Any:
        body = OnlineCheck("test-bank", key.owner, world["card"], 1, None, clock())
        return world["client"].post("/v1/online-check", json=body.signed(key))

    assert asked().status_code == 200
    clock.now = start + 1_000
    assert asked().status_code == asked().status_code == 200
    clock.now = start + 3_000
    refused = asked()
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "600"  # the question at start leaves then
    assert refused.json()["retry_after"] == 600
    clock.now = start + 3_600
    assert asked().status_code == 200
    refused = asked()  # start + 1,000 holds two: both must leave
    assert (refused.status_code, refused.headers["Retry-After"]) == (429, "1000")
    clock.now = start + 1_000 + 3_600
    answered = asked()
    assert answered.status_code == 200
    assert "Retry-After" not in answered.headers


def test_an_unknown_card_is_counted_as_a_known_one(world: dict[str, Any]) -> None:
    """The limit is no oracle: a number the bank never issued is answered unknown_card
    and refused past the limit exactly as its own card is, at the same count."""
    known = [post(world, 1)[0] for _ in range(4)]
    unknown = [post(world, 1, card=UNKNOWN) for _ in range(4)]
    assert [s for s, _ in unknown] == known == [200, 200, 200, 429]
    assert unknown[0][1]["reason"] == "unknown_card"
    assert unknown[3][1]["code"] == "too_many_checks"


def test_the_bank_refuses_the_merchant_command_past_the_limit(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    for _ in range(3):
        h.online_check("Shop", world["card"], "1.00", world["bank"])
    with pytest.raises(Refused) as refused:
        h.online_check("Shop", world["card"], "1.00", world["bank"])
    assert refused.value.code == "too_many_checks"


def test_past_the_limit_a_payment_is_declined_above_the_floor_and_offline_below(
    world: dict[str, Any],
) -> None:
    """The bank's too_many_checks says nothing about the card: a payment the bank must
    clear (above the floor limit) is declined, one asked about only by sample goes on
    offline as with a bank that cannot be reached (``unanswered``), and is taken."""
    from jointpay.protocol.terminal import Clearance, PaymentDeclined

    h: Home = world["home"]
    bank: Bank = world["bank"]
    for _ in range(3):
        h.online_check("Shop", world["card"], "1.00", bank)
    with pytest.raises(PaymentDeclined) as declined:
        h.pay(world["card"], "Shop", 1_000, PIN, bank=bank, floor_limit=500)
    assert declined.value.code == "online_declined"
    assert "too_many_checks" in str(declined.value)
    cleared: list[Clearance] = []
    taken = h.pay(
        world["card"], "Shop", 100, PIN, bank=bank, floor_limit=500, online_sample=1.0,
        cleared=cleared.append,
    )  # fmt: skip
    assert taken.amount == 100
    assert [c.status for c in cleared] == ["unanswered"]
    with h.terminal("Shop") as (_, store):
        assert [p.amount for p in store.pending()] == [100]  # only the one taken


def test_merchant_check_refuses_an_answer_that_is_not_one(world: dict[str, Any]) -> None:
    """``merchant check`` through a bank whose reply lost its ``approved`` (as a proxy
    or another version might send): refused ``bank_unreachable``, not a KeyError."""
    h: Home = world["home"]
    bank: Bank = world["bank"]

    class Damaged:
        bank_id = bank.bank_id

        def parameters(self) -> dict[str, Any]:
            return bank.parameters()

        def online_check(self, message: dict[str, Any]) -> dict[str, Any]:
            answer = dict(bank.online_check(message))
            del answer["approved"]
            return answer

    with pytest.raises(Refused) as refused:
        h.online_check("Shop", world["card"], "1.00", Damaged())  # type: ignore[arg-type]
    assert refused.value.code == "bank_unreachable"
    assert "approved" in refused.value.message
    sound = h.online_check("Shop", world["card"], "1.00", bank)
    assert (sound["approved"], sound["currency"]) == (True, "EUR")


def test_the_default_is_twenty_a_day(world: dict[str, Any]) -> None:
    bank: Bank = world["bank"]
    bank.set_policy(online_checks=Policy().online_checks)
    assert (Policy().online_checks, Policy().online_checks_window) == (20, DAY)
    assert [post(world, 1)[0] for _ in range(21)] == [200] * 20 + [429]


def test_unworkable_limits_are_refused_and_the_policy_kept(world: dict[str, Any]) -> None:
    bank: Bank = world["bank"]
    for change in ({"online_checks": 0}, {"online_checks_window": 0}):
        with pytest.raises(BadInput) as bad:
            bank.set_policy(**change)
        assert bad.value.code == "bad_policy"
        name = next(iter(change))
        assert name in bad.value.message
    assert (bank.policy.online_checks, bank.policy.online_checks_window) == (3, 3_600)
    assert Policy(online_checks=0).problems() == [
        "online_checks must be at least 1 (no merchant could ask at all)"
    ]
    assert Policy(online_checks_window=0).problems() == [
        "online_checks_window must be above zero (seconds)"
    ]


def _jp(home: Path, *args: str, stdin: str = "") -> tuple[int, dict[str, Any]]:
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), *args, "--json"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return run.returncode, json.loads(run.stdout)


def test_the_command_line_sets_the_limit_and_says_too_many_checks(tmp_path: Path) -> None:
    """``bank policy --set`` takes the two values (and refuses 0, exit 2); ``merchant
    check`` past the limit exits 1 with the code, as a refused payment does."""
    home = tmp_path
    assert _jp(home, "bank", "init")[0] == 0
    assert _jp(home, "bank", "open-merchant", "--name", "Shop")[0] == 0
    code, policy = _jp(
        home, "bank", "policy", "--set", "online_checks=1", "--set", "online_checks_window=600"
    )
    assert (code, policy["online_checks"], policy["online_checks_window"]) == (0, 1, 600)
    code, bad = _jp(home, "bank", "policy", "--set", "online_checks=0")
    assert (code, bad["error"]) == (2, "bad_policy")
    check = ("merchant", "check", "--merchant", "Shop", "--card", UNKNOWN, "--amount", "1")
    code, first = _jp(home, *check)
    assert (code, first["approved"], first["reason"]) == (1, False, "unknown_card")
    code, second = _jp(home, *check)
    assert (code, second["error"]) == (1, "too_many_checks")
    human = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), *check],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert human.returncode == 1
    assert "too_many_checks" in human.stderr
