"""Crash harness: the HTTP bank on PostgreSQL, killed with SIGKILL while clients work.

Merchants deposit overlapping batches and cards withdraw, all at once, through
the real server. A killer SIGKILLs the server at random moments (seeded) and
starts it again on the same port. Clients treat a lost answer as unknown: they
send the very same request again (same sequence number, same idempotency key)
until it is answered. A deposit whose sequence number another batch overtook is
refused `replay`, and the client signs it again with its next number. Afterwards:

* the audit is clean;
* every payment was credited exactly once, and each merchant holds exactly its
  payments;
* every withdrawal was applied once. The card's balance, the bank's float for
  the card and the holder's account all agree with the withdrawals the cards
  completed.

Short mode (CI): at least 5 kills, 30 operations. The long mode of docs/reliability.md:

    JOINTPAY_CRASH_KILLS=50 JOINTPAY_CRASH_ROUNDS=250 JOINTPAY_CRASH_WITHDRAWALS=90 \
    JOINTPAY_CRASH_MINUTES=40 pytest tests/reliability/test_crash.py -s

(3 merchants x 251 deposits and 3 cards x 90 withdrawals: 1,023 operations). The seed
is printed and can be set with `JOINTPAY_CRASH_SEED`.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from bank_server import free_port
from jointpay.api.client import wait_until_serving
from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import build_batch, canonical_json, make_deposit
from jointpay.protocol.messages import AuthKind
from pg import fresh_schema, schema_url

pytestmark = pytest.mark.postgres

PIN = "2468"
KILLS = int(os.environ.get("JOINTPAY_CRASH_KILLS", "5"))
ROUNDS = int(os.environ.get("JOINTPAY_CRASH_ROUNDS", "6"))  # deposits per merchant, + 1
WITHDRAWALS = int(os.environ.get("JOINTPAY_CRASH_WITHDRAWALS", "3"))  # per card
BUDGET = 60 * float(os.environ.get("JOINTPAY_CRASH_MINUTES", "5"))
SEED = int(os.environ.get("JOINTPAY_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))


class Server:
    """`jointpay bank serve` on a fixed port, killed and restarted on demand."""

    def __init__(self, home: Path, db_url: str) -> None:
        self.home, self.db_url, self.port = home, db_url, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jointpay",
                "--home",
                str(self.home),
                "bank",
                "serve",
                "--port",
                str(self.port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "JOINTPAY_DB": self.db_url},
        )
        proc = self.proc
        if not wait_until_serving(self.url, alive=lambda: proc.poll() is None, timeout=30):
            raise AssertionError("the server did not come back")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


def post_until_answered(url: str, body: dict[str, Any], key: str, stop_at: float) -> httpx.Response:
    """The same request, again and again, until the bank answers it (not 5xx)."""
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < stop_at:
            try:
                r = client.post(
                    url,
                    content=canonical_json(body),
                    headers={"Idempotency-Key": key, "Content-Type": "application/json"},
                )
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if r.status_code < 500:
                return r
            time.sleep(0.05)
    raise AssertionError(f"no answer from {url} in time")


def test_sigkilled_server_loses_nothing_and_makes_nothing(tmp_path: Path) -> None:
    print(f"crash harness seed {SEED} (JOINTPAY_CRASH_SEED), kills {KILLS}")
    rng = random.Random(SEED)
    with fresh_schema() as schema:
        db = schema_url(schema)
        h = Home(tmp_path, db)
        h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="crash-bank")
        merchants = ["M1", "M2", "M3"]
        with h.bank() as bank:
            bank.open_account("alice", 10_000_000)
            cards = [
                h.issue_card(
                    bank,
                    holder="alice",
                    pin=PIN,
                    load=50_000,
                    mode="cash",
                    limit=0,
                    user_key="card",
                ).card_number
                for _ in range(3)
            ]
            for m in merchants:
                h.open_merchant(bank, m)
            holder_before = bank.account("holder:alice").balance
        taken = {m: [h.pay(c, m, 100 + k, PIN) for c in cards for k in range(6)] for m in merchants}

        server = Server(tmp_path, db)
        server.start()
        stop_at = time.monotonic() + BUDGET
        done = threading.Event()
        counts: Counter[str] = Counter()
        lock = threading.Lock()
        withdrawals: Counter[str] = Counter()

        def depositor(merchant: str, seed: int) -> None:
            r = random.Random(seed)
            tf = h.terminal_file(merchant)
            key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
            seq = itertools.count(1)
            pays = taken[merchant]
            for _ in range(ROUNDS):
                batch = build_batch(tf.bank_id, tf.sid, r.sample(pays, len(pays) // 2))
                while True:
                    msg = make_deposit(key, tf.bank_id, tf.sid, next(seq), int(time.time()), batch)
                    idem = hashlib.sha256(canonical_json(msg)).hexdigest()
                    resp = post_until_answered(f"{server.url}/v1/deposits", msg, idem, stop_at)
                    if resp.status_code == 200:
                        with lock:
                            counts["deposits"] += 1
                        break
                    assert resp.json()["code"] == "replay", resp.text
            # and finally everything, so that every payment is deposited at least once
            batch = build_batch(tf.bank_id, tf.sid, pays)
            while True:
                msg = make_deposit(key, tf.bank_id, tf.sid, next(seq), int(time.time()), batch)
                idem = hashlib.sha256(canonical_json(msg)).hexdigest()
                resp = post_until_answered(f"{server.url}/v1/deposits", msg, idem, stop_at)
                if resp.status_code == 200:
                    break

        def withdrawer(card: str) -> None:
            for _ in range(WITHDRAWALS):
                with h.card_client(card) as client:
                    client.select()
                    client.verify_pin(PIN)
                    request = client.withdraw_request(1_000, False, AuthKind.SIGNATURE)
                body = {"request": request.hex()}
                idem = "wd-" + hashlib.sha256(request).hexdigest()
                resp = post_until_answered(f"{server.url}/v1/withdrawals", body, idem, stop_at)
                assert resp.status_code == 200, resp.text
                with h.card_client(card) as client:
                    client.select()
                    client.withdraw_complete(bytes.fromhex(resp.json()["ack"]))
                with lock:
                    withdrawals[card] += 1

        def killer() -> None:
            while not done.is_set() or server.kills < KILLS:
                time.sleep(rng.uniform(0.05, 0.6))
                if not done.is_set():
                    counts["kills while clients worked"] += 1
                server.kill()
                time.sleep(rng.uniform(0.0, 0.2))
                server.start()

        workers = [
            threading.Thread(target=depositor, args=(m, rng.randrange(1 << 32))) for m in merchants
        ]
        workers += [threading.Thread(target=withdrawer, args=(c,)) for c in cards]
        kill_thread = threading.Thread(target=killer)
        for t in [*workers, kill_thread]:
            t.start()
        for t in workers:
            t.join(BUDGET)
        done.set()
        kill_thread.join(BUDGET)
        assert not any(t.is_alive() for t in [*workers, kill_thread])
        ops = counts["deposits"] + len(merchants) + sum(withdrawals.values())
        print(
            f"kills survived: {server.kills} ({counts['kills while clients worked']} while "
            f"clients worked); operations: {ops} (deposits answered: "
            f"{counts['deposits'] + len(merchants)}, withdrawals: {sum(withdrawals.values())})"
        )
        assert server.kills >= KILLS

        try:
            token = (tmp_path / "admin.token").read_text().strip()
            audit = httpx.get(
                f"{server.url}/v1/admin/audit", headers={"Authorization": f"Bearer {token}"}
            ).json()
            assert audit["ok"] is True, audit
        finally:
            server.stop()

        with h.bank() as bank, bank.store.transaction() as tx:
            everything = {(p.card_number, p.ser) for ps in taken.values() for p in ps}
            credited = tx.existing_payments(sorted(everything))
            assert set(credited) == everything  # every payment credited...
            for m, pays in taken.items():  # ...once: each merchant holds exactly its own
                sid = h.terminal_file(m).sid
                assert tx.get_account(f"merchant:{sid}").balance == sum(p.amount for p in pays)
            for c in cards:
                spent = sum(p.amount for ps in taken.values() for p in ps if p.card_number == c)
                loaded = 50_000 + 1_000 * withdrawals[c]
                assert withdrawals[c] == WITHDRAWALS
                assert h.card(c).load().balance == loaded - spent
                assert tx.get_account(f"card:{c}").balance == loaded - spent
            assert tx.get_account("holder:alice").balance == holder_before - 1_000 * 3 * WITHDRAWALS
