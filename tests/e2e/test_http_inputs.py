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
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import anyio
import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.types import ASGIApp

from jointpay.api.server import SMALL_BODY, create_app
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import build_batch, canonical_json, make_deposit
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


class Streamed(NamedTuple):
    """A request's answer, and how many chunks of its body the server pulled."""

    response: httpx.Response
    pulled: int


def post_streamed(
    app: ASGIApp,
    path: str,
    body: bytes,
    *,
    chunk: int = 1024,
    declared: bool = False,
) -> Streamed:
    """POST ``body`` to ``path`` (with the admin token) in chunks of ``chunk`` bytes,
    each pulled from a generator only when the app receives (httpx's ASGI transport):
    chunked transfer (no Content-Length) unless ``declared``."""
    pulled = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal pulled
        for at in range(0, len(body), chunk):
            pulled += 1
            yield body[at : at + chunk]

    sent = {**ADMIN, "Content-Type": "application/json"}
    if declared:
        sent["Content-Length"] = str(len(body))

    async def post() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bank.test") as c:
            request = c.build_request("POST", path, content=chunks(), headers=sent)
            assert ("content-length" in request.headers) is declared
            assert ("transfer-encoding" in request.headers) is not declared
            return await c.send(request)

    return Streamed(anyio.run(post), pulled)


TYPED = [
    "/v1/withdrawals",
    "/v1/online-check",
    "/v1/admin/accounts",
    "/v1/admin/merchants",
    "/v1/admin/blacklist",
    "/v1/admin/rates",
]
"""Every endpoint with a typed body (its JSON validated against a model)."""

MANY = 16 * 1024 * 1024
"""A body 256 times a typed body's bound."""

TOO_LARGE = {
    "type": "https://jointpay.invalid/problems/too_large",
    "title": "too_large",
    "status": 413,
    "detail": f"the body is at most {SMALL_BODY} bytes",
    "code": "too_large",
}


def padded(body: bytes, size: int) -> bytes:
    """``body`` followed by spaces up to ``size`` bytes: the same JSON, that long."""
    return body + b" " * (size - len(body))


@pytest.mark.parametrize("path", TYPED)
def test_a_typed_body_sent_without_a_length_is_refused_as_it_passes_its_bound(
    bank_app: tuple[Bank, TestClient, str], path: str
) -> None:
    """The framework buffers a typed body whole before any dependency sees it: the
    bound holds while the body streams in, so that a client cannot make the server
    hold many megabytes by leaving the length out."""
    bank, client, _ = bank_app
    body = padded(b'{"holder": "carol", "balance": 1}', MANY)
    sent = post_streamed(client.app, path, body, chunk=1024)
    assert sent.response.status_code == 413
    assert sent.response.headers["content-type"] == "application/problem+json"
    assert sent.response.json() == TOO_LARGE
    # the server pulled the bound and the one chunk that passed it, no more
    assert sent.pulled == SMALL_BODY // 1024 + 1, f"pulled {sent.pulled} KiB of {MANY >> 10}"
    assert _no_account(bank, "carol")


@pytest.mark.parametrize("path", TYPED)
def test_a_typed_body_declared_above_its_bound_is_refused_before_a_byte_is_read(
    bank_app: tuple[Bank, TestClient, str], path: str
) -> None:
    bank, client, _ = bank_app
    body = padded(b'{"holder": "carol", "balance": 1}', MANY)
    sent = post_streamed(client.app, path, body, declared=True)
    assert (sent.response.status_code, sent.response.json()) == (413, TOO_LARGE)
    assert sent.pulled == 0, f"pulled {sent.pulled} KiB of {MANY >> 10}"
    assert _no_account(bank, "carol")


@pytest.mark.parametrize("declared", [False, True])
def test_a_typed_body_of_exactly_its_bound_is_taken_and_one_byte_more_is_not(
    bank_app: tuple[Bank, TestClient, str], declared: bool
) -> None:
    bank, client, _ = bank_app
    over = post_streamed(
        client.app,
        "/v1/admin/accounts",
        padded(b'{"holder": "carol", "balance": 7}', SMALL_BODY + 1),
        chunk=4096,
        declared=declared,
    )
    assert (over.response.status_code, over.response.json()) == (413, TOO_LARGE)
    assert _no_account(bank, "carol")
    at = post_streamed(
        client.app,
        "/v1/admin/accounts",
        padded(b'{"holder": "carol", "balance": 7}', SMALL_BODY),
        chunk=4096,
        declared=declared,
    )
    assert at.response.status_code == 200, at.response.text
    assert bank.account("holder:carol").balance == 7


def test_a_typed_body_refused_while_streaming_is_the_apps_own_problem(
    bank_app: tuple[Bank, TestClient, str],
) -> None:
    """The refusal of a typed body as it streams is byte for byte the problem the
    app answers when it refuses a body itself (an interbank settlement, read by the
    endpoint within the same bound)."""
    _, client, _ = bank_app
    body = padded(b"{}", 4 * SMALL_BODY)
    typed = post_streamed(client.app, "/v1/admin/accounts", body).response
    own = post_streamed(client.app, "/v1/interbank/settlements", body).response
    assert (typed.status_code, typed.content) == (own.status_code, own.content)
    assert typed.headers.multi_items() == own.headers.multi_items()


@pytest.fixture
def deposit_app(tmp_path: Path) -> tuple[Bank, ASGIApp, dict[str, Any]]:
    """A bank in process and a merchant's signed deposit of one payment of 700."""
    clock = Clock()
    h = Home(tmp_path, None, clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "shop")
    taken = h.pay(card, "shop", 700, PIN)
    tf = h.terminal_file("shop")
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    batch = build_batch(tf.bank_id, tf.sid, [taken])
    message = make_deposit(key, tf.bank_id, tf.sid, 1, clock(), batch)
    bank = Bank(h.store(), clock=clock)
    return bank, create_app(lambda: bank, admin_token=TOKEN), message


@pytest.mark.parametrize("declared", [False, True])
def test_a_deposit_keeps_its_own_bound_far_above_a_typed_bodys(
    deposit_app: tuple[Bank, ASGIApp, dict[str, Any]], declared: bool
) -> None:
    """A deposit (thousands of payments) is read by its endpoint within its own
    bound: 16 times a typed body's is taken, streamed or with its length."""
    _, app, message = deposit_app
    body = padded(canonical_json(message), 16 * SMALL_BODY)
    sent = post_streamed(app, "/v1/deposits", body, chunk=8192, declared=declared)
    assert sent.response.status_code == 200, sent.response.text
    assert sent.pulled == 16 * SMALL_BODY // 8192
    assert [r["status"] for r in sent.response.json()["results"]] == ["accepted"]


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


def test_the_clearing_servers_typed_body_is_bounded_while_it_streams(tmp_path: Path) -> None:
    """The clearing house's admin endpoint has a typed body too: the same bound."""
    from jointpay.api.clearing_server import create_clearing_app
    from jointpay.service.clearing import ClearingHouse
    from jointpay.storage import open_store

    store = open_store(f"sqlite:///{tmp_path}/house.db")
    app = create_clearing_app(
        lambda: ClearingHouse(store, clock=lambda: 1_800_000_000), admin_token=TOKEN
    )
    body = padded(b'{"bank_cert": "00"}', MANY)
    sent = post_streamed(app, "/v1/admin/members", body, chunk=1024)
    assert (sent.response.status_code, sent.response.json()) == (413, TOO_LARGE)
    assert sent.pulled == SMALL_BODY // 1024 + 1, f"pulled {sent.pulled} KiB of {MANY >> 10}"
    declared = post_streamed(app, "/v1/admin/members", body, declared=True)
    assert (declared.response.status_code, declared.pulled) == (413, 0)


def test_a_balance_past_64_bits_is_a_422_problem_and_changes_nothing(
    bank_app: tuple[Bank, TestClient, str],
) -> None:
    bank, client, _ = bank_app
    r = client.post(
        "/v1/admin/accounts", json={"holder": "rich", "balance": (1 << 63) - 1}, headers=ADMIN
    )
    assert (r.status_code, r.json()["code"]) == (422, "amount_out_of_range")
    assert _no_account(bank, "rich")
    assert bank.audit().ok
