"""The repository seam's contract, run unchanged over memory, SQLite and PostgreSQL.

Every implementation of :class:`~jointpay.storage.base.Store` must behave the same:
postings are balanced, all-or-nothing and posted once; a (card, ser) is stored once;
a merchant's deposit sequence and an idempotency key are used once; a failed
transaction leaves nothing; the hot list is versioned. The SQL stores enforce the
"once" rules with primary keys and unique constraints, so they hold even between
processes (`tests/e2e/test_http_concurrency.py`, `tests/reliability`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jointpay.domain.records import (
    Account,
    AccountKind,
    CardRecord,
    CardStatus,
    CertRecord,
    DepositRecord,
    InterbankRecord,
    Leg,
    MerchantRecord,
    PaymentRecord,
    Transfer,
)
from jointpay.storage import open_store
from jointpay.storage.base import Conflict, InsufficientFunds, NotFound, Store
from pg import fresh_schema, schema_url

T = 1_800_000_000


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        s = open_store("memory:")
        yield s
        s.close()
    elif request.param == "sqlite":
        s = open_store(None, home=tmp_path)
        yield s
        s.close()
    else:
        with fresh_schema() as schema:
            s = open_store(schema_url(schema))
            yield s
            s.close()


def account(aid: str, kind: AccountKind = AccountKind.HOLDER, *, negative: bool = False) -> Account:
    return Account(aid, kind, "EUR", "x", 0, T, allow_negative=negative)


def transfer(tid: str, *legs: tuple[str, int], currency: str = "EUR") -> Transfer:
    return Transfer(tid, "test", currency, tuple(Leg(a, n) for a, n in legs), "", T)


def payment(card: str, ser: int, amount: int = 100) -> PaymentRecord:
    return PaymentRecord(
        card, ser, b"\x01" * 16, "SP1", amount, "EUR", b"spec", b"b" * 32, b"r" * 32, "SP1:1", T
    )


@pytest.fixture
def books(store: Store) -> Store:
    with store.transaction() as tx:
        tx.create_account(account("equity", AccountKind.EQUITY, negative=True))
        tx.create_account(account("alice"))
        tx.create_account(account("shop", AccountKind.MERCHANT))
        tx.post(transfer("fund", ("equity", -1_000), ("alice", 1_000)))
    return store


def balances(store: Store) -> dict[str, int]:
    with store.transaction() as tx:
        return {a.id: a.balance for a in tx.list_accounts()}


def test_postings_move_money_and_sum_to_zero(books: Store) -> None:
    with books.transaction() as tx:
        tx.post(transfer("t1", ("alice", -300), ("shop", 300)))
        assert tx.get_transfer("t1").legs == (Leg("alice", -300), Leg("shop", 300))
    assert balances(books) == {"equity": -1_000, "alice": 700, "shop": 300}
    with books.transaction() as tx:
        assert tx.audit_unbalanced_transfers() == []
        assert sum(tx.audit_currency_sums().values()) == 0


def test_balances_are_read_set_based_and_agree_with_the_accounts(books: Store) -> None:
    with books.transaction() as tx:
        tx.post(transfer("t1", ("alice", -300), ("shop", 300)))
        wanted = ["shop", "nobody", "alice", "equity", "alice"]  # unsorted, a repeat, a miss
        got = tx.get_balances(wanted)
        assert got == {"equity": -1_000, "alice": 700, "shop": 300}
        assert got == {a.id: a.balance for a in tx.get_accounts(wanted).values()}
        assert all(type(v) is int for v in got.values())
        assert tx.get_balances([]) == {}


def test_a_transfer_id_posts_once(books: Store) -> None:
    with books.transaction() as tx:
        tx.post(transfer("t1", ("alice", -100), ("shop", 100)))
    with pytest.raises(Conflict), books.transaction() as tx:
        tx.post(transfer("t1", ("alice", -100), ("shop", 100)))
    assert balances(books)["shop"] == 100


def test_no_account_goes_below_zero_unless_allowed(books: Store) -> None:
    with pytest.raises(InsufficientFunds), books.transaction() as tx:
        tx.post(transfer("t1", ("alice", -1_001), ("shop", 1_001)))
    with pytest.raises(NotFound), books.transaction() as tx:
        tx.post(transfer("t2", ("alice", -1), ("nobody", 1)))
    with pytest.raises(ValueError), books.transaction() as tx:  # noqa: PT012
        tx.create_account(Account("usd", AccountKind.HOLDER, "USD", "x", 0, T))
        tx.post(transfer("t3", ("alice", -1), ("usd", 1)))
    assert balances(books) == {"equity": -1_000, "alice": 1_000, "shop": 0}


def test_a_failed_transaction_leaves_nothing(books: Store) -> None:
    with pytest.raises(RuntimeError), books.transaction() as tx:  # noqa: PT012
        tx.post(transfer("t1", ("alice", -100), ("shop", 100)))
        tx.create_account(account("bob"))
        tx.add_payments([payment("4000000000000002", 0)])
        raise RuntimeError("the use case failed after writing")
    assert balances(books) == {"equity": -1_000, "alice": 1_000, "shop": 0}
    with books.transaction() as tx:
        with pytest.raises(NotFound):
            tx.get_transfer("t1")
        assert tx.get_payment("4000000000000002", 0) is None


def test_a_refused_insert_leaves_the_transaction_usable(store: Store) -> None:
    """A refused insert takes back only its own rows: the transaction goes on, and
    what it wrote before and after is committed."""
    card = "4000000000000002"
    with store.transaction() as tx:
        tx.add_payments([payment(card, 0)])
    with store.transaction() as tx:
        tx.add_payments([payment(card, 5)])
        with pytest.raises(Conflict):
            tx.add_payments([payment(card, 1), payment(card, 0)])  # one new, one seen
        assert tx.get_payment(card, 1) is None
        tx.add_payments([payment(card, 2)])
        tx.add_deposit(DepositRecord("SP1:1", "SP1", 1, b"d" * 32, T, "{}"))
        with pytest.raises(Conflict):
            tx.add_deposit(DepositRecord("SP1:1", "SP1", 1, b"e" * 32, T, "{}"))
        tx.add_payments([payment(card, 3)])
    with store.transaction() as tx:
        got = tx.existing_payments([(card, s) for s in range(6)])
        assert sorted(ser for _, ser in got) == [0, 2, 3, 5]
        d = tx.get_deposit("SP1:1")
        assert d is not None
        assert d.batch_digest == b"d" * 32


def test_a_card_ser_is_stored_once(store: Store) -> None:
    card = "4000000000000002"
    with store.transaction() as tx:
        tx.add_payments([payment(card, 0), payment(card, 1)])
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.add_payments([payment(card, 2), payment(card, 1)])  # one new, one seen
    with store.transaction() as tx:
        assert tx.get_payment(card, 2) is None  # the whole insert was refused
        assert set(tx.existing_payments([(card, 0), (card, 1), (card, 2)])) == {
            (card, 0),
            (card, 1),
        }
        big = (1 << 64) - 1  # ser is a full u64
        tx.add_payments([payment(card, big)])
        assert tx.get_payment(card, big) is not None
    with store.transaction() as tx:
        many = [(card, ser) for ser in range(1_200)]  # three queries of 500 keys
        found = tx.existing_payments([*many, (card, big), ("4000000000000010", 0)])
        assert sorted(found) == [(card, 0), (card, 1), (card, big)]
        assert found[(card, big)] == payment(card, big)


def test_lookups_by_key_use_the_primary_key_on_sqlite(tmp_path: Path) -> None:
    """Each batch of keys is looked up through the primary key, never by a scan of the
    whole table (SQLite plans a row-value ``IN (VALUES ...)`` as a scan: a deposit
    would then read every payment the bank ever took, for every 500 payments)."""
    from sqlalchemy import event

    from jointpay.storage.sql import SqlStore

    store = open_store(None, home=tmp_path)
    assert isinstance(store, SqlStore)
    seen: list[tuple[str, tuple[object, ...]]] = []

    def spy(conn: object, cursor: object, sql: str, params: object, *_: object) -> None:
        if "WITH k" in sql:
            seen.append((sql, tuple(params)))  # type: ignore[arg-type]

    event.listen(store.engine, "before_cursor_execute", spy)
    try:
        with store.transaction() as tx:
            tx.existing_payments([("4000000000000002", 0), ("4000000000000002", 7)])
            tx.existing_interbank([("bank-b", "4000000000000002", 0)])
            event.remove(store.engine, "before_cursor_execute", spy)
            assert len(seen) == 2
            for sql, params in seen:
                plan = tx.c.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).fetchall()
                steps = " / ".join(str(step[-1]) for step in plan)
                # the key: the table itself (payments, WITHOUT ROWID) or its index
                assert (
                    "SEARCH t USING PRIMARY KEY" in steps
                    or "SEARCH t USING INDEX sqlite_autoindex_" in steps
                ), steps
                assert "SCAN t" not in steps, steps
    finally:
        store.close()


def test_a_merchant_sequence_and_a_deposit_are_used_once(books: Store) -> None:
    with books.transaction() as tx:
        tx.add_merchant(MerchantRecord("SP1", "Shop", "shop", b"k" * 32, b"c", 0, T))
        tx.add_deposit(DepositRecord("SP1:1", "SP1", 1, b"d" * 32, T, "{}"))
        tx.set_merchant_seq("SP1", 1)
    with pytest.raises(Conflict), books.transaction() as tx:
        tx.add_deposit(DepositRecord("SP1:1", "SP1", 1, b"e" * 32, T, "{}"))
    with books.transaction() as tx:
        assert tx.lock_merchant("SP1").last_seq == 1
        assert tx.get_deposit("SP1:1") is not None
        with pytest.raises(NotFound):
            tx.lock_merchant("SP9")


def test_an_idempotency_key_is_stored_once(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.get_idempotent("k1") is None
        tx.put_idempotent("k1", "h1", '{"ok": 1}', T)
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.put_idempotent("k1", "h2", '{"ok": 2}', T)
    with store.transaction() as tx:
        assert tx.get_idempotent("k1") == ("h1", '{"ok": 1}')


def test_the_hot_list_is_versioned(store: Store) -> None:
    with store.transaction() as tx:
        a = tx.add_hotlist("4000000000000002", "stolen", T)
        b = tx.add_hotlist("4000000000000010", "clone", T + 1)
    assert b.version > a.version
    with store.transaction() as tx:
        assert [e.card_number for e in tx.hotlist_since(0)] == [
            "4000000000000002",
            "4000000000000010",
        ]
        assert [e.card_number for e in tx.hotlist_since(a.version)] == ["4000000000000010"]


def test_config_is_a_small_key_value_store(store: Store) -> None:
    with store.transaction() as tx:
        assert tx.config_get("bank") is None
        tx.config_set("bank", "{}")
        tx.config_set("bank", '{"v": 2}')
    with store.transaction() as tx:
        assert tx.config_get("bank") == '{"v": 2}'


def interbank(issuer: str, card: str, ser: int, acquirer: str = "bank-a") -> InterbankRecord:
    return InterbankRecord(
        issuer, card, ser, acquirer, "ch-1", "SP1", 250, "EUR", b"spec", "SP1:1", T
    )


def test_a_cross_bank_payment_is_stored_once(store: Store) -> None:
    card = "4000000000000002"
    with store.transaction() as tx:
        tx.add_interbank([interbank("bank-b", card, 0), interbank("bank-c", card, 0)])
        tx.add_interbank([])
    with pytest.raises(Conflict), store.transaction() as tx:
        tx.add_interbank([interbank("bank-b", card, 1), interbank("bank-b", card, 0, "bank-x")])
    with store.transaction() as tx:
        found = tx.existing_interbank(
            [("bank-b", card, 0), ("bank-b", card, 1), ("bank-c", card, 0)]
        )
        assert sorted(found) == [("bank-b", card, 0), ("bank-c", card, 0)]
        assert found[("bank-b", card, 0)].acquirer == "bank-a"
        assert found[("bank-b", card, 0)].spec == b"spec"
        assert [(r.issuer, r.ser) for r in tx.list_interbank()] == [("bank-b", 0), ("bank-c", 0)]


def test_certificates_without_comb_powers_are_found_in_order_and_given_them(
    store: Store,
) -> None:
    """What ``bank backfill-key-powers`` walks: the certificates stored without powers,
    a page at a time by cert id, each set once."""
    with store.transaction() as tx:
        tx.create_account(account("holder:h"))
        tx.add_card(
            CardRecord(
                "4000000000000002", "h", "holder:h", "", "cheque", "EUR", "secp256k1",
                None, b"k" * 33, b"m" * 32, 0, -1, CardStatus.ACTIVE, 0, 1,
                current_cert_id=b"\x05" * 16,
            )
        )  # fmt: skip
        for i in (5, 1, 3, 2):
            powers = b"p" if i == 2 else None
            tx.add_cert(CertRecord(bytes([i]) * 16, "4000000000000002", b"c", 1, 2, 3, powers))
    with store.transaction() as tx:
        first = tx.certs_without_powers(b"", 2)
        assert [c.cert_id[0] for c in first] == [1, 3]
        assert [c.cert_id[0] for c in tx.certs_without_powers(first[-1].cert_id, 2)] == [5]
        tx.set_cert_powers(bytes([3]) * 16, b"powers")
        with pytest.raises(NotFound):
            tx.set_cert_powers(bytes([9]) * 16, b"powers")
    with store.transaction() as tx:
        assert [c.cert_id[0] for c in tx.certs_without_powers(b"", 10)] == [1, 5]
        assert tx.get_cert(bytes([3]) * 16).key_powers == b"powers"
        assert tx.get_cert(bytes([2]) * 16).key_powers == b"p"
