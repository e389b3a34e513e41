"""The bank's database holds its signing key and every card's master key; a terminal's
its payments. Created in a folder that exists already (0755, say), they were 0644
(SQLite creates a database with the umask, its -wal and -shm with the database's
mode): readable by every user of the machine."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from jointpay.home import Home
from worlds import PIN, Clock


def test_the_bank_and_terminal_databases_are_the_owners_only(tmp_path: Path) -> None:
    home = tmp_path / "shared"
    home.mkdir(mode=0o755)
    old = os.umask(0o022)
    try:
        h = Home(home, None, Clock())
        h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
        with h.bank() as bank:
            bank.open_account("alice", 1_000)
            card = h.issue_card(
                bank, holder="alice", pin=PIN, load=500, mode="cash", limit=0, user_key="card"
            ).card_number
            h.open_merchant(bank, "Shop")
            h.pay(card, "Shop", 100, PIN)
            h.deposit("Shop", bank)
            databases = [p for p in home.rglob("*.db*") if p.is_file()]
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in databases}
    finally:
        os.umask(old)
    assert {"bank.db", "terminal.db"} <= set(modes)
    assert any(name.endswith("-wal") for name in modes)  # the logs too, while open
    assert modes == dict.fromkeys(modes, 0o600)
