"""Exactly once under concurrency: 20 clients deposit overlapping batches at once.

The bank runs as a real HTTP server process on a fresh PostgreSQL schema. Four
merchants each hold payments from five cards; each merchant sends five overlapping
batches (random subsets that together cover every payment) from five concurrent
clients, plus two copies of one message racing with different idempotency keys, and
the same request twice with one key. A client whose sequence number loses the race
(refused as `replay`) signs its batch again with the next number, as a terminal
would. Afterwards every payment was accepted exactly once, every other sighting is
a `duplicate`, each merchant holds exactly its payments, and the audit passes.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bank_server import bank_server
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import build_batch, canonical_json, make_deposit
from jointpay.protocol.terminal import TakenPayment
from pg import fresh_schema, schema_url

pytestmark = pytest.mark.postgres

PIN = "2468"
MERCHANTS = ["M1", "M2", "M3", "M4"]
TWIN = "T1"  # its one message is posted twice at once, with two idempotency keys
CARDS = 5
PAYS_PER_CARD_AND_MERCHANT = 3
BATCHES_PER_MERCHANT = 5


@pytest.fixture
def pg_bank(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with fresh_schema() as schema:
        url = schema_url(schema)
        h = Home(tmp_path, url)
        h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="pg-bank")
        with h.bank() as bank:
            cards = []
            for i in range(CARDS):
                bank.open_account(f"holder{i}", 1_000_000)
                cards.append(
                    h.issue_card(
                        bank,
                        holder=f"holder{i}",
                        pin=PIN,
                        load=100_000,
                        mode="cash",
                        limit=0,
                        user_key="card",
                    ).card_number
                )
            for m in [*MERCHANTS, TWIN]:
                h.open_merchant(bank, m)
        taken: dict[str, list[TakenPayment]] = {m: [] for m in [*MERCHANTS, TWIN]}
        for card, m, k in itertools.product(
            cards, [*MERCHANTS, TWIN], range(PAYS_PER_CARD_AND_MERCHANT)
        ):
            taken[m].append(h.pay(card, m, 100 + k, PIN))
        with bank_server(tmp_path, db_url=url) as base:
            yield {
                "home": h,
                "url": base,
                "taken": taken,
                "token": (tmp_path / "admin.token").read_text().strip(),
            }


def test_twenty_clients_credit_every_payment_exactly_once(pg_bank: dict[str, Any]) -> None:
    h: Home = pg_bank["home"]
    url: str = pg_bank["url"]
    taken: dict[str, list[TakenPayment]] = pg_bank["taken"]
    rng = random.Random(7)
    seqs = {m: itertools.count(1) for m in [*MERCHANTS, TWIN]}
    seq_lock = threading.Lock()
    receipts: list[dict[str, Any]] = []
    refusals: Counter[str] = Counter()
    out_lock = threading.Lock()

    def signer(merchant: str) -> tuple[SigningKey, str, str]:
        tf = h.terminal_file(merchant)
        return SigningKey.from_private_bytes(tf.sid, tf.signing_key), tf.bank_id, tf.sid

    def message(merchant: str, batch: dict[str, Any]) -> dict[str, Any]:
        key, bank_id, sid = signer(merchant)
        with seq_lock:
            seq = next(seqs[merchant])
        return make_deposit(key, bank_id, sid, seq, int(time.time()), batch)

    def post(client: httpx.Client, msg: dict[str, Any], idem: str) -> httpx.Response:
        return client.post(
            f"{url}/v1/deposits", json=msg, headers={"Idempotency-Key": idem}, timeout=60
        )

    def depositor(merchant: str, payments: list[TakenPayment], start: threading.Barrier) -> None:
        tf = h.terminal_file(merchant)
        batch = build_batch(tf.bank_id, tf.sid, payments)
        with httpx.Client() as client:
            start.wait()
            for _ in range(20):
                msg = message(merchant, batch)
                r = post(client, msg, hashlib.sha256(canonical_json(msg)).hexdigest())
                if r.status_code == 200:
                    with out_lock:
                        receipts.append(r.json())
                    return
                code = r.json()["code"]
                with out_lock:
                    refusals[code] += 1
                assert code == "replay", r.text  # lost the sequence race: sign again
            raise AssertionError("a depositor never got through")

    jobs: list[tuple[str, list[TakenPayment]]] = []
    for m in MERCHANTS:
        pays = taken[m]
        cover = [pays[i :: BATCHES_PER_MERCHANT - 1] for i in range(BATCHES_PER_MERCHANT - 1)]
        subsets = [*cover, rng.sample(pays, len(pays) // 2)]  # the last overlaps the others
        jobs += [(m, s + rng.sample(pays, 3)) for s in subsets]  # and each overlaps more
    assert len(jobs) == 20
    start = threading.Barrier(len(jobs) + 2)

    # Two copies of one message race with different keys; one request twice with one key.
    twin_tf = h.terminal_file(TWIN)
    twin_msg = message(TWIN, build_batch(twin_tf.bank_id, twin_tf.sid, taken[TWIN]))
    twin_answers: list[httpx.Response] = []

    def twin(idem: str) -> None:
        with httpx.Client() as client:
            start.wait()
            twin_answers.append(post(client, twin_msg, idem))
            twin_answers.append(post(client, twin_msg, idem))

    threads = [threading.Thread(target=depositor, args=(m, p, start)) for m, p in jobs]
    threads += [threading.Thread(target=twin, args=(k,)) for k in ("twin-a", "twin-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads)
    assert len(receipts) == 20
    print(f"sequence races lost and re-signed: {refusals['replay']}")

    # The racing copies: all four answers are the one deposit's receipt.
    assert [r.status_code for r in twin_answers] == [200] * 4, [r.text for r in twin_answers]
    ok_twins = [r.json() for r in twin_answers]
    assert len({canonical_json(r) for r in ok_twins}) == 1  # the same signed receipt

    statuses: dict[tuple[str, int], list[str]] = {}
    for receipt in [*receipts, ok_twins[0]]:
        for res in receipt["results"]:
            statuses.setdefault((res["card"], int(res["ser"])), []).append(res["status"])
    everything = {(p.card_number, p.ser) for m in taken for p in taken[m]}
    assert set(statuses) == everything
    for key, seen in statuses.items():
        assert seen.count("accepted") == 1, (key, seen)
        assert set(seen) <= {"accepted", "rejected"}

    with h.bank() as bank, bank.store.transaction() as tx:
        accounts = {a.id: a.balance for a in tx.list_accounts()}
        for m, pays in taken.items():
            sid = h.terminal_file(m).sid
            assert accounts[f"merchant:{sid}"] == sum(p.amount for p in pays)
    audit = httpx.get(
        f"{url}/v1/admin/audit", headers={"Authorization": f"Bearer {pg_bank['token']}"}
    ).json()
    assert audit["ok"] is True, audit
