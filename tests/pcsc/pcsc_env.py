"""A real pcscd with the vsmartcard-vpcd reader, and cards plugged into it.

The tests need ``pcscd`` and the ``vsmartcard-vpcd`` driver (``.ci/run`` installs
both). If pcscd is not running, it is started here (``pcscd -f``, as root) and stopped
at the end. If it cannot be reached the tests fail with the reason; a developer
without pcscd may deselect them (``-m "not pcsc"``) or set
``JOINTPAY_ALLOW_NO_PCSC=1`` to skip them; never in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from jointpay.adapters.card_file import CardFile
from jointpay.adapters.pcsc import PcscError, list_readers
from jointpay.adapters.vpcd import Endpoint, VirtualCard
from jointpay.home import Home

READER = os.environ.get("JOINTPAY_TEST_READER", "Virtual PCD 00 00")
VPCD = Endpoint.parse(os.environ.get("JOINTPAY_TEST_VPCD", "127.0.0.1:35963"))
VPCD_DRIVER = Path("/usr/lib/pcsc/drivers/serial/libifdvpcd.so")
HERE = Path(__file__).resolve().parent

PIN = "2468"


class Clock:
    """Starts at the real time: the CLI processes of these tests run on the real clock."""

    def __init__(self) -> None:
        self.now = int(time.time())

    def __call__(self) -> int:
        return self.now


def make_world(root: Path, suite: str = "secp256k1") -> dict[str, Any]:
    clock = Clock()
    h = Home(root, None, clock)
    h.init_bank(suite=suite, group=None, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        )
        h.open_merchant(bank, "Shop")
    return {"home": h, "clock": clock, "card": card.card_number}


def _unavailable(why: str) -> None:
    if os.environ.get("JOINTPAY_ALLOW_NO_PCSC") == "1" and os.environ.get("CI") != "true":
        pytest.skip(f"PC/SC unavailable and JOINTPAY_ALLOW_NO_PCSC=1: {why}")
    pytest.fail(f"PC/SC end-to-end tests need pcscd with vsmartcard-vpcd: {why}")


def reader_state() -> bool | None:
    """Whether a card is in the test reader; None if pcscd or the reader is absent."""
    try:
        for r in list_readers():
            if r.name == READER:
                return r.card_present
    except PcscError:
        return None
    return None


def wait_reader(present: bool, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if reader_state() is present:
            return
        time.sleep(0.02)
    raise AssertionError(f"{READER}: card_present did not become {present} in {timeout} s")


def _event_state() -> int | None:
    from smartcard import scard

    rc, ctx = scard.SCardEstablishContext(scard.SCARD_SCOPE_USER)
    if rc != scard.SCARD_S_SUCCESS:
        return None
    try:
        rc, states = scard.SCardGetStatusChange(ctx, 0, [(READER, scard.SCARD_STATE_UNAWARE)])
        return int(states[0][1]) if rc == scard.SCARD_S_SUCCESS else None
    finally:
        scard.SCardReleaseContext(ctx)


def settle(quiet: float = 0.8, timeout: float = 10.0) -> None:
    """Wait until pcscd has finished with a card that died mid-command.

    The reader shows EMPTY as soon as vpcd loses the card, but pcscd finishes the
    removal (power-off grace period, then its removal event) up to a second later; a
    card plugged in meanwhile is polled by vpcd yet never announced by pcscd. So wait
    until the reader's event state (its event counter included) stays the same for
    ``quiet`` seconds.
    """
    deadline = time.monotonic() + timeout
    last, since = _event_state(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = _event_state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
    raise AssertionError(f"{READER} did not settle in {timeout} s")


@contextmanager
def pcscd() -> Iterator[None]:
    """Make sure pcscd serves the vpcd reader for the block."""
    if shutil.which("pcscd") is None:
        _unavailable("pcscd is not installed (apt-get install pcscd)")
    if not VPCD_DRIVER.exists():
        _unavailable(f"{VPCD_DRIVER} is missing (apt-get install vsmartcard-vpcd)")
    proc: subprocess.Popen[bytes] | None = None
    if reader_state() is None:
        if os.geteuid() != 0:
            _unavailable("pcscd is not running and only root may start it here")
        proc = subprocess.Popen(
            ["pcscd", "--foreground", "--error"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 15
        while reader_state() is None and time.monotonic() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                _unavailable(f"pcscd exited with {proc.returncode}: {err.strip()[-500:]}")
            time.sleep(0.1)
        if reader_state() is None:
            proc.terminate()
            _unavailable(f"pcscd started but shows no reader {READER!r}")
    if reader_state():
        _unavailable(f"{READER} already holds a card; another test run is using it")
    try:
        yield
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@contextmanager
def card_in_thread(card: CardFile) -> Iterator[VirtualCard]:
    """The card served to the reader by this process (fast; for the tests' own checks)."""
    with card.hold():
        vc = VirtualCard(card.applet, VPCD)
        vc.connect()
        t = threading.Thread(target=vc.serve, daemon=True)
        t.start()
        try:
            wait_reader(True)
            yield vc
        finally:
            vc.stop()
            t.join(5)
            wait_reader(False)


@contextmanager
def card_process(
    argv: list[str], *, ready: Callable[[str], bool]
) -> Iterator[subprocess.Popen[str]]:
    """A card served by a separate process (``argv``); yields once the reader has it."""
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not ready(line):
            err = proc.stderr.read() if proc.stderr else ""
            raise AssertionError(f"the card process did not connect: {line!r} {err[-800:]}")
        wait_reader(True)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        wait_reader(False)


def jointpay_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "jointpay", *args]


def torn_card_argv(path: Path, k: int, where: str) -> list[str]:
    return [sys.executable, str(HERE / "torn_card.py"), str(path), str(k), where, str(VPCD)]
