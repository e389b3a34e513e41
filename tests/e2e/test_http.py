"""The bank as a real HTTP server process: --bank URL gives the same results as embedded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bank_server import bank_server
from cli_run import jp, jp_text

PIN = "2468\n"


def bank_card_and_shop(home: Path, bank_id: str, *, balance: str, load: str) -> str:
    """A bank in ``home``: holder alice with ``balance``, a card loaded with ``load``
    (PIN 2468), merchant Shop; returns the card's number."""
    jp(home, "bank", "init", "--bank-id", bank_id)
    jp(home, "bank", "open-account", "--holder", "alice", "--balance", balance)
    card = jp(
        home, "bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", load, stdin=PIN
    )["card"]
    jp(home, "bank", "open-merchant", "--name", "Shop")
    return str(card)


def pay_at_shop(home: Path, card: str, amount: str) -> None:
    """An offline payment of ``amount`` by ``card`` (PIN 2468) at merchant Shop."""
    jp(
        home,
        "pay",
        "--card",
        card,
        "--merchant",
        "Shop",
        "--amount",
        amount,
        "--pin-stdin",
        stdin=PIN,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("bank")
    card = bank_card_and_shop(home, "http-bank", balance="300", load="100")
    with bank_server(home) as url:
        token = (home / "admin.token").read_text().strip()
        yield {"home": home, "card": card, "url": url, "token": token}


def test_parameters_openapi_and_health(served: dict[str, Any]) -> None:
    url = served["url"]
    params = httpx.get(f"{url}/v1/bank").json()
    assert params["bank_id"] == "http-bank"
    assert params["suite"] == "secp256k1"
    spec = httpx.get(f"{url}/openapi.json").json()
    assert {"/v1/deposits", "/v1/withdrawals", "/v1/hotlist", "/health"} <= set(spec["paths"])


def test_deposit_and_withdraw_over_http(served: dict[str, Any]) -> None:
    home, card, url = served["home"], served["card"], served["url"]
    pay_at_shop(home, card, "7.50")
    dep = jp(home, "deposit", "--merchant", "Shop", "--bank", url)
    assert (dep["accepted"], dep["rejected"]) == (1, 0)
    wd = jp(
        home, "withdraw", "--card", card, "--amount", "5", "--pin-stdin", "--bank", url, stdin=PIN
    )
    assert (wd["balance"], wd["seq"]) == ("97.50", 2)
    receipt_url = f"{url}/v1/deposits/{dep['deposit_id']}"
    outsider = httpx.get(receipt_url)  # a receipt names every card and amount
    assert (outsider.status_code, outsider.json()["code"]) == (401, "unauthorised")
    receipt = httpx.get(receipt_url, headers={"Authorization": f"Bearer {served['token']}"})
    assert receipt.json()["accepted"] == 1


def test_idempotency_keys(served: dict[str, Any]) -> None:
    url, token = served["url"], served["token"]
    auth = {"Authorization": f"Bearer {token}", "Idempotency-Key": "open-bob-1"}
    first = httpx.post(
        f"{url}/v1/admin/accounts", json={"holder": "bob", "balance": 500}, headers=auth
    )
    again = httpx.post(
        f"{url}/v1/admin/accounts", json={"holder": "bob", "balance": 500}, headers=auth
    )
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    other = httpx.post(
        f"{url}/v1/admin/accounts", json={"holder": "bob", "balance": 9}, headers=auth
    )
    assert other.status_code == 422
    assert other.headers["content-type"].startswith("application/problem+json")
    assert other.json()["code"] == "idempotency_mismatch"


def test_admin_needs_the_token_and_errors_are_problems(served: dict[str, Any]) -> None:
    url = served["url"]
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        r = httpx.get(f"{url}/v1/admin/audit", headers=headers)
        assert r.status_code == 401
        assert r.json()["code"] == "unauthorised"
    ok = httpx.get(f"{url}/v1/admin/audit", headers={"Authorization": f"Bearer {served['token']}"})
    assert ok.json()["ok"] is True
    bad = httpx.post(f"{url}/v1/deposits", content=b"not json")
    assert bad.status_code == 400
    assert bad.json()["code"] == "malformed"
    # an integer past the interpreter's 4,300 digits was a bare 500 (and four retries)
    huge = httpx.post(f"{url}/v1/deposits", content=b'{"seq":' + b"1" * 4301 + b"}")
    assert huge.status_code == 400
    assert huge.json()["code"] == "malformed"
    bad_w = httpx.post(f"{url}/v1/withdrawals", json={"request": "zz"})
    assert bad_w.status_code == 400
    garbage = httpx.post(f"{url}/v1/withdrawals", json={"request": "00" * 10})
    assert garbage.status_code == 400
    assert garbage.json()["code"] == "malformed"


def test_hotlist_sync_over_http(served: dict[str, Any]) -> None:
    home, url, token = served["home"], served["url"], served["token"]
    r = httpx.post(
        f"{url}/v1/admin/blacklist",
        json={"card": served["card"]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    assert jp(home, "merchant", "sync", "--merchant", "Shop", "--bank", url)["new_entries"] >= 1
    assert httpx.get(f"{url}/v1/hotlist?since=0").json()["entries"][0]["card"] == served["card"]
    check = jp(home, "merchant", "check", "--merchant", "Shop", "--card", served["card"],
               "--amount", "0.01", "--bank", url, code=1)  # fmt: skip
    assert {k: check[k] for k in ("approved", "reason", "topup")} == {
        "approved": False,
        "reason": "blacklisted",
        "topup": "0.00",
    }
    assert "available" not in check  # the bank answers the question, not the balance
    # the question must come from one of the bank's merchants, signed
    r = httpx.post(f"{url}/v1/online-check", json={"card": served["card"], "amount": 1})
    assert (r.status_code, r.json()["code"]) == (400, "malformed")


def test_online_clearance_over_http_and_with_the_bank_down(tmp_path: Path) -> None:
    """pay --floor-limit asks the bank at --bank; with the bank down it declines above,
    and takes a payment below offline. The answer says which (``online``)."""
    home = tmp_path
    jp(home, "bank", "init", "--bank-id", "online-bank")
    jp(home, "bank", "open-account", "--holder", "bob", "--balance", "300")
    card = jp(
        home, "bank", "issue-card", "--holder", "bob", "--pin-stdin", "--load", "100", stdin=PIN
    )["card"]
    jp(home, "bank", "open-merchant", "--name", "Kiosk")
    with bank_server(home) as url:
        pay = ("pay", "--card", card, "--merchant", "Kiosk", "--pin-stdin", "--bank", url)
        paid = jp(home, *pay, "--amount", "60.00", "--floor-limit", "50", stdin=PIN)
        assert (paid["amount"], paid["online"]) == ("60.00", "approved")
        paid = jp(home, *pay, "--amount", "5.00", "--online-sample", "1", stdin=PIN)
        assert (paid["amount"], paid["online"]) == ("5.00", "approved")
        paid = jp(home, *pay, "--amount", "5.00", "--floor-limit", "50", stdin=PIN)
        assert (paid["amount"], paid["online"]) == ("5.00", "not_asked")
        text = jp_text(home, *pay, "--amount", "5.00", "--online-sample", "1", stdin=PIN)
        assert text.strip().endswith("(ser 3), cleared on-line by the bank."), text
        # Hot-listed at the bank, not yet at the terminal: refused on-line above the limit.
        token = (home / "admin.token").read_text().strip()
        httpx.post(
            f"{url}/v1/admin/blacklist",
            json={"card": card},
            headers={"Authorization": f"Bearer {token}"},
        ).raise_for_status()
        out = jp(home, *pay, "--amount", "20.00", "--floor-limit", "10", stdin=PIN, code=1)
        assert out["error"] == "online_declined"
        assert "blacklisted" in out["message"]
    # The bank is down: above the floor limit the terminal declines; below, it pays.
    dead = ("pay", "--card", card, "--merchant", "Kiosk", "--pin-stdin", "--bank", url)
    out = jp(home, *dead, "--amount", "20.00", "--floor-limit", "10", stdin=PIN, code=1)
    assert out["error"] == "bank_unreachable"
    paid = jp(home, *dead, "--amount", "2.00", "--floor-limit", "10", stdin=PIN)
    assert (paid["amount"], paid["online"]) == ("2.00", "not_asked")
    paid = jp(home, *dead, "--amount", "2.00", "--online-sample", "1", stdin=PIN)
    assert (paid["amount"], paid["online"]) == ("2.00", "unreachable")
    text = jp_text(home, *dead, "--amount", "2.00", "--online-sample", "1", stdin=PIN)
    assert text.strip().endswith(", offline: the bank could not be asked.")


def test_a_refused_withdrawal_over_http_frees_the_card(served: dict[str, Any]) -> None:
    """The bank's signed refusal travels in the problem+json; the card drops its request."""
    home, card, url = served["home"], served["card"], served["url"]
    seq = jp(home, "card", "show", "--card", card)["seq"]
    out = jp(
        home,
        "withdraw",
        "--card",
        card,
        "--amount",
        "100000.00",
        "--pin-stdin",
        "--bank",
        url,
        stdin=PIN,
        code=1,
    )
    # (an earlier test of this module hot-lists the card; either refusal is signed)
    assert out["error"] in ("insufficient_funds", "blacklisted")
    shown = jp(home, "card", "show", "--card", card)
    assert shown["withdrawal_pending"] is False
    assert shown["seq"] == seq + 1  # the refused request's seq is spent


def test_credit_line_restored_on_line_and_rates_over_http(served: dict[str, Any]) -> None:
    """A credit card at a terminal that reaches the bank over HTTP: the terminal carries
    the card's FIG. 10 request and the bank's answer; the rate table is published."""
    home, url, token = served["home"], served["url"], served["token"]
    auth = {"Authorization": f"Bearer {token}"}
    jp(home, "bank", "open-account", "--holder", "carol", "--balance", "0")
    card = jp(
        home,
        "bank",
        "issue-card",
        "--holder",
        "carol",
        "--pin-stdin",
        "--mode",
        "credit",
        "--limit",
        "50",
        stdin=PIN,
    )["card"]
    pay = ["pay", "--card", card, "--merchant", "Shop", "--pin-stdin", "--bank", url]
    jp(home, *pay, "--amount", "40", stdin=PIN)
    declined = jp(home, *pay, "--amount", "20", stdin=PIN, code=1)
    assert declined["error"] == "insufficient_balance"  # 10 left, nothing deposited yet
    assert jp(home, "deposit", "--merchant", "Shop", "--bank", url)["accepted"] >= 1
    jp(home, "bank", "settle", "--paid", "carol", "40", "--ref", "t-1")
    jp(home, *pay, "--amount", "20", stdin=PIN)  # restored on-line during the payment
    assert jp(home, "card", "show", "--card", card)["balance"] == "30.00"
    r = httpx.post(f"{url}/v1/admin/rates", json={"currency": "USD", "rate": "0.92"}, headers=auth)
    assert r.status_code == 200
    assert httpx.get(f"{url}/v1/rates").json()["rates"]["USD"][-1]["rate"] == "0.92"
    bad = httpx.post(f"{url}/v1/admin/rates", json={"currency": "USD", "rate": "-1"}, headers=auth)
    assert bad.status_code == 400  # a malformed body is a problem+json 400
    assert (
        httpx.post(f"{url}/v1/admin/rates", json={"currency": "USD", "rate": "1"}).status_code
        == 401
    )


def test_serve_log_level_info_says_where_each_deposit_went(tmp_path: Path) -> None:
    """``bank serve --log-level info`` writes the deposit's timing line (operations.md,
    "Where a deposit's time goes") to standard error; the default level (warning)
    writes nothing there, and no line carries the admin token."""
    home = tmp_path / "bank"
    card = bank_card_and_shop(home, "log-bank", balance="50", load="20")
    logs, ids = {}, {}
    for level in ("info", "warning"):
        pay_at_shop(home, card, "1.25")
        log = tmp_path / f"{level}.log"
        with bank_server(home, args=["--log-level", level], log=log) as url:
            dep = jp(home, "deposit", "--merchant", "Shop", "--bank", url)
            assert (dep["accepted"], dep["rejected"]) == (1, 0)
        logs[level], ids[level] = log.read_text(), dep["deposit_id"]
    info = logs["info"]
    line = next(x for x in info.splitlines() if " jointpay.deposit: " in x)
    assert f"INFO jointpay.deposit: deposit {ids['info']}: 1 payments, 1 accepted, " in line
    for phase in ("session ", "certs ", "stream ", "book ", "receipt ", "commit ", "thread CPU "):
        assert phase in line
    assert "Application startup complete" in info  # uvicorn's own lines follow the level
    assert logs["warning"] == ""
    token = (home / "admin.token").read_text().strip()
    assert token not in info
