"""A command on a home with no bank creates nothing there; `bank init` on a home
holding another bank's cards refuses; a refused init leaves no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointpay.home import Home
from jointpay.service.errors import BadInput
from worlds import PIN, Clock


def test_a_command_on_a_home_without_a_bank_creates_nothing(tmp_path: Path) -> None:
    mistyped = tmp_path / "mistyped"
    h = Home(mistyped, None, Clock())
    with pytest.raises(BadInput) as none, h.bank():
        pass
    assert none.value.code == "no_bank"
    assert "JOINTPAY_DB" in none.value.message
    assert not mistyped.exists()  # it used to leave an empty 184 KB bank.db


def test_a_refused_init_leaves_no_database(tmp_path: Path) -> None:
    h = Home(tmp_path / "home", None, Clock())
    with pytest.raises(BadInput):
        h.init_bank(suite="no-such-suite", group=None, currency="EUR")
    assert list((tmp_path / "home").glob("bank.db*")) == []
    h.init_bank(suite="secp256k1", group=None, currency="EUR")  # and a good one works
    with h.bank() as bank:
        assert bank.audit().ok


def test_init_refuses_a_home_that_holds_another_banks_cards(tmp_path: Path) -> None:
    """A home whose bank is on PostgreSQL, used with JOINTPAY_DB unset: `bank init`
    made a second bank, with new keys, beside the other's cards and terminals."""
    h = Home(tmp_path, None, Clock())
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-a")
    with h.bank() as bank:
        bank.open_account("alice", 1_000)
        h.issue_card(bank, holder="alice", pin=PIN, load=0, mode="cash", limit=0, user_key="card")
    (tmp_path / "bank.db").rename(tmp_path / "elsewhere.db")  # as if on another server
    with pytest.raises(BadInput) as refused:
        h.init_bank(suite="secp256k1", group=None, currency="EUR")
    assert refused.value.code == "exists"
    assert not (tmp_path / "bank.db").exists()
