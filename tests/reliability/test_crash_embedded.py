"""The embedded bank: `jointpay deposit` and `jointpay withdraw` SIGKILLed mid-run.

Each command runs as its own process on the SQLite bank and is killed at a random
(seeded) moment: while Python starts, while the bank verifies and books, between the
bank's commit and the terminal's (or the card's) own record. Then the very same
command is run again until it succeeds. The end state must be the one a run without
kills reaches: every payment credited once, every withdrawal applied once, the card,
the bank's float and the holder's account in agreement, and a clean audit.

The seed is printed and can be set with `JOINTPAY_CRASH_SEED`.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jointpay.home import Home

PIN = "2468"
SEED = int(os.environ.get("JOINTPAY_CRASH_SEED", str(random.SystemRandom().randrange(1 << 32))))


def jointpay(home: Path, *args: str, quiet: bool = False) -> subprocess.Popen[str]:
    env = {**os.environ}
    env.pop("JOINTPAY_DB", None)
    out = subprocess.DEVNULL if quiet else subprocess.PIPE
    return subprocess.Popen(
        [sys.executable, "-m", "jointpay", "--home", str(home), *args, "--json"],
        stdin=subprocess.PIPE,
        stdout=out,
        stderr=out,
        text=True,
        env=env,
    )


def kill_then_finish(
    home: Path,
    rng: random.Random,
    args: list[str],
    stdin: str = "",
    done: Callable[[], bool] = lambda: False,
) -> tuple[bool, dict[str, object]]:
    """Run the command, SIGKILL it at a random moment, then, unless ``done()`` says the
    killed run finished its work (as a holder looks at the card's balance), run it until
    it succeeds. Returns whether the kill landed before the first run ended."""
    first = jointpay(home, *args, quiet=True)
    assert first.stdin is not None
    first.stdin.write(stdin)
    first.stdin.close()
    time.sleep(rng.uniform(0.05, 1.1))
    killed = first.poll() is None
    if killed:
        first.send_signal(signal.SIGKILL)
    first.wait()
    if done():
        return killed, {}
    for _ in range(5):
        again = jointpay(home, *args)
        out, err = again.communicate(stdin, timeout=300)
        if again.returncode in (0, 1):  # 1: the protocol refused some payments (duplicates)
            return killed, dict(json.loads(out))
    raise AssertionError(f"{args} never succeeded after the kill: {err[-2000:]}")


def test_killed_deposits_and_withdrawals_reach_the_same_end_state(tmp_path: Path) -> None:
    print(f"embedded crash seed {SEED} (JOINTPAY_CRASH_SEED)")
    rng = random.Random(SEED)
    h = Home(tmp_path, None)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="crash-bank")
    with h.bank() as bank:
        bank.open_account("alice", 1_000_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=200_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
        holder_before = bank.account("holder:alice").balance
    taken = [h.pay(card, "Shop", 10 + k % 7, PIN) for k in range(600)]
    total = sum(p.amount for p in taken)

    kills = 0
    for part in range(3):  # three deposits of what is pending, each killed once
        extra = [h.pay(card, "Shop", 5, PIN) for _ in range(20)] if part else []
        total += sum(p.amount for p in extra)
        killed, _ = kill_then_finish(tmp_path, rng, ["deposit", "--merchant", "Shop"])
        kills += killed
    withdrawn = 0
    for _ in range(4):  # four withdrawals, each killed once and run again if unfinished
        seq = h.card(card).load().seq

        def completed(before: int = seq) -> bool:
            """The card moved on: the withdrawal is complete (the holder sees the new
            balance); a pending request, or none, means run the command again."""
            state = h.card(card).load()
            return state.seq == before + 1 and not state.pending_withdrawal

        killed, _ = kill_then_finish(
            tmp_path,
            rng,
            ["withdraw", "--card", card, "--amount", "7.00", "--pin-stdin"],
            stdin=PIN + "\n",
            done=completed,
        )
        kills += killed
        assert h.card(card).load().seq == seq + 1  # exactly one withdrawal, kill or not
        withdrawn += 700
    print(f"processes killed mid-run: {kills} of 7")

    with h.bank() as bank:
        report = bank.audit()
        assert report.ok, report.violations
        assert bank.account(bank.merchant("Shop").account_id).balance == total  # once each
        spent = total
        assert bank.account(f"card:{card}").balance == 200_000 + withdrawn - spent
        assert bank.account("holder:alice").balance == holder_before - withdrawn
    assert h.card(card).load().balance == 200_000 + withdrawn - spent
    with h.terminal("Shop") as (_, store):
        assert store.count_pending() == 0
