"""The card behind a real reader: pcscd, the vsmartcard-vpcd driver, pyscard.

Every test here goes through the real PC/SC stack: the card applet is served to vpcd
(by ``jointpay card insert`` in its own process, or by a thread of the test), pcscd
carries the APDUs, and the terminal reaches the card with pyscard.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pcsc_env import (
    PIN,
    READER,
    card_in_thread,
    card_process,
    jointpay_argv,
    make_world,
    reader_state,
)

from jointpay.adapters.pcsc import NoCard, PcscChannel, UnknownReader, atr_extended_length
from jointpay.adapters.vpcd import ATR
from jointpay.crypto.group import SUITE_MODP, SUITE_SECP256K1
from jointpay.home import Home
from jointpay.protocol.apdu import SW, Command, Response
from jointpay.protocol.card import AID
from jointpay.protocol.terminal import CardClient, PaymentDeclined, Terminal
from jointpay.service.errors import BadInput


def run(home: Path, *args: str, pin: str | None = None) -> tuple[int, dict[str, Any]]:
    p = subprocess.run(
        jointpay_argv("--home", str(home), "--json", *args),
        check=False,
        input=f"{pin}\n" if pin is not None else "",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return p.returncode, json.loads(p.stdout.splitlines()[-1])


def inserted(home: Path, card: str) -> Any:
    return card_process(
        jointpay_argv("--home", str(home), "--json", "card", "insert", "--card", card),
        ready=lambda line: json.loads(line or "{}").get("connected") is True,
    )


class Recording:
    """A channel wrapper that records every command APDU (and may forbid extended ones)."""

    def __init__(self, inner: PcscChannel, *, extended: bool) -> None:
        self.inner = inner
        self.extended_length = extended
        self.sent: list[bytes] = []

    def transmit(self, apdu: bytes) -> bytes:
        self.sent.append(apdu)
        return self.inner.transmit(apdu)


# --------------------------------------------------------------------------------------


def test_atr_announces_t1_and_extended_length() -> None:
    assert ATR[0] == 0x3B
    tck = 0
    for byte in ATR[1:]:
        tck ^= byte
    assert tck == 0  # T0..TCK XOR to zero (ISO 7816-3 8.2.5)
    assert atr_extended_length(ATR)
    no_extended = ATR[:8] + bytes([ATR[8] & ~0x40]) + ATR[9:]  # 73 80 01 80: chaining only
    assert not atr_extended_length(no_extended)
    assert not atr_extended_length(b"\x3b")


def test_cli_insert_readers_and_the_same_lifecycle_as_in_process(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """pay / withdraw / card show through the reader = the same through the card file."""
    h: Home = world["home"]
    card = world["card"]
    twin = make_world(tmp_path / "twin")
    th: Home = twin["home"]

    assert reader_state() is False
    with inserted(h.root, card):
        code, readers = run(h.root, "readers")
        assert code == 0
        assert {"name": READER, "card_present": True} in readers["readers"]
        # The card file is in the reader: nobody else may drive it meanwhile.
        code, busy = run(
            h.root,
            "pay",
            "--merchant",
            "Shop",
            "--amount",
            "1.00",
            "--card",
            card,
            "--pin-stdin",
            pin=PIN,
        )
        assert (code, busy["error"]) == (2, "card_busy")

        code, paid = run(
            h.root,
            "pay",
            "--merchant",
            "Shop",
            "--amount",
            "12.50",
            "--reader",
            READER,
            "--pin-stdin",
            pin=PIN,
        )
        assert code == 0, paid
        code, bad_pin = run(
            h.root,
            "pay",
            "--merchant",
            "Shop",
            "--amount",
            "1.00",
            "--reader",
            READER,
            "--pin-stdin",
            pin="1111",
        )
        assert (code, bad_pin["error"]) == (1, "wrong_pin")
        code, topped = run(
            h.root,
            "withdraw",
            "--amount",
            "5.00",
            "--reader",
            READER,
            "--card",
            card,
            "--pin-stdin",
            pin=PIN,
        )
        assert code == 0, topped
        code, shown = run(h.root, "card", "show", "--reader", READER)
        assert code == 0
        code, wrong = run(h.root, "card", "show", "--reader", READER, "--card", "1234567890")
        assert (code, wrong["error"]) == (2, "wrong_card")
    code, readers = run(h.root, "readers")
    assert {"name": READER, "card_present": False} in readers["readers"]

    # The twin does the same with its card in process.
    tcard = twin["card"]
    code, tpaid = run(
        th.root,
        "pay",
        "--merchant",
        "Shop",
        "--amount",
        "12.50",
        "--card",
        tcard,
        "--pin-stdin",
        pin=PIN,
    )
    assert code == 0
    run(
        th.root,
        "pay",
        "--merchant",
        "Shop",
        "--amount",
        "1.00",
        "--card",
        tcard,
        "--pin-stdin",
        pin="1111",
    )
    code, ttopped = run(
        th.root, "withdraw", "--amount", "5.00", "--card", tcard, "--pin-stdin", pin=PIN
    )
    code, tshown = run(th.root, "card", "show", "--card", tcard)

    same = ("amount", "currency", "ser", "suite")
    assert {k: paid[k] for k in same} == {k: tpaid[k] for k in same}
    assert paid["card"] == card
    assert (topped["balance"], topped["seq"]) == (ttopped["balance"], ttopped["seq"])
    differ = {"card", "cert_id", "bank_id", "valid_until"}
    assert {k: v for k, v in shown.items() if k not in differ} == {
        k: v for k, v in tshown.items() if k not in differ
    }
    assert shown["pin_tries"] == 3
    assert shown["balance"] == "192.50"

    # Same ledger effects: deposit both terminals' batches, compare the books.
    code, dep = run(h.root, "deposit", "--merchant", "Shop")
    code2, tdep = run(th.root, "deposit", "--merchant", "Shop")
    assert code == code2 == 0
    assert (
        [r["status"] for r in dep["results"]]
        == [r["status"] for r in tdep["results"]]
        == ["accepted"]
    )
    assert dep["credited"] == tdep["credited"] == "12.50"
    code, audit = run(h.root, "bank", "audit")
    code2, taudit = run(th.root, "bank", "audit")
    assert audit["ok"] is True
    assert taudit["ok"] is True
    assert audit == taudit  # the same books, to the minor unit


@pytest.mark.parametrize("suite", [SUITE_SECP256K1, SUITE_MODP])
def test_payment_takes_four_apdus_after_select(
    pcsc_daemon: None, tmp_path: Path, suite: str
) -> None:
    w = make_world(tmp_path, suite)
    h: Home = w["home"]
    with card_in_thread(h.card(w["card"])), PcscChannel(READER) as channel:
        assert channel.extended_length
        rec = Recording(channel, extended=True)
        client = CardClient(rec)
        with h.terminal("Shop") as (tf, store):
            terminal = Terminal(tf.config(store.hotlist()), store)
            cert = terminal.read_card(client, w["clock"]())
            taken = terminal.pay(client, 1250, lambda: PIN, w["clock"](), card=cert)
    assert taken.amount == 1250
    assert taken.suite == suite
    ins = [Command.parse(a).ins for a in rec.sent]
    assert ins == [0xA4, 0xCA, 0xCA, 0x20, 0x50], [a[:4].hex() for a in rec.sent]
    assert len(rec.sent) - 1 == 4


def test_short_apdus_chain_commands_and_fetch_long_answers(
    pcsc_daemon: None, tmp_path: Path
) -> None:
    """A reader without extended length: command chaining and GET RESPONSE (61xx)."""
    w = make_world(tmp_path, SUITE_MODP)  # the modp CARD-CERT is longer than 256 bytes
    h: Home = w["home"]
    with card_in_thread(h.card(w["card"])), PcscChannel(READER) as channel:
        rec = Recording(channel, extended=False)
        client = CardClient(rec)
        with h.terminal("Shop") as (tf, store):
            terminal = Terminal(tf.config(store.hotlist()), store)
            taken = terminal.pay(client, 700, lambda: PIN, w["clock"]())
    commands = [Command.parse(a) for a in rec.sent]
    assert all(len(a) <= 5 + 255 + 1 for a in rec.sent)  # short APDUs only
    assert any(c.ins == 0xC0 for c in commands)  # GET RESPONSE fetched the rest
    assert taken.amount == 700
    with h.bank() as bank:
        assert h.deposit("Shop", bank)["results"][0]["status"] == "accepted"


def test_status_words_through_the_reader(world: dict[str, Any]) -> None:
    h: Home = world["home"]

    def tx(channel: PcscChannel, hexapdu: str) -> int:
        return Response.parse(channel.transmit(bytes.fromhex(hexapdu))).sw

    with card_in_thread(h.card(world["card"])), PcscChannel(READER) as ch:
        assert tx(ch, "80CA010100") == SW.CONDITIONS  # 6985: nothing selected
        assert tx(ch, "00A4040005A000000001") == SW.FILE_NOT_FOUND  # 6A82
        select = f"00A40400{len(AID):02X}{AID.hex()}"
        assert tx(ch, select) == SW.OK
        assert tx(ch, "80FF000000") == SW.INS_NOT_SUPPORTED  # 6D00
        assert tx(ch, "A0CA010100") == SW.CLA_NOT_SUPPORTED  # 6E00
        assert tx(ch, "80CA0101050102") == SW.WRONG_LENGTH  # 6700: Lc says 5, 2 bytes came
        assert tx(ch, "80500000000005010203") == SW.WRONG_LENGTH  # extended, truncated
        pay = "80500000020000"
        assert tx(ch, pay) == SW.SECURITY_STATUS  # 6982: PIN not verified
        wrong = "0020008004" + b"1111".hex()
        assert [tx(ch, wrong) for _ in range(3)] == [0x63C2, 0x63C1, 0x63C0]
        assert tx(ch, "0020008004" + PIN.encode().hex()) == SW.AUTH_BLOCKED  # 6983
        assert tx(ch, pay) == SW.AUTH_BLOCKED
    assert h.card(world["card"]).load().pin_tries == 0


def test_a_reset_or_power_cycle_forgets_the_pin(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    with card_in_thread(h.card(world["card"])) as vc:
        with PcscChannel(READER) as ch:
            client = CardClient(ch)
            client.select()
            client.verify_pin(PIN)
        assert vc.powered  # reset: the applet was rebuilt from the file; PIN status gone
        with PcscChannel(READER) as ch, h.terminal("Shop") as (tf, store):
            client = CardClient(ch)
            client.select()
            # PAY straight away, no VERIFY: refused
            terminal = Terminal(tf.config(store.hotlist()), store)
            cert = terminal.read_card(client, world["clock"]())
            with pytest.raises(PaymentDeclined) as exc:
                terminal.pay(client, 100, lambda: "1111", world["clock"](), card=cert)
            assert exc.value.code == "wrong_pin"
    assert h.card(world["card"]).load().pin_tries == 2


def test_no_card_no_reader(world: dict[str, Any]) -> None:
    with pytest.raises(UnknownReader):
        PcscChannel("No Such Reader 00 00")
    with pytest.raises(NoCard):
        PcscChannel(READER)
    h: Home = world["home"]
    with card_in_thread(h.card(world["card"])), pytest.raises(BadInput) as exc:
        h.pay(world["card"], "Shop", 100, PIN)
    assert exc.value.code == "card_busy"


def test_a_killed_card_process_loses_nothing(world: dict[str, Any]) -> None:
    """SIGKILL the `card insert` process between payments; insert again; pay on."""
    h: Home = world["home"]
    card = world["card"]
    with inserted(h.root, card) as proc:
        first = h.pay(None, "Shop", 500, PIN, reader=READER)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    with inserted(h.root, card):
        second = h.pay(None, "Shop", 700, PIN, reader=READER)
    assert (first.ser, second.ser) == (0, 1)
    assert h.card(card).load().balance == 20_000 - 1200
