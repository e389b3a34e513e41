"""A bank restored from a backup has lost the deposits made after it. The merchants'
terminals still hold those payments, marked deposited: ``merchant export --since``
gives them again, and the restored bank takes each once (operations.md)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli_run import jp

PIN = "2468\n"


def export(home: Path, *args: str) -> dict[str, Any]:
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), "merchant", "export",
         "--merchant", "Shop", *args],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return dict(json.loads(run.stdout))


def payments(batch: dict[str, Any]) -> list[int]:
    return sorted(p["ser"] for card in batch["cards"] for p in card["payments"])


def statuses(receipt: dict[str, Any]) -> list[tuple[int, str]]:
    return sorted((r["ser"], r["status"]) for r in receipt["results"])


def test_payments_deposited_after_a_backup_are_deposited_again_once(tmp_path: Path) -> None:
    home = tmp_path
    jp(home, "bank", "init", "--bank-id", "restore-bank")
    jp(home, "bank", "open-account", "--holder", "alice", "--balance", "500")
    card = jp(home, "bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", "100",
              stdin=PIN)["card"]  # fmt: skip
    jp(home, "bank", "open-merchant", "--name", "Shop")
    pay = ("pay", "--card", card, "--merchant", "Shop", "--pin-stdin")
    start = int(time.time())
    jp(home, *pay, "--amount", "10.00", stdin=PIN)
    assert jp(home, "deposit", "--merchant", "Shop")["credited"] == "10.00"

    db = home / "bank.db"
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)

    jp(home, *pay, "--amount", "20.00", stdin=PIN)
    assert jp(home, "deposit", "--merchant", "Shop")["credited"] == "20.00"
    assert payments(export(home)) == []  # the terminal holds nothing pending

    # the live database is lost; the backup comes back (no bank process running)
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    backup.replace(db)

    batch = export(home, "--since", str(start))
    assert payments(batch) == [0, 1]
    day = time.strftime("%Y-%m-%d", time.gmtime(start))  # an ISO date: that day's
    assert export(home, "--since", day) == batch
    assert payments(export(home, "--since", str(start + 3600))) == []  # none taken since
    (home / "again.json").write_text(json.dumps(batch))
    again = jp(home, "deposit", "--merchant", "Shop", "--batch", str(home / "again.json"),
               code=1)  # fmt: skip  # exit 1: a payment came back rejected (duplicate)
    assert statuses(again) == [(0, "rejected"), (1, "accepted")]
    assert [r.get("reason") for r in sorted(again["results"], key=lambda r: r["ser"])] == [
        "duplicate",
        None,
    ]
    assert again["credited"] == "20.00"
    assert jp(home, "bank", "audit")["ok"] is True
    # sent a third time, the restored bank takes neither
    third = jp(home, "deposit", "--merchant", "Shop", "--batch", str(home / "again.json"),
               code=1)  # fmt: skip
    assert statuses(third) == [(0, "rejected"), (1, "rejected")]
    # and the terminal still holds nothing pending
    assert payments(export(home)) == []


def test_a_payment_taken_before_the_backup_and_deposited_after_it_is_given_again(
    tmp_path: Path,
) -> None:
    """What the restored bank lost is what was *deposited* after its backup, whenever
    the payment was taken: ``--since`` the backup's time gives a payment taken before
    the backup and deposited after it (``--since`` compared the payment's own time,
    and the merchant was never paid for it)."""
    home = tmp_path
    jp(home, "bank", "init", "--bank-id", "restore-bank")
    jp(home, "bank", "open-account", "--holder", "alice", "--balance", "500")
    card = jp(home, "bank", "issue-card", "--holder", "alice", "--pin-stdin", "--load", "100",
              stdin=PIN)["card"]  # fmt: skip
    jp(home, "bank", "open-merchant", "--name", "Shop")
    taken = jp(home, "pay", "--card", card, "--merchant", "Shop", "--pin-stdin",
               "--amount", "30.00", stdin=PIN)["time"]  # fmt: skip

    db = home / "bank.db"
    backup = tmp_path / "backup.db"
    while int(time.time()) <= taken:  # the backup is taken a second later at least
        time.sleep(0.05)
    backed_up = int(time.time())
    with sqlite3.connect(db) as live, sqlite3.connect(backup) as copy:
        live.backup(copy)
    assert jp(home, "deposit", "--merchant", "Shop")["credited"] == "30.00"  # after it

    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    backup.replace(db)  # the restored bank has lost that deposit

    batch = export(home, "--since", str(backed_up))
    assert payments(batch) == [0]
    (home / "again.json").write_text(json.dumps(batch))
    again = jp(home, "deposit", "--merchant", "Shop", "--batch", str(home / "again.json"))
    assert statuses(again) == [(0, "accepted")]
    assert again["credited"] == "30.00"
    assert jp(home, "bank", "audit")["ok"] is True
