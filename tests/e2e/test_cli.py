"""The command line as a newcomer types it: real processes, --json, exit codes 0/1/2.

Bad input of every kind gets a clear error with the right exit status and changes
nothing: the ledger (every account balance and the audit figures) is compared before
and after each refusal.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cli_run import jp

PIN = "2468\n"


def ledger(home: Path) -> dict[str, Any]:
    from jointpay.home import Home

    with Home(home, None).bank() as bank:
        with bank.store.transaction() as tx:
            balances = {a.id: a.balance for a in tx.list_accounts()}
            payments = len(list(tx.iter_payments()))
        return {"balances": balances, "payments": payments, "audit": bank.audit().ok}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    init = jp(home, "bank", "init", "--suite", "secp256k1", "--currency", "EUR")
    assert {"suite", "bank_id"} <= set(init)
    assert (
        jp(home, "bank", "open-account", "--holder", "alice", "--balance", "500.00")["account"]
        == "holder:alice"
    )
    card = jp(
        home, "bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", "200", stdin=PIN
    )
    assert {"card", "joint_public_key", "suite", "balance"} <= set(card)
    assert card["balance"] == "200.00"
    shop = jp(home, "bank", "open-merchant", "--name", "Corner Shop")
    assert {"merchant", "sid"} <= set(shop)
    return {"home": home, "card": card["card"], "sid": shop["sid"]}


def test_lifecycle(world: dict[str, Any], tmp_path: Path) -> None:
    home, card = world["home"], world["card"]
    paid = jp(
        home,
        "pay",
        "--card",
        card,
        "--merchant",
        "Corner Shop",
        "--amount",
        "12.50",
        "--pin-stdin",
        stdin=PIN,
    )
    assert {
        "suite",
        "joint_public_key",
        "ser",
        "spec",
        "b",
        "r",
        "amount",
        "card",
        "merchant",
    } <= set(paid)
    assert paid["amount"] == "12.50"
    assert len(bytes.fromhex(paid["b"])) == 32
    shown = jp(home, "card", "show", "--card", card)
    assert (shown["balance"], shown["locked"]) == ("187.50", False)
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "jointpay",
            "--home",
            str(home),
            "merchant",
            "export",
            "--merchant",
            "Corner Shop",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    batch = tmp_path / "batch.json"
    batch.write_text(export.stdout)
    dep = jp(home, "deposit", "--merchant", "Corner Shop", "--batch", str(batch))
    assert (dep["accepted"], dep["rejected"]) == (1, 0)
    assert dep["results"][0]["status"] == "accepted"
    again = jp(home, "deposit", "--merchant", "Corner Shop", "--batch", str(batch), code=1)
    assert (again["accepted"], again["rejected"]) == (0, 1)
    assert again["results"][0]["reason"] == "duplicate"
    wd = jp(home, "withdraw", "--card", card, "--amount", "10", "--pin-stdin", "--renew", stdin=PIN)
    assert (wd["balance"], wd["seq"]) == ("197.50", 2)
    zero = jp(
        home, "withdraw", "--card", card, "--amount", "0", "--renew", "--pin-stdin", stdin=PIN
    )
    assert zero["balance"] == "197.50"
    assert jp(home, "bank", "audit")["ok"] is True
    assert jp(home, "bank", "alerts") == {"alerts": []}


def test_blacklisted_card_refused_after_sync(tmp_path: Path) -> None:
    home = tmp_path
    jp(home, "bank", "init")
    jp(home, "bank", "open-account", "--holder", "bob", "--balance", "50")
    card = jp(
        home, "bank", "issue-card", "--holder", "bob", "--pin-stdin", "--load", "20", stdin=PIN
    )["card"]
    jp(home, "bank", "open-merchant", "--name", "Cafe")
    assert jp(home, "bank", "blacklist", "--card", card)["blacklisted"] is True
    assert jp(home, "merchant", "sync", "--merchant", "Cafe")["new_entries"] == 1
    out = jp(
        home,
        "pay",
        "--card",
        card,
        "--merchant",
        "Cafe",
        "--amount",
        "1",
        "--pin-stdin",
        stdin=PIN,
        code=1,
    )
    assert out["error"] == "blacklisted"


@pytest.mark.parametrize(
    "amount", ["-1", "1.234", "abc", "1e3", "99999999999999999999", "0", "", " 5"]
)
def test_bad_amounts_change_nothing(world: dict[str, Any], amount: str) -> None:
    home, card = world["home"], world["card"]
    before = ledger(home)
    out = jp(
        home,
        "pay",
        "--card",
        card,
        "--merchant",
        "Corner Shop",
        "--amount",
        amount,
        "--pin-stdin",
        stdin=PIN,
        code=2,
    )
    assert out["error"] == "bad_amount"
    jp(
        home,
        "withdraw",
        "--card",
        card,
        "--amount",
        amount if amount != "0" else "-0",
        "--pin-stdin",
        stdin=PIN,
        code=2,
    )
    assert ledger(home) == before


def test_a_balance_past_64_bits_is_refused_and_changes_nothing(world: dict[str, Any]) -> None:
    """The largest amount the parser takes, paid in from the bank's equity, which the
    world's other accounts have made negative already: it would pass -(2^63 - 1),
    which no balance column holds. A raw driver error (OverflowError on SQLite,
    DataError on PostgreSQL) was a traceback; it is a refusal now."""
    home = world["home"]
    before = ledger(home)
    out = jp(
        home,
        "bank",
        "open-account",
        "--holder",
        "richer",
        "--balance",
        "92233720368547758.07",
        code=1,
    )
    assert out["error"] == "amount_out_of_range"
    assert ledger(home) == before


@pytest.mark.parametrize(
    ("args", "stdin", "code", "error"),
    [
        (
            ["pay", "--card", "CARD", "--merchant", "Nowhere", "--amount", "1", "--pin-stdin"],
            PIN,
            2,
            "unknown_merchant",
        ),
        (
            [
                "pay",
                "--card",
                "4000000000000002",
                "--merchant",
                "Corner Shop",
                "--amount",
                "1",
                "--pin-stdin",
            ],
            PIN,
            2,
            "unknown_card",
        ),
        (
            ["pay", "--card", "CARD", "--merchant", "Corner Shop", "--amount", "1", "--pin-stdin"],
            "12\n",
            2,
            "bad_pin",
        ),
        (
            ["pay", "--card", "CARD", "--merchant", "Corner Shop", "--amount", "1", "--pin-stdin"],
            "abcd\n",
            2,
            "bad_pin",
        ),
        (
            ["pay", "--card", "CARD", "--merchant", "Corner Shop", "--amount", "1", "--pin-stdin"],
            "\n",
            2,
            "bad_pin",
        ),
        (["pay", "--card", "CARD", "--merchant", "Corner Shop", "--amount", "1"], "", 2, "no_pin"),
        (["bank", "issue-card", "--holder", "nobody", "--pin-stdin"], PIN, 1, "unknown_holder"),
        (
            ["bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", "100000"],
            PIN,
            1,
            "insufficient_funds",
        ),
        (["bank", "blacklist", "--card", "4000000000000002"], "", 2, "unknown_card"),
        (
            [
                "pay",
                "--card",
                "CARD",
                "--merchant",
                "Corner Shop",
                "--amount",
                "100000",
                "--pin-stdin",
            ],
            PIN,
            1,
            "insufficient_balance",
        ),
    ],
)
def test_refusals_change_nothing(
    world: dict[str, Any], args: list[str], stdin: str, code: int, error: str
) -> None:
    home = world["home"]
    before = ledger(home)
    out = jp(home, *[world["card"] if a == "CARD" else a for a in args], stdin=stdin, code=code)
    assert out["error"] == error
    assert ledger(home) == before


def test_wrong_pin_is_refused_and_counted(tmp_path: Path) -> None:
    jp(tmp_path, "bank", "init")
    jp(tmp_path, "bank", "open-account", "--holder", "c", "--balance", "50")
    card = jp(
        tmp_path, "bank", "issue-card", "--holder", "c", "--pin-stdin", "--load", "20", stdin=PIN
    )["card"]
    jp(tmp_path, "bank", "open-merchant", "--name", "M")
    before = ledger(tmp_path)
    for _ in range(3):
        jp(
            tmp_path,
            "pay",
            "--card",
            card,
            "--merchant",
            "M",
            "--amount",
            "1",
            "--pin-stdin",
            stdin="1111\n",
            code=1,
        )
    assert jp(tmp_path, "card", "show", "--card", card)["locked"] is True
    assert (
        jp(
            tmp_path,
            "pay",
            "--card",
            card,
            "--merchant",
            "M",
            "--amount",
            "1",
            "--pin-stdin",
            stdin=PIN,
            code=1,
        )["error"]
        == "locked"
    )
    assert (
        jp(tmp_path, "bank", "unblock-card", "--card", card, "--pin-stdin", stdin="1357\n")[
            "locked"
        ]
        is False
    )
    assert jp(tmp_path, "card", "show", "--card", card)["locked"] is False
    assert ledger(tmp_path) == before


def test_corrupted_card_file(world: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    home = tmp_path / "copy"
    shutil.copytree(world["home"], home)
    path = home / "cards" / f"{world['card']}.card"
    before = ledger(home)
    for garbage in (path.read_bytes()[:40], b"{not json", b'{"version": 1}', b"\xff\xfe"):
        path.write_bytes(garbage)
        out = jp(
            home,
            "pay",
            "--card",
            world["card"],
            "--merchant",
            "Corner Shop",
            "--amount",
            "1",
            "--pin-stdin",
            stdin=PIN,
            code=2,
        )
        assert out["error"] == "bad_input" or out["error"] == "corrupt_card"
    assert ledger(home) == before


def test_bad_batch_files(world: dict[str, Any], tmp_path: Path) -> None:
    home = world["home"]
    jp(
        home,
        "pay",
        "--card",
        world["card"],
        "--merchant",
        "Corner Shop",
        "--amount",
        "2",
        "--pin-stdin",
        stdin=PIN,
    )
    jp(
        home,
        "pay",
        "--card",
        world["card"],
        "--merchant",
        "Corner Shop",
        "--amount",
        "3",
        "--pin-stdin",
        stdin=PIN,
    )
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "jointpay",
            "--home",
            str(home),
            "merchant",
            "export",
            "--merchant",
            "Corner Shop",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    before = ledger(home)
    f = tmp_path / "b.json"
    for content in (
        text[: len(text) // 2],
        "not json at all",
        "[1, 2]",
        '{"format": 7}',
        '{"a": 1.5}',
    ):
        f.write_text(content)
        out = jp(home, "deposit", "--merchant", "Corner Shop", "--batch", str(f), code=2)
        assert out["error"] == "malformed"
        assert ledger(home) == before
    # from another bank: a second home's batch
    other = tmp_path / "other"
    jp(other, "bank", "init")
    jp(other, "bank", "open-account", "--holder", "z", "--balance", "9")
    oc = jp(other, "bank", "issue-card", "--holder", "z", "--pin-stdin", "--load", "5", stdin=PIN)[
        "card"
    ]
    jp(other, "bank", "open-merchant", "--name", "Corner Shop")
    jp(
        other,
        "pay",
        "--card",
        oc,
        "--merchant",
        "Corner Shop",
        "--amount",
        "1",
        "--pin-stdin",
        stdin=PIN,
    )
    foreign = subprocess.run(
        [
            sys.executable,
            "-m",
            "jointpay",
            "--home",
            str(other),
            "merchant",
            "export",
            "--merchant",
            "Corner Shop",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    f.write_text(foreign)
    assert (
        jp(home, "deposit", "--merchant", "Corner Shop", "--batch", str(f), code=1)["error"]
        == "wrong_bank"
    )
    assert ledger(home) == before
    # edited: one hex digit of one spec changed -> that payment bad_signature, the other ok
    batch = json.loads(text)
    spec = batch["cards"][0]["payments"][0]["spec"]
    batch["cards"][0]["payments"][0]["spec"] = spec[:-1] + ("0" if spec[-1] != "0" else "1")
    f.write_text(json.dumps(batch))
    out = jp(home, "deposit", "--merchant", "Corner Shop", "--batch", str(f), code=1)
    reasons = sorted(str(r["reason"]) for r in out["results"])
    assert reasons in (["None", "bad_signature"], ["None", "malformed"])
    assert out["accepted"] == 1
    assert ledger(home)["audit"] is True


def test_demo_json() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is True
    assert all(step["ok"] for step in out["steps"])
    assert len(out["steps"]) >= 12


def test_a_large_batch_file_through_the_command_line(tmp_path: Path) -> None:
    """What performance.md tells anyone to time: ``bench/deposit.py --emit-batch``
    leaves a bank and a batch file, and ``jointpay deposit --batch`` deposits it through
    the verification pool (a batch past its threshold), each payment accepted once."""
    from jointpay.service.verify_pool import MIN_POOL_BATCH

    root = Path(__file__).resolve().parents[2]
    home, batch = tmp_path / "home", tmp_path / "batch.json"
    n = MIN_POOL_BATCH + 52
    subprocess.run(
        [
            *(sys.executable, str(root / "bench" / "deposit.py"), "--emit-batch", str(batch)),
            *("--home", str(home), "--n", str(n), "--suite", "secp256k1", "--cards", "4"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    out = jp(home, "deposit", "--merchant", "bench", "--batch", str(batch))
    assert (out["accepted"], out["rejected"]) == (n, 0)
    again = jp(home, "deposit", "--merchant", "bench", "--batch", str(batch), code=1)
    assert again["accepted"] == 0
    assert {r["reason"] for r in again["results"]} == {"duplicate"}
    books = ledger(home)
    assert books["payments"] == n
    assert books["audit"]


def test_backfill_key_powers_has_nothing_to_do_on_secp256k1(world: dict[str, Any]) -> None:
    """The command that gives modp certificates stored before migration 0005 their comb
    powers (its work is tested on a modp bank in tests/lifecycle)."""
    before = ledger(world["home"])
    assert jp(world["home"], "bank", "backfill-key-powers") == {"certificates": 0}
    assert ledger(world["home"]) == before
