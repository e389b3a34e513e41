"""The command line under input it did not expect: markup-like names, usage errors,
bad URLs, a port in use, a database that is down, an error nobody foresaw. With
``--json`` every one of them is exactly one JSON object on stdout, with the contract's
exit status; without, the human output prints what it was given, readably."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PIN = "2468\n"
SRC = Path(__file__).resolve().parents[2] / "src" / "jointpay" / "cli"


def run(
    home: Path | None,
    *args: str,
    stdin: str = "",
    env: dict[str, str] | None = None,
    stderr: Any = subprocess.PIPE,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("JOINTPAY_HOME", "JOINTPAY_DB")}
    return subprocess.run(
        [sys.executable, "-m", "jointpay", *(["--home", str(home)] if home else []), *args],
        input=stdin,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        timeout=120,
        check=False,
        env={**base, **(env or {})},
    )


def answer(p: subprocess.CompletedProcess[str], code: int) -> dict[str, Any]:
    """Exactly one JSON object on stdout, and the exit status ``code``."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, p.stdout
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    return out


def error(p: subprocess.CompletedProcess[str], code: int, error_code: str) -> str:
    """A failure as the contract has it: ``{"error", "message"}`` on stdout, a line on
    stderr, no traceback. Returns the message."""
    out = answer(p, code)
    assert set(out) == {"error", "message"}, out
    assert out["error"] == error_code, out
    assert out["message"]
    if p.stderr is not None:
        assert p.stderr.strip()
        assert "Traceback" not in p.stderr
    return str(out["message"])


def ok(home: Path, *args: str, stdin: str = "") -> dict[str, Any]:
    return answer(run(home, *args, "--json", stdin=stdin), 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("home")
    ok(home, "bank", "init")
    ok(home, "bank", "open-account", "--holder", "alice", "--balance", "500")
    card = ok(home, "bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", "200",
              stdin=PIN)["card"]  # fmt: skip
    ok(home, "bank", "open-merchant", "--name", "Shop")
    return {"home": home, "card": card}


# -- 1. text that looks like Rich markup prints as typed --------------------------------


def test_a_markup_like_name_in_an_error_still_gives_one_json_object(
    world: dict[str, Any],
) -> None:
    p = run(world["home"], "--json", "merchant", "export", "--merchant", "[/]")
    assert "'[/]'" in error(p, 2, "unknown_merchant")
    assert "[/]" in p.stderr


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (("bank", "open-account", "--holder", "bob[/]", "--balance", "1"), "holder:bob[/]"),
        (("bank", "open-merchant", "--name", "[red]Evil"), "Merchant [red]Evil opened"),
    ],
)
def test_markup_like_names_print_as_typed(
    world: dict[str, Any], args: tuple[str, ...], shown: str
) -> None:
    p = run(world["home"], *args)
    assert p.returncode == 0, p.stderr
    assert shown in p.stdout
    assert "Traceback" not in p.stderr


def test_markup_like_text_in_errors_and_tables(world: dict[str, Any]) -> None:
    home = world["home"]
    ok(home, "bank", "open-account", "--holder", "[/]eve", "--balance", "1")
    p = run(home, "bank", "open-account", "--holder", "[/]eve", "--balance", "1")  # exists
    assert p.returncode == 1
    assert "[/]eve" in p.stderr
    p = run(home, "merchant", "export", "--merchant", "x :smile: [bold]y")
    assert p.returncode == 2
    assert "x :smile: [bold]y" in p.stderr  # no emoji code replaced, no style taken
    p = run(home, "bank", "blacklist", "--card", "[/]", "--reason", "[/]")
    assert p.returncode in (1, 2)
    assert "Traceback" not in p.stderr


def test_no_console_parses_markup() -> None:
    """Every console is made by output.console() (markup off); no text in the command
    modules is written as markup."""
    for path in SRC.glob("*.py"):
        text = path.read_text(encoding="utf-8")
        if path.name != "output.py":
            assert "Console(" not in text, path
        assert "[/]" not in text or path.name == "output.py", path
        assert "markup=True" not in text, path


# -- 2. one JSON object on every failure ------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("pay", "--card", "C", "--merchant", "Shop", "--pin-stdin"),  # no --amount
        ("bank", "frobnicate"),
        ("bank",),
        ("bank", "serve", "--port", "99999"),
        ("clearing", "serve", "--port", "0"),
        ("pay", "--merchant", "Shop", "--amount", "1", "--online-sample", "nan"),
        ("pay", "--merchant", "Shop", "--amount", "1", "--online-sample", "2"),
        ("card", "show", "--no-such-option"),
    ],
)
def test_usage_errors_are_one_json_object(world: dict[str, Any], args: tuple[str, ...]) -> None:
    p = run(world["home"], "--json", *args)
    error(p, 2, "bad_usage")
    human = run(world["home"], *args)  # Click's own message stays on stderr
    assert human.returncode == 2
    if args != ("bank",):  # a group without its command prints its help on stdout
        assert not human.stdout.strip()
        assert "Usage:" in human.stderr


def test_an_online_sample_of_nan_says_what_is_wanted(world: dict[str, Any]) -> None:
    p = run(world["home"], "--json", "pay", "--merchant", "Shop", "--amount", "1",
            "--online-sample", "nan")  # fmt: skip
    assert "fraction between 0 and 1" in error(p, 2, "bad_usage")


@pytest.mark.parametrize("url", ["http://[::1", "notaurl", "ftp://x", "127.0.0.1:18421", ""])
def test_a_bank_url_that_is_not_one_is_bad_input(world: dict[str, Any], url: str) -> None:
    p = run(world["home"], "--json", "merchant", "sync", "--merchant", "Shop", "--bank", url)
    error(p, 2, "bad_input")


def test_bank_url_checked_by_every_command_that_takes_one(world: dict[str, Any]) -> None:
    home, card = world["home"], world["card"]
    for args in (
        ("deposit", "--merchant", "Shop", "--bank", "ftp://x"),
        ("deposit", "--merchant", "Shop", "--clearing", "nourl"),
        (
            "merchant",
            "check",
            "--merchant",
            "Shop",
            "--card",
            card,
            "--amount",
            "1",
            "--bank",
            "http://[::1",
        ),
        ("merchant", "add-bank", "--merchant", "Shop", "--cert", "00", "--bank", "bank-b"),
        ("bank", "add-clearing", "--url", "ch:8431"),
    ):
        error(run(home, "--json", *args), 2, "bad_input")


@pytest.mark.parametrize("kind", ["bank", "clearing"])
def test_serving_on_a_port_in_use_is_address_in_use(world: dict[str, Any], kind: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        p = run(world["home"], "--json", kind, "serve", "--port", port)
    error(p, 2, "address_in_use")


def test_an_unreachable_database_is_database_unreachable(world: dict[str, Any]) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nope"
    p = run(world["home"], "--json", "bank", "audit", env={"JOINTPAY_DB": url})
    error(p, 1, "database_unreachable")
    assert len(p.stderr.strip().splitlines()) == 1


def test_an_unforeseen_error_is_internal_with_its_traceback_on_demand(tmp_path: Path) -> None:
    (tmp_path / "scheme").mkdir()
    (tmp_path / "scheme" / "root.json").write_text('{"scheme_id": "s"}')  # no private key
    args = ("--json", "scheme", "certify", "--id", "b", "--key", "00" * 32)
    p = run(tmp_path, *args)
    assert "KeyError" in error(p, 1, "internal")
    assert len(p.stderr.strip().splitlines()) == 1
    debug = run(tmp_path, *args, env={"JOINTPAY_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr
    assert "KeyError" in debug.stderr


def test_the_json_error_survives_a_broken_stderr(world: dict[str, Any]) -> None:
    read, write = os.pipe()
    os.close(read)  # nobody reads stderr: every write to it fails (EPIPE)
    try:
        p = run(world["home"], "--json", "merchant", "export", "--merchant", "nobody",
                stderr=write)  # fmt: skip
    finally:
        os.close(write)
    error(p, 2, "unknown_merchant")


# -- 3. merchant check: decimal strings, declined is exit 1 -----------------------------


def test_merchant_check_amounts_and_exit_status(tmp_path: Path) -> None:
    home = tmp_path
    ok(home, "bank", "init")
    ok(home, "bank", "open-merchant", "--name", "Shop")
    ok(home, "bank", "open-account", "--holder", "carol", "--balance", "100")
    card = ok(home, "bank", "issue-card", "--holder", "carol", "--pin-stdin", "--mode",
              "credit", "--limit", "60", stdin=PIN)["card"]  # fmt: skip
    ok(home, "pay", "--card", card, "--merchant", "Shop", "--amount", "60", "--pin-stdin",
       stdin=PIN)  # fmt: skip
    ok(home, "deposit", "--merchant", "Shop")
    ok(home, "bank", "settle", "--paid", "carol", "60.00", "--ref", "t1")
    check = ("merchant", "check", "--merchant", "Shop", "--card", card, "--amount", "10")
    got = ok(home, *check)
    assert (got["approved"], got["topup"], got["currency"]) == (True, "60.00", "EUR")
    human = run(home, *check)
    assert human.returncode == 0
    assert "60.00 EUR" in human.stdout
    ok(home, "bank", "blacklist", "--card", card)
    declined = answer(run(home, *check, "--json"), 1)
    assert (declined["approved"], declined["reason"]) == (False, "blacklisted")
    assert declined["topup"] == "0.00"
    human = run(home, *check)
    assert human.returncode == 1
    assert "blacklisted" in human.stdout


# -- 4. the clearing house's amounts; readable audits ------------------------------------


def test_clearing_amounts_are_decimal_strings(tmp_path: Path) -> None:
    root = ok(tmp_path / "scheme", "scheme", "init", "--id", "s")["public_key"]
    key = ok(tmp_path / "ch", "clearing", "init", "--id", "ch1")["public_key"]
    cert = ok(tmp_path / "scheme", "scheme", "certify", "--id", "ch1", "--key", key,
              "--role", "clearing")["bank_cert"]  # fmt: skip
    ok(tmp_path / "ch", "clearing", "join-scheme", "--scheme-id", "s", "--scheme-key", root,
       "--cert", cert)  # fmt: skip
    audit = ok(tmp_path / "ch", "clearing", "audit")
    assert (audit["ok"], audit["cleared_amount"], audit["currency"]) == (True, "0.00", "EUR")
    settled = ok(tmp_path / "ch", "clearing", "settle")
    assert (settled["paid"], settled["currency"]) == ({}, "EUR")
    for args in (("clearing", "audit"), ("clearing", "settle")):
        human = run(tmp_path / "ch", *args)
        assert human.returncode == 0, human.stderr
        assert "{" not in human.stdout, human.stdout
        assert '"' not in human.stdout, human.stdout


def test_bank_audit_prints_no_python_reprs(world: dict[str, Any]) -> None:
    human = run(world["home"], "bank", "audit")
    assert human.returncode == 0, human.stderr
    assert "interbank: none" in human.stdout
    assert "{" not in human.stdout, human.stdout
    assert "'" not in human.stdout, human.stdout


# -- 5-6. pay --rate alone; a cheque card counts cheques -------------------------------


def test_a_rate_without_a_currency_is_refused(world: dict[str, Any]) -> None:
    p = run(world["home"], "--json", "pay", "--card", world["card"], "--merchant", "Shop",
            "--amount", "1", "--rate", "1.1", "--pin-stdin", stdin=PIN)  # fmt: skip
    assert "--currency" in error(p, 2, "bad_usage")


def test_a_cheque_card_shows_cheques_not_money(world: dict[str, Any]) -> None:
    home = world["home"]
    ok(home, "bank", "open-account", "--holder", "dave", "--balance", "100")
    card = ok(home, "bank", "issue-card", "--holder", "dave", "--pin-stdin", "--mode",
              "cheque", "--limit", "3", stdin=PIN)  # fmt: skip
    assert card["cheques"] == 3
    shown = ok(home, "card", "show", "--card", card["card"])
    assert {"card", "balance", "locked"} <= set(shown)
    assert (shown["mode"], shown["cheques"]) == ("cheque", 3)
    human = run(home, "card", "show", "--card", card["card"])
    assert "3 cheques left" in human.stdout
    assert "EUR" not in human.stdout


# -- 7. the demo honours --home and JOINTPAY_HOME ----------------------------------------


def test_the_demo_honours_the_global_home_and_jointpay_home(tmp_path: Path) -> None:
    answer(run(tmp_path / "g", "--json", "demo"), 0)
    assert (tmp_path / "g" / "bank.db").exists()
    answer(run(None, "--json", "demo", env={"JOINTPAY_HOME": str(tmp_path / "e")}), 0)
    assert (tmp_path / "e" / "bank.db").exists()
    p = run(None, "--json", "demo", "--home", str(tmp_path / "g"))
    assert "not empty" in error(p, 2, "exists")


# -- 8-9. no hard wrapping; plurals -------------------------------------------------------


def test_long_lines_are_not_wrapped_when_piped(world: dict[str, Any]) -> None:
    name = "A merchant whose name is long enough for two lines"
    p = run(world["home"], "bank", "open-merchant", "--name", name)
    assert p.returncode == 0, p.stderr
    [line] = [ln for ln in p.stdout.splitlines() if ln.strip()]
    assert name in line
    assert "S_id" in line
    shown = run(world["home"], "card", "show", "--card", world["card"]).stdout
    [line] = [ln for ln in shown.splitlines() if ln.strip()]
    assert world["card"] in line
    assert line.rstrip().endswith(".")


def test_counts_are_pluralised(tmp_path: Path) -> None:
    home = tmp_path
    ok(home, "bank", "init")
    ok(home, "bank", "open-account", "--holder", "c", "--balance", "50")
    card = ok(home, "bank", "issue-card", "--holder", "c", "--pin-stdin", "--load", "20",
              stdin=PIN)["card"]  # fmt: skip
    ok(home, "bank", "open-merchant", "--name", "M")
    for _ in range(2):
        p = run(home, "pay", "--card", card, "--merchant", "M", "--amount", "1", "--pin-stdin",
                stdin="1111\n")  # fmt: skip
        assert p.returncode == 1
    assert "1 PIN try left" in run(home, "card", "show", "--card", card).stdout
    ok(home, "bank", "blacklist", "--card", card)
    assert "1 new entry." in run(home, "merchant", "sync", "--merchant", "M").stdout


# -- times for people ----------------------------------------------------------------


def test_settle_until_takes_iso_times_and_the_table_prints_due_dates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bank settle --until`` takes Unix seconds or an ISO 8601 date/time (UTC unless
    it names its offset), and its table shows each statement's due date as a date, not
    as Unix seconds (it printed ``1802592000``)."""
    import time

    from typer.testing import CliRunner

    from jointpay.cli.main import app

    home = tmp_path
    ok(home, "bank", "init", "--bank-id", "times-bank")
    ok(home, "bank", "open-account", "--holder", "carol", "--balance", "0")
    card = ok(home, "bank", "issue-card", "--holder", "carol", "--mode", "credit",
              "--limit", "100", "--pin-stdin", stdin=PIN)["card"]  # fmt: skip
    ok(home, "bank", "open-merchant", "--name", "Shop")
    ok(home, "pay", "--card", card, "--merchant", "Shop", "--amount", "12.00", "--pin-stdin",
       stdin=PIN)  # fmt: skip
    ok(home, "deposit", "--merchant", "Shop")
    # the future, and what is no time at all
    for until, why in (("2999-01-01", "future"), ("yesterday", "ISO 8601"), ("-5", "ISO")):
        assert why in error(run(home, "bank", "settle", "--until", until, "--json"), 2, "bad_time")
    # before the card's first period ends, an ISO date and its Unix seconds agree: nothing
    assert ok(home, "bank", "settle", "--until", "2020-01-01")["statements"] == []
    assert ok(home, "bank", "settle", "--until", "1577836800")["statements"] == []

    later = time.time() + 45 * 86_400  # the first period has ended
    monkeypatch.setattr(time, "time", lambda: later)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("JOINTPAY_DB", raising=False)
    result = CliRunner().invoke(app, ["--home", str(home), "bank", "settle"])
    assert result.exit_code == 0, result.output
    [row] = [ln for ln in result.output.splitlines() if card in ln]
    assert re.search(r"\b20\d\d-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC\b", row), row
    assert not re.search(r"\b\d{10}\b", row), row  # no Unix seconds
    assert "12.00" in row


@pytest.mark.parametrize(
    "text",
    [
        "99999999999999999999999",  # past any 64-bit time: a storage error (internal)
        "9223372036854775808",
        "\u00b2",  # a digit to str.isdigit, none to int(): bad_input with Python's words
        "\u0661\u0667\u0660\u0660\u0660\u0660\u0660\u0660\u0660\u0660",  # Arabic-Indic
        "1969-12-31",  # before 1970: a negative Unix time, taken as one
        "1969-12-31T23:59:59.5Z",
    ],
)
def test_a_time_that_is_none_is_bad_time(world: dict[str, Any], text: str) -> None:
    """``--since`` and ``--until`` take Unix seconds (ASCII digits, below 2^63) or an
    ISO 8601 date/time from 1970 on; anything else is ``bad_time``, exit 2, before
    anything is read or changed."""
    home = world["home"]
    export = run(home, "merchant", "export", "--merchant", "Shop", "--since", text, "--json")
    assert "--since" in error(export, 2, "bad_time")
    settle = run(home, "bank", "settle", "--until", text, "--json")
    assert "--until" in error(settle, 2, "bad_time")


def test_a_fraction_of_a_second_counts_from_its_second(world: dict[str, Any]) -> None:
    """An ISO time with a fraction is the second it falls in, and an offset counts:
    ``2026-12-01T00:59:59.999+01:00`` is 2026-11-30T23:59:59 UTC (1796083199)."""
    from jointpay.cli.common import unix_time

    assert unix_time("2026-12-01T00:59:59.999+01:00", "--since") == 1_796_083_199
    assert unix_time("2026-11-30T23:59:59.999Z", "--since") == 1_796_083_199
    assert unix_time("2026-11-30", "--since") == 1_795_996_800
    assert unix_time("2100-01-01T00:00:00Z", "--since") == 4_102_444_800  # past 2038
    assert unix_time(" 0 ", "--since") == 0
