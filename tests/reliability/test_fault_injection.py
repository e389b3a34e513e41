"""Fault injection: every bank use case, failed at every one of its SQL statements.

The storage seam (:class:`~jointpay.storage.base.FaultPlan`) makes statement N of a
use case fail, for N = 1, 2, ... until the use case runs through (that last run is
the retry, and it must succeed). After each injected failure the whole database is
compared with its snapshot from before the attempt: a failed use case leaves no row
changed, anywhere. The same for a failure just before each commit. On SQLite and
PostgreSQL; afterwards the audit passes.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from jointpay.adapters.terminal_store import TerminalFile
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import make_deposit
from jointpay.protocol.messages import AuthKind
from jointpay.service import verify_pool
from jointpay.service.errors import Refused
from jointpay.storage import tables
from jointpay.storage.base import FaultPlan, InjectedFault
from jointpay.storage.sql import SqlStore
from pg import fresh_schema, schema_url

PIN = "2468"


@pytest.fixture(params=["sqlite", "postgres"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Home]:
    if request.param == "sqlite":
        yield Home(tmp_path, None)
    else:
        with fresh_schema() as schema:
            yield Home(tmp_path, schema_url(schema))


def snapshot(store: SqlStore) -> dict[str, list[str]]:
    with store.engine.connect() as conn:
        return {
            t.name: sorted(repr(tuple(row)) for row in conn.execute(select(t)))
            for t in tables.metadata.sorted_tables
        }


def injected(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, InjectedFault):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def attempt(
    store: SqlStore, plan: FaultPlan, action: Callable[[], Any]
) -> tuple[Any, Exception | None]:
    store.faults = plan
    try:
        return action(), None
    except Exception as exc:
        return None, exc
    finally:
        store.faults = None


def every_fault(store: SqlStore, action: Callable[[], Any], *, commits: bool) -> tuple[int, Any]:
    """Fail statement 1, 2, ... (or commit 1, 2, ...) until the action runs through."""
    n = 1
    while True:
        before = snapshot(store)
        plan = FaultPlan(fail_commit=n) if commits else FaultPlan(fail_statement=n)
        result, error = attempt(store, plan, action)
        if error is None:
            assert not plan.fired, f"fault {n} fired and the use case carried on"
            return n - 1, result
        assert plan.fired, f"failed without an injected fault: {error!r}"
        assert injected(error), f"the injected fault became {error!r}"
        assert snapshot(store) == before, f"fault {n}: the failed use case left changes"
        n += 1


def _bank_card_and_shop(h: Home) -> tuple[str, TerminalFile, SigningKey]:
    """A secp256k1 bank, alice's cash card with 200.00 on it, and the merchant "Shop"
    with its terminal file and signing key."""
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="fault-bank")
    with h.bank() as bank:
        bank.open_account("alice", 100_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
    tf = h.terminal_file("Shop")
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    return card, tf, key


def test_every_use_case_rolls_back_whole_and_retries(home: Home) -> None:
    h = home
    card, tf, key = _bank_card_and_shop(h)

    def withdraw_request() -> bytes:
        with h.card_client(card) as client:
            client.select()
            client.verify_pin(PIN)
            return client.withdraw_request(1_000, False, AuthKind.SIGNATURE)

    def complete(ack: bytes) -> None:
        with h.card_client(card) as client:
            client.select()
            client.withdraw_complete(ack)

    tried: dict[str, int] = {}
    with h.bank() as bank:
        store = bank.store
        assert isinstance(store, SqlStore)
        for seq, commits in enumerate((False, True), start=1):
            kind = "commit" if commits else "statement"
            n, acc = every_fault(
                store, lambda k=kind: bank.open_account(f"bob-{k}", 5_000), commits=commits
            )
            assert acc.balance == 5_000
            tried[f"open_account/{kind}"] = n

            for i in range(3):
                h.pay(card, "Shop", 100 + i, PIN)
            message = make_deposit(
                key, tf.bank_id, tf.sid, seq, bank.clock(), h.export_batch("Shop")
            )
            n, receipt = every_fault(store, lambda m=message: bank.deposit(m), commits=commits)
            assert receipt["accepted"] == 3
            with h.terminal("Shop") as (_, terminal_store):
                terminal_store.record_results(receipt["deposit_id"], receipt["results"])
            tried[f"deposit/{kind}"] = n

            request = withdraw_request()
            n, ack = every_fault(store, lambda r=request: bank.withdraw(r), commits=commits)
            complete(ack)
            tried[f"withdraw/{kind}"] = n

        n, _ = every_fault(store, lambda: bank.blacklist(card, "drill"), commits=False)
        tried["blacklist/statement"] = n
        report = bank.audit()
        assert report.ok, report.violations
        with store.transaction() as tx:
            accounts = {a.id: a.balance for a in tx.list_accounts()}
    assert accounts[f"merchant:{tf.sid}"] == 2 * (100 + 101 + 102)
    assert h.card(card).load().balance == 20_000 - 2 * 303 + 2 * 1_000
    print(f"faults injected before each use case went through: {tried}")
    assert tried["deposit/statement"] >= 10, tried
    assert tried["withdraw/statement"] >= 5, tried
    assert all(v >= 1 for v in tried.values()), tried


def test_issuing_a_card_fails_whole_or_leaves_an_issued_card(home: Home) -> None:
    """FIG. 4 is two steps: register the card, then load it (FIG. 10, step 270).

    A fault while registering leaves nothing, in the bank or on disk. A fault while
    loading leaves a fully issued card with nothing on it, its file kept, and an
    error (`load_failed`) that says how to load it. Never a half.
    """
    h = home
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="fault-bank")
    with h.bank() as bank:
        bank.open_account("alice", 100_000)
    cards_dir = h.root / "cards"
    with h.bank() as bank:
        store = bank.store
        assert isinstance(store, SqlStore)
        n, outcomes = 1, Counter()
        while True:
            before = snapshot(store)
            files_before = set(cards_dir.glob("*.card"))
            plan = FaultPlan(fail_statement=n)
            issued, error = attempt(
                store,
                plan,
                lambda: h.issue_card(
                    bank, holder="alice", pin=PIN, load=1_000, mode="cash", limit=0, user_key="card"
                ),
            )
            assert not list(cards_dir.glob(".blank-*"))
            new_files = set(cards_dir.glob("*.card")) - files_before
            if error is None:
                assert [f.stem for f in new_files] == [issued.card_number]
                assert h.card(issued.card_number).load().balance == 1_000
                break
            assert injected(error), repr(error)
            if isinstance(error, Refused) and error.code == "load_failed":
                (card_file,) = new_files
                assert bank.has_card(card_file.stem)
                assert h.card(card_file.stem).load().balance == 0
                outcomes["issued, not loaded"] += 1
            else:
                assert snapshot(store) == before, f"fault {n} left a half-registered card"
                assert not new_files
                outcomes["nothing"] += 1
            report = bank.audit()
            assert report.ok, report.violations
            n += 1
    print(f"issue-card under {n - 1} faults: {dict(outcomes)}")
    assert outcomes["nothing"] >= 3
    assert outcomes["issued, not loaded"] >= 3


@dataclass
class _Where(FaultPlan):
    """Counts like a plan with no fault set, and records the thread of each statement."""

    threads: list[str] = field(default_factory=list)

    def on_statement(self) -> None:
        self.threads.append(threading.current_thread().name)
        super().on_statement()


def test_a_deposit_written_behind_fails_whole_and_retries(
    home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large deposit writes each chunk's payment rows on a thread of its own while
    the next chunk is checked (``DepositRun._write``), its last chunk's in its own
    thread; a batch whose chunks are all verified before the cards are locked is
    written in one statement. A fault at any statement, on either thread, still
    leaves the database as it was; the retry books it once."""
    monkeypatch.setattr(verify_pool, "CHUNK", 2)  # seven payments: four chunks
    h = home
    card, tf, key = _bank_card_and_shop(h)
    with h.bank() as bank:
        bank.verifier.min_batch = 1  # the pool, and the writes behind
        bank.verifier.workers = 2  # three chunks in flight
        store = bank.store
        assert isinstance(store, SqlStore)

        def session(seq: int, first: int, count: int) -> dict[str, Any]:
            """Shop takes ``count`` payments and signs them as deposit ``seq``."""
            for i in range(count):
                h.pay(card, "Shop", first + i, PIN)
            batch = h.export_batch("Shop")
            return make_deposit(key, tf.bank_id, tf.sid, seq, bank.clock(), batch)

        def recorded(receipt: dict[str, Any]) -> dict[str, Any]:
            with h.terminal("Shop") as (_, terminal_store):
                terminal_store.record_results(receipt["deposit_id"], receipt["results"])
            return receipt

        def behind(where: _Where) -> list[str]:
            return [t for t in where.threads if t.startswith("jointpay-deposit-writes")]

        message = session(1, 100, 7)
        n, receipt = every_fault(store, lambda: bank.deposit(message), commits=False)
        assert recorded(receipt)["accepted"] == 7
        assert n >= 8, n  # a fault at every chunk's write, and more

        where = _Where()
        message = session(2, 200, 9)
        receipt, error = attempt(store, where, lambda: bank.deposit(message))
        assert error is None, error
        assert recorded(receipt)["accepted"] == 9
        # five chunks: the first four's rows went behind, each its SAVEPOINT, its insert
        # and its RELEASE (PostgreSQL's COPY goes to the driver, which the plan does
        # not count); the last one's on the depositing thread
        assert len(behind(where)) == 4 * (2 if store.dialect == "postgresql" else 3), where

        message = session(3, 300, 5)  # three chunks, all in flight: one write
        n, receipt = every_fault(store, lambda: bank.deposit(message), commits=False)
        assert recorded(receipt)["accepted"] == 5
        where = _Where()
        message = session(4, 400, 5)
        receipt, error = attempt(store, where, lambda: bank.deposit(message))
        assert error is None, error
        assert receipt["accepted"] == 5
        assert not behind(where)  # nothing behind
        report = bank.audit()
        assert report.ok, report.violations
        with store.transaction() as tx:
            merchant = tx.get_account(f"merchant:{tf.sid}").balance
    paid = sum(range(100, 107)) + sum(range(200, 209)) + sum(range(300, 305)) + sum(range(400, 405))
    assert merchant == paid
    assert h.card(card).load().balance == 20_000 - paid
