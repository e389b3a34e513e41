"""The lifecycle tests' world: a bank on memory, SQLite or PostgreSQL (fresh schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jointpay.home import Home
from pg import fresh_schema, schema_url
from worlds import PIN, Clock


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    if request.param == "memory":
        yield "memory:"
    elif request.param == "sqlite":
        yield None
    else:
        with fresh_schema() as schema:
            yield schema_url(schema)


@pytest.fixture
def world(backend: str | None, tmp_path: Path) -> dict[str, Any]:
    clock = Clock()
    h = Home(tmp_path, backend, clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        bank.open_account("bob", 10_000)
        alice = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        )
        h.open_merchant(bank, "Shop")
        h.open_merchant(bank, "Cafe")
    return {"home": h, "clock": clock, "alice": alice.card_number}
