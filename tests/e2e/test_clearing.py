"""Three banks and two clearing houses, each a `serve` process on its own PostgreSQL
database: a card of bank B pays merchants of banks A and C, is cloned and double-spends
at both, and is credited once; its hot list reaches A's terminal; the houses settle and
every book (the banks' and the houses') balances and mirrors the others."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

import cli_run
from bank_server import bank_server, free_port, schemathesis_run
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit
from jointpay.service.errors import BadInput
from pg import fresh_database

PIN = "2468\n"


def jp(home: Path, db: str | None, *args: str, stdin: str = "", code: int = 0) -> dict[str, Any]:
    return cli_run.jp(home, *args, stdin=stdin, code=code, db=db)


@pytest.fixture(scope="module")
def scheme(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("scheme")
    banks, houses = ["bank-a", "bank-b", "bank-c"], ["ch-1", "ch-2"]
    routes = {"ch-1": ["bank-a", "bank-b"], "ch-2": ["bank-b", "bank-c"]}
    with ExitStack() as stack:
        db = {p: stack.enter_context(fresh_database()) for p in banks + houses}
        home = {p: root / p for p in banks + houses}
        port = {p: free_port() for p in banks + houses}
        url = {p: f"http://127.0.0.1:{port[p]}" for p in banks + houses}
        sroot = root / "scheme"
        sch = jp(sroot, None, "scheme", "init", "--id", "test-scheme")
        cert: dict[str, str] = {}
        for b in banks:
            key = jp(home[b], db[b], "bank", "init", "--bank-id", b)["public_key"]
            cert[b] = jp(sroot, None, "scheme", "certify", "--id", b, "--key", key)["bank_cert"]
            jp(
                home[b],
                db[b],
                "bank",
                "join-scheme",
                "--scheme-id",
                "test-scheme",
                "--scheme-key",
                sch["public_key"],
                "--bank-cert",
                cert[b],
            )
        for h in houses:
            key = jp(home[h], db[h], "clearing", "init", "--id", h)["public_key"]
            hc = jp(
                sroot, None, "scheme", "certify", "--id", h, "--key", key, "--role", "clearing"
            )["bank_cert"]
            jp(
                home[h],
                db[h],
                "clearing",
                "join-scheme",
                "--scheme-id",
                "test-scheme",
                "--scheme-key",
                sch["public_key"],
                "--cert",
                hc,
            )
            for b in routes[h]:
                jp(
                    home[h],
                    db[h],
                    "clearing",
                    "add-member",
                    "--bank-cert",
                    cert[b],
                    "--url",
                    url[b],
                )
            stack.enter_context(bank_server(home[h], db_url=db[h], port=port[h], kind="clearing"))
        for h in houses:
            for b in routes[h]:
                jp(home[b], db[b], "bank", "add-clearing", "--url", url[h])
        jp(
            home["bank-b"],
            db["bank-b"],
            "bank",
            "open-account",
            "--holder",
            "bea",
            "--balance",
            "500",
        )
        card = jp(
            home["bank-b"],
            db["bank-b"],
            "bank",
            "issue-card",
            "--holder",
            "bea",
            "--pin-stdin",
            "--load",
            "100",
            stdin=PIN,
        )["card"]
        for b in ("bank-a", "bank-c"):
            jp(home[b], db[b], "bank", "open-merchant", "--name", "Shop")
        for b in banks:
            stack.enter_context(bank_server(home[b], db_url=db[b], port=port[b]))
        yield {"home": home, "db": db, "url": url, "card": card, "root": root}


def move_card(w: dict[str, Any], src: str, dst: str) -> Path:
    """The holder carries the card from one place to another."""
    a = w["home"][src] / "cards" / f"{w['card']}.card"
    b = w["home"][dst] / "cards" / f"{w['card']}.card"
    b.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(a, b)
    return b


def pay(w: dict[str, Any], at: str, amount: str, code: int = 0) -> dict[str, Any]:
    return jp(
        w["home"][at],
        None,
        "pay",
        "--card",
        w["card"],
        "--merchant",
        "Shop",
        "--amount",
        amount,
        "--pin-stdin",
        stdin=PIN,
        code=code,
    )


def deposit(w: dict[str, Any], at: str, code: int = 0) -> dict[str, Any]:
    return jp(
        w["home"][at], None, "deposit", "--merchant", "Shop", "--bank", w["url"][at], code=code
    )


def balance(w: dict[str, Any], bank_id: str, account: str) -> int | None:
    """An account's balance; None if the bank never needed to open it."""
    with Home(w["home"][bank_id], w["db"][bank_id]).bank() as bank:
        try:
            return bank.account(account).balance
        except BadInput:
            return None


def test_a_card_of_bank_b_at_banks_a_and_c_is_credited_once(scheme: dict[str, Any]) -> None:
    w = scheme
    card_file = move_card(w, "bank-b", "bank-a")
    # Before it knows the scheme, A's terminal refuses B's cards; after a sync it takes them.
    refused = pay(w, "bank-a", "1.00", code=1)
    assert refused["error"] == "unknown_bank"
    jp(
        w["home"]["bank-a"],
        None,
        "merchant",
        "sync",
        "--merchant",
        "Shop",
        "--bank",
        w["url"]["bank-a"],
    )
    clone = card_file.read_bytes()  # the fraudster copies the card's memory
    first = pay(w, "bank-a", "30.00")
    assert first["ser"] == 0
    # The clone, restored, signs ser 0 again at a merchant of bank C (another house).
    dst = move_card(w, "bank-a", "bank-c")
    kept = dst.read_bytes()
    dst.write_bytes(clone)
    jp(
        w["home"]["bank-c"],
        None,
        "merchant",
        "sync",
        "--merchant",
        "Shop",
        "--bank",
        w["url"]["bank-c"],
    )
    second = pay(w, "bank-c", "45.00")
    assert second["ser"] == 0
    assert second["spec"] != first["spec"]
    dst.write_bytes(kept)

    batch = w["root"] / "batch-a.json"
    exported = jp(w["home"]["bank-a"], None, "merchant", "export", "--merchant", "Shop")
    batch.write_text(json.dumps(exported))
    got_a = deposit(w, "bank-a")
    assert [(r["status"], r["reason"]) for r in got_a["results"]] == [("accepted", None)]
    again = jp(
        w["home"]["bank-a"],
        None,
        "deposit",
        "--merchant",
        "Shop",
        "--batch",
        str(batch),
        "--bank",
        w["url"]["bank-a"],
        code=1,
    )
    assert [r["reason"] for r in again["results"]] == ["duplicate"]  # a new session: once
    got_c = deposit(w, "bank-c", code=1)
    assert [(r["status"], r["reason"]) for r in got_c["results"]] == [("rejected", "duplicate")]

    # Credited once: B's card float lost 30.00, A's merchant got 30.00, C's nothing.
    with Home(w["home"]["bank-b"], w["db"]["bank-b"]).bank() as b:
        rec = b.card(w["card"])
        assert b.account(rec.float_account).balance == 7_000
        alerts = [a.kind for a in b.alerts() if a.card_number == w["card"]]
        assert "double_spend" in alerts  # breach evidence kept by the issuer
    with Home(w["home"]["bank-a"], w["db"]["bank-a"]).bank() as a:
        assert a.account(a.merchant("Shop").account_id).balance == 3_000
        assert a.account("interbank:ch-1").balance == -3_000
    with Home(w["home"]["bank-c"], w["db"]["bank-c"]).bank() as c:
        assert c.account(c.merchant("Shop").account_id).balance == 0

    # The issuer hot-listed the cloned card; the list reaches A's terminal via ch-1.
    move_card(w, "bank-c", "bank-a")
    jp(
        w["home"]["bank-a"],
        None,
        "merchant",
        "sync",
        "--merchant",
        "Shop",
        "--bank",
        w["url"]["bank-a"],
    )
    assert pay(w, "bank-a", "1.00", code=1)["error"] == "blacklisted"

    # The houses settle; every book balances and mirrors the others.
    for h, members in (("ch-1", ("bank-a", "bank-b")), ("ch-2", ("bank-b", "bank-c"))):
        audit = jp(w["home"][h], w["db"][h], "clearing", "audit")
        assert audit["ok"], audit
        settled = jp(w["home"][h], w["db"][h], "clearing", "settle")
        assert settled["undelivered"] == []
        assert jp(w["home"][h], w["db"][h], "clearing", "audit")["ok"]
        for b in members:
            assert balance(w, b, "interbank:" + h) in (0, None)
    assert balance(w, "bank-a", "interbank:ch-1") == 0  # it was -30.00 before settlement
    assert jp(w["home"]["ch-1"], w["db"]["ch-1"], "clearing", "audit")["positions"] == {
        "bank-a": "0.00",
        "bank-b": "0.00",
    }
    for b in ("bank-a", "bank-b", "bank-c"):
        audit = jp(w["home"][b], w["db"][b], "bank", "audit")
        assert audit["ok"], audit


def test_members_only_and_signed_messages(scheme: dict[str, Any]) -> None:
    w = scheme
    url = w["url"]
    params = httpx.get(f"{url['ch-1']}/v1/clearing").json()
    assert params["clearing_house"] == "ch-1"
    assert len(params["members"]) == 2
    # A clear request that nobody signed, or from a non-member, changes nothing.
    r = httpx.post(
        f"{url['ch-1']}/v1/clear",
        json={"format": "jointpay-clear/1", "acquirer": "bank-c", "signature": "00"},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "not_a_member"
    r = httpx.post(
        f"{url['ch-1']}/v1/clear",
        json={"format": "jointpay-clear/1", "acquirer": "bank-a", "signature": "00"},
    )
    assert r.status_code == 400
    assert r.json()["code"] == "malformed"
    r = httpx.post(
        f"{url['bank-b']}/v1/interbank/deposits",
        json={"format": "jointpay-interbank/1", "clearing_house": "ch-1", "signature": "00"},
    )
    assert r.status_code == 400
    r = httpx.post(
        f"{url['bank-b']}/v1/interbank/deposits",
        json={"format": "jointpay-interbank/1", "clearing_house": "ch-9"},
    )
    assert r.status_code == 422
    assert r.json()["code"] == "not_a_member"
    view = httpx.get(f"{url['bank-b']}/v1/scheme").json()
    assert view["scheme_id"] == "test-scheme"
    assert view["clearing_houses"] == ["ch-1", "ch-2"]
    assert len(view["members"]) == 3


def test_a_merchant_of_c_also_registered_with_b_deposits_bs_payments_at_b(
    scheme: dict[str, Any],
) -> None:
    """The patent's other routing: the merchant holds an account with each bank, shows
    each card its own bank's MERCHANT-CERT, and deposits each part at its bank."""
    w = scheme
    hb, db_b, hc = w["home"]["bank-b"], w["db"]["bank-b"], w["home"]["bank-c"]
    jp(hb, db_b, "bank", "open-account", "--holder", "ben", "--balance", "200")
    card = jp(
        hb,
        db_b,
        "bank",
        "issue-card",
        "--holder",
        "ben",
        "--pin-stdin",
        "--load",
        "50",
        stdin=PIN,
    )["card"]
    (hc / "cards").mkdir(exist_ok=True)
    shutil.move(hb / "cards" / f"{card}.card", hc / "cards" / f"{card}.card")
    key = jp(hc, None, "merchant", "key", "--merchant", "Shop")["public_key"]
    opened = jp(hb, db_b, "bank", "open-merchant", "--name", "Shop of C", "--public-key", key)
    added = jp(
        hc,
        None,
        "merchant",
        "add-bank",
        "--merchant",
        "Shop",
        "--cert",
        opened["cert"],
        "--bank",
        w["url"]["bank-b"],
    )
    assert (added["bank_id"], added["sid"]) == ("bank-b", opened["sid"])
    paid = jp(
        hc,
        None,
        "pay",
        "--card",
        card,
        "--merchant",
        "Shop",
        "--amount",
        "12.00",
        "--pin-stdin",
        stdin=PIN,
    )
    assert paid["ser"] == 0
    got = deposit(w, "bank-c")
    assert [(d["bank_id"], d["accepted"], d["rejected"]) for d in got["deposits"]] == [
        ("bank-c", 0, 0),
        ("bank-b", 1, 0),
    ]
    assert [(r["bank_id"], r["card"], r["status"]) for r in got["results"]] == [
        ("bank-b", card, "accepted")
    ]
    with Home(hb, db_b).bank() as b:
        assert b.account(b.merchant("Shop of C").account_id).balance == 1_200
        assert b.account(b.card(card).float_account).balance == 3_800
        assert b.audit().ok
    assert balance(w, "bank-c", "interbank:ch-2") in (0, None)  # no house was involved


def test_a_merchant_deposits_directly_at_a_clearing_house(scheme: dict[str, Any]) -> None:
    """The house takes the merchant's session, clears B's card with B, and relays the
    session to A, which checks its own card, credits its merchant and signs the receipt."""
    w = scheme
    ha, db_a, hb, db_b = (
        w["home"]["bank-a"],
        w["db"]["bank-a"],
        w["home"]["bank-b"],
        w["db"]["bank-b"],
    )
    house = w["url"]["ch-1"]
    cards = {}
    for home, db, holder in ((ha, db_a, "amy"), (hb, db_b, "bo")):
        jp(home, db, "bank", "open-account", "--holder", holder, "--balance", "100")
        cards[holder] = jp(
            home,
            db,
            "bank",
            "issue-card",
            "--holder",
            holder,
            "--pin-stdin",
            "--load",
            "40",
            stdin=PIN,
        )["card"]
    shutil.move(hb / "cards" / f"{cards['bo']}.card", ha / "cards" / f"{cards['bo']}.card")
    jp(ha, None, "merchant", "sync", "--merchant", "Shop", "--bank", w["url"]["bank-a"])
    with Home(ha, db_a).bank() as a:
        shop_before = a.account(a.merchant("Shop").account_id).balance
    for holder, amount in (("amy", "5.00"), ("bo", "20.00")):
        jp(
            ha,
            None,
            "pay",
            "--card",
            cards[holder],
            "--merchant",
            "Shop",
            "--amount",
            amount,
            "--pin-stdin",
            stdin=PIN,
        )
    # On-line clearance of B's card at A's terminal goes A -> ch-1 -> B, signed each hop.
    ask = ("merchant", "check", "--merchant", "Shop", "--card", cards["bo"])
    ask += ("--issuer", "bank-b", "--bank", w["url"]["bank-a"])
    yes = jp(ha, None, *ask, "--amount", "40.00")
    no = jp(ha, None, *ask, "--amount", "40.01", code=1)  # declined: exit 1
    assert (yes["approved"], no["approved"]) == (True, False)
    assert no["reason"] == "insufficient_balance"  # B has seen no payment yet: 40.00
    cleared = jp(
        ha,
        None,
        "pay",
        "--card",
        cards["bo"],
        "--merchant",
        "Shop",
        "--amount",
        "1.00",
        "--floor-limit",
        "0.00",
        "--bank",
        w["url"]["bank-a"],
        "--pin-stdin",
        stdin=PIN,
    )
    assert cleared["ser"] == 1
    batch = w["root"] / "batch-house.json"
    batch.write_text(json.dumps(jp(ha, None, "merchant", "export", "--merchant", "Shop")))

    # A session the merchant did not sign: the house refuses it before any work.
    tf = Home(ha, None).terminal_file("Shop")
    forged = make_deposit(
        SigningKey.generate("thief"),
        "bank-a",
        tf.sid,
        10**6,
        int(time.time()),
        json.loads(batch.read_text()),
    )
    r = httpx.post(
        f"{house}/v1/deposits", json={"deposit": forged, "merchant_cert": tf.merchant_cert.hex()}
    )
    assert (r.status_code, r.json()["code"]) == (422, "bad_signature")

    got = jp(ha, None, "deposit", "--merchant", "Shop", "--clearing", house)
    assert sorted((r["card"], r["status"]) for r in got["results"]) == sorted(
        [(cards["amy"], "accepted"), (cards["bo"], "accepted"), (cards["bo"], "accepted")]
    )
    assert got["deposits"][0]["bank_id"] == "bank-a"  # the receipt is A's, signed by A
    with Home(ha, db_a).bank() as a:
        assert a.account(a.merchant("Shop").account_id).balance == shop_before + 2_600
    with Home(hb, db_b).bank() as b:
        assert b.account(b.card(cards["bo"]).float_account).balance == 1_900
    positions = jp(w["home"]["ch-1"], w["db"]["ch-1"], "clearing", "audit")
    assert positions["ok"], positions
    assert positions["positions"]["bank-b"] == "-21.00"  # B owes the house what bo paid

    # The same payments again, in a new session through the house: nothing twice.
    again = jp(
        ha,
        None,
        "deposit",
        "--merchant",
        "Shop",
        "--batch",
        str(batch),
        "--clearing",
        house,
        code=1,
    )
    assert [r["reason"] for r in again["results"]] == ["duplicate"] * 3
    with Home(ha, db_a).bank() as a:
        assert a.account(a.merchant("Shop").account_id).balance == shop_before + 2_600
    for b in ("bank-a", "bank-b"):
        audit = jp(w["home"][b], w["db"][b], "bank", "audit")
        assert audit["ok"], audit


def test_the_clearing_house_api_holds_its_openapi_contract(
    scheme: dict[str, Any], tmp_path: Path
) -> None:
    """schemathesis against the house's own OpenAPI description, as for the bank's
    (tests/e2e/test_schemathesis.py): no 500, every answer documented and in schema.
    Runs last: its admin calls may settle the house."""
    w = scheme
    token = (w["home"]["ch-1"] / "admin.token").read_text().strip()
    print(schemathesis_run(f"{w['url']['ch-1']}/openapi.json", token, tmp_path))


def test_a_clearing_server_without_a_house_answers_503_as_it_declares(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from jointpay.api.clearing_server import create_clearing_app
    from jointpay.service.clearing import ClearingHouse
    from jointpay.storage import open_store

    store = open_store(f"sqlite:///{tmp_path}/house.db")
    app = create_clearing_app(
        lambda: ClearingHouse(store, clock=lambda: 1_800_000_000), admin_token="t"
    )
    with TestClient(app, raise_server_exceptions=False) as client:
        declared = client.get("/openapi.json").json()["paths"]
        for path in ("/v1/clearing", "/v1/hotlist"):
            r = client.get(path)
            assert (r.status_code, r.json()["code"]) == (503, "no_clearing_house")
            assert "503" in declared[path]["get"]["responses"]
