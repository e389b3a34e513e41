"""What the bank's HTTP service does with input a client should never send: the
protocol's strict reading of JSON on every typed endpoint, identifiers checked before
they reach the database, bodies bounded, and one answer per Idempotency-Key even for
two requests in flight at once. Each refusal changes nothing.

In process (Starlette's test client) against a SQLite bank, so that a use case can be
slowed down to make two requests overlap.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from jointpay.api.server import SMALL_BODY, create_app
from jointpay.home import Home
from jointpay.service.bank import Bank
from jointpay.service.errors import BadInput
from worlds import PIN, Clock

TOKEN = "admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def bank_app(tmp_path: Path) -> tuple[Bank, TestClient, str]:
    clock = Clock()
    h = Home(tmp_path, None, clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
    bank = Bank(h.store(), clock=clock)
    client = TestClient(create_app(lambda: bank, admin_token=TOKEN), raise_server_exceptions=False)
    return bank, client, card


def _no_account(bank: Bank, holder: str) -> bool:
    try:
        bank.account(f"holder:{holder}")
    except BadInput:
        return True
    return False


@pytest.mark.parametrize(
    "body",
    [
        b'{"holder": "carol", "balance": "100"}',
        b'{"holder": "carol", "balance": 100.0}',
        b'{"holder": "carol", "balance": 1e5}',
        b'{"holder": "carol", "balance": true}',
        b'{"holder": "carol", "balance": 1, "balance": 999999}',
        b'{"holder": "carol", "balance": 100, "currency": "USD"}',
    ],
)
def test_a_typed_body_is_read_as_strictly_as_the_protocol_reads_json(
    bank_app: tuple[Bank, TestClient, str], body: bytes
) -> None:
    bank, client, _ = bank_app
    r = client.post(
        "/v1/admin/accounts", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["code"]) == (400, "malformed")
    assert _no_account(bank, "carol")
    ok = client.post("/v1/admin/accounts", json={"holder": "carol", "balance": 100}, headers=ADMIN)
    assert ok.status_code == 200
    assert bank.account("holder:carol").balance == 100


def test_identifiers_and_texts_are_checked_before_they_reach_the_database(
    bank_app: tuple[Bank, TestClient, str],
) -> None:
    bank, client, card = bank_app
    for bad in ("%00", "a%20b", "-1"):
        r = client.get(f"/v1/deposits/{bad}", headers=ADMIN)
        assert (r.status_code, r.json()["code"]) == (400, "malformed"), bad
    assert client.get("/v1/deposits/SP0000000001:1", headers=ADMIN).status_code == 404
    r = client.post("/v1/admin/blacklist", json={"card": card, "reason": "x\x00"}, headers=ADMIN)
    assert (r.status_code, r.json()["code"]) == (400, "malformed")
    assert bank.card(card).status.value == "active"


def test_a_typed_body_above_its_bound_is_refused_unread(
    bank_app: tuple[Bank, TestClient, str],
) -> None:
    bank, client, _ = bank_app
    body = b'{"holder": "carol", "balance": 1, "pad": "' + b"x" * SMALL_BODY + b'"}'
    r = client.post(
        "/v1/admin/accounts", content=body, headers={**ADMIN, "Content-Type": "application/json"}
    )
    assert (r.status_code, r.json()["code"]) == (413, "too_large")
    assert _no_account(bank, "carol")


def test_two_requests_with_one_idempotency_key_in_flight_get_one_answer(
    bank_app: tuple[Bank, TestClient, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opening an account is not idempotent by itself (the second is refused
    ``exists``): the key must make the retry wait for the first and return its answer."""
    bank, client, _ = bank_app
    real = bank.open_account

    def slow(holder: str, balance: int) -> Any:
        time.sleep(0.3)  # a busy database: the retry arrives while this runs
        return real(holder, balance)

    monkeypatch.setattr(bank, "open_account", slow)
    headers = {**ADMIN, "Idempotency-Key": "open-carol-1"}
    answers: list[tuple[int, Any]] = []

    def post() -> None:
        r = client.post(
            "/v1/admin/accounts", json={"holder": "carol", "balance": 500}, headers=headers
        )
        answers.append((r.status_code, r.json()))

    threads = [threading.Thread(target=post) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers[0] == answers[1]
    assert answers[0][0] == 200
    assert bank.account("holder:carol").balance == 500


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (200, b"<html>a proxy's page</html>", "bad_answer"),
        (422, b'["not", "a", "problem"]', "error"),
        (422, b"not json", "error"),
    ],
)
def test_the_client_turns_an_answer_that_is_no_json_object_into_a_service_error(
    status: int, body: bytes, code: str
) -> None:
    """An answer a bank would never give (a proxy's page, a body cut short) is a
    service error the caller handles (a clearing call: clearing_unavailable), never an
    AttributeError or ValueError that reaches the merchant as a 500."""
    import httpx

    from jointpay.api.client import JsonHttp
    from jointpay.service.errors import ServiceError

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body)

    client = JsonHttp("http://bank.invalid", transport=httpx.MockTransport(answer))
    try:
        with pytest.raises(ServiceError) as caught:
            client._call("GET", "/v1/bank")
    finally:
        client.close()
    assert caught.value.code == code
