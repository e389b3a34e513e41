"""Attacks that must fail closed: each test is one attacker's move and its refusal.

Attacks covered elsewhere, named here so the list is in one place:

* rogue-key contribution: `tests/unit/test_crypto_core.py` (proofs of possession);
* an old card state restored to reuse a ser: `tests/lifecycle`
  (`test_clone_is_caught_and_hot_listed`);
* replayed deposits and withdrawals: `tests/lifecycle`, `tests/e2e/test_http_concurrency.py`;
* forged CARD-CERT and MERCHANT-CERT: `tests/unit/test_certs.py`, `vectors/card_cert.json`;
* a PIN counter bypassed by cutting the power: `tests/pcsc/test_tearing.py` (VERIFY cases);
* admin endpoints without a credential: `tests/e2e/test_http.py`;
* a card of bank B double-deposited at banks A and C (two clearing houses), credited
  once: `tests/e2e/test_clearing.py`;
* adversarial hints for batch verification (-1, order h, swapped, wrong, signed over a
  bad hint): `tests/property/test_batch_props.py`;
* every parser under arbitrary input: `fuzz/fuzz_parsers.py` (`tests/fuzz`).
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from jointpay.crypto.certs import SigningKey
from jointpay.home import Home
from jointpay.protocol.deposit import (
    BATCH_FORMAT,
    BatchError,
    loads_strict,
    make_deposit,
    parse_batch,
)
from jointpay.protocol.messages import TERMINAL_SPEC_TAG, PayCommand
from jointpay.protocol.spec import PaymentSpec
from jointpay.protocol.terminal import CardClient, CardError, Terminal
from jointpay.service.errors import BadInput

PIN = "2468"
NOW = 1_800_000_000


@pytest.fixture
def world(tmp_path: Path) -> dict[str, Any]:
    h = Home(tmp_path / "a", "memory:", lambda: NOW)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-a")
    with h.bank() as bank:
        bank.open_account("alice", 100_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
        h.open_merchant(bank, "Cafe")
    other = Home(tmp_path / "b", "memory:", lambda: NOW)
    other.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-b")
    with other.bank() as bank:
        other.open_merchant(bank, "Rogue")
    return {"home": h, "card": card, "other": other}


def rogue_pay(
    client: CardClient,
    merchant_cert: bytes,
    key: SigningKey,
    signed: PaymentSpec,
    sent: PaymentSpec,
) -> None:
    client.select()
    client.verify_pin(PIN)
    sig = key.sign(TERMINAL_SPEC_TAG, signed.encode())
    client.pay(PayCommand(merchant_cert, sent.encode(), sig))


def test_a_rogue_terminal_gets_no_signature_for_another_payee_or_amount(
    world: dict[str, Any],
) -> None:
    h: Home = world["home"]
    card = world["card"]
    shop, cafe = h.terminal_file("Shop"), h.terminal_file("Cafe")
    rogue = world["other"].terminal_file("Rogue")
    shop_key = SigningKey.from_private_bytes(shop.sid, shop.signing_key)
    rogue_key = SigningKey.from_private_bytes(rogue.sid, rogue.signing_key)
    before = h.card(card).load()
    with h.card_client(card) as client:
        cert = Terminal(shop.config(frozenset()), _NoStore()).read_card(client, NOW)
        honest = PaymentSpec(shop.bank_id, shop.sid, 500, "EUR", NOW, 1, cert.cert_id)
        attempts = {
            # Shop's certificate and key, but the spec pays Cafe
            "another payee": (
                shop.merchant_cert,
                shop_key,
                honest._replace(sid=cafe.sid),
                honest._replace(sid=cafe.sid),
            ),
            # the terminal signs 5.00 and sends 150.00
            "another amount": (
                shop.merchant_cert,
                shop_key,
                honest,
                honest._replace(amount=15_000),
            ),
            # a merchant of another bank, with its own valid certificate
            "another bank": (
                rogue.merchant_cert,
                rogue_key,
                honest._replace(bank_id=rogue.bank_id, sid=rogue.sid),
                honest._replace(bank_id=rogue.bank_id, sid=rogue.sid),
            ),
            # a certificate that is not a merchant's at all
            "forged certificate": (b"\x00" * 64, shop_key, honest, honest),
        }
        for name, (merchant_cert, key, signed, sent) in attempts.items():
            with pytest.raises(CardError) as exc:
                rogue_pay(client, merchant_cert, key, signed, sent)
            assert exc.value.sw in (0x6982, 0x6A80), (name, hex(exc.value.sw))
    after = h.card(card).load()
    assert (after.balance, after.next_ser) == (before.balance, before.next_ser)


class _NoStore:
    """A terminal store for reading the card only (nothing is taken)."""

    def has_payment(self, card_number: str, ser: int) -> bool:
        return False

    def add_payment(self, payment: object) -> None:
        raise AssertionError("nothing may be taken here")

    def next_txn(self) -> int:
        return 1


def test_a_hint_in_the_batch_is_never_trusted(world: dict[str, Any]) -> None:
    """Batches carry a verification hint; the bank recomputes, whatever the hint says."""
    h: Home = world["home"]
    card = world["card"]
    h.pay(card, "Shop", 300, PIN)
    h.pay(card, "Shop", 400, PIN)
    batch = h.export_batch("Shop")
    good, bad = batch["cards"][0]["payments"]
    good["hint"] = bad["hint"]  # a wrong hint on a valid signature
    bad["hint"] = "02" + "11" * 32  # and an arbitrary point on a forged one
    bad["b"] = format((int(bad["b"], 16) + 1) % (1 << 256), "064x")
    tf = h.terminal_file("Shop")
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    with h.bank() as bank:
        receipt = bank.deposit(make_deposit(key, tf.bank_id, tf.sid, 1, NOW, batch))
        assert [(r["status"], r["reason"]) for r in receipt["results"]] == [
            ("accepted", None),
            ("rejected", "bad_signature"),
        ]
        assert bank.audit().ok


def test_absurd_batches_get_a_clear_error_in_bounded_memory(world: dict[str, Any]) -> None:
    h: Home = world["home"]
    tf = h.terminal_file("Shop")
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    # Nesting a hundred thousand levels deep: malformed, not a RecursionError.
    with pytest.raises(BatchError, match="nested too deeply"):
        loads_strict("[" * 100_000 + "]" * 100_000)
    # 300,000 tiny payments (the limit is 200,000): refused before any work per payment.
    tiny = json.dumps(
        {
            "format": BATCH_FORMAT,
            "bank_id": tf.bank_id,
            "sid": tf.sid,
            "cards": [{"cert": "00", "payments": [{}] * 300_000}],
        }
    )
    tracemalloc.start()
    try:
        with pytest.raises(BatchError, match="limit"):
            parse_batch(loads_strict(tiny))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB"
    with h.bank() as bank, pytest.raises(BadInput) as exc:
        bank.deposit(make_deposit(key, tf.bank_id, tf.sid, 1, NOW, loads_strict(tiny)))
    assert exc.value.code == "malformed"


def test_pin_and_mac_comparisons_go_through_the_constant_time_compare(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A wrong PIN and a forged MAC are each rejected by ``hmac.compare_digest``, whose
    time does not depend on where the bytes differ (no byte-by-byte ``==``)."""
    import hmac as real_hmac

    from jointpay.crypto import certs as certs_module
    from jointpay.protocol import card as card_module
    from jointpay.protocol.messages import AuthKind

    calls: list[tuple[int, int]] = []

    class Spy:
        @staticmethod
        def compare_digest(a: bytes, b: bytes) -> bool:
            calls.append((len(a), len(b)))
            return real_hmac.compare_digest(a, b)

        def __getattr__(self, name: str) -> Any:
            return getattr(real_hmac, name)

    h: Home = world["home"]
    monkeypatch.setattr(card_module, "hmac", Spy())
    with h.card_client(world["card"]) as client:
        client.select()
        with pytest.raises(CardError):
            client.verify_pin("0000")
        client.verify_pin(PIN)  # and the right one, the same way
    assert len(calls) == 2
    calls.clear()
    monkeypatch.setattr(certs_module, "hmac", Spy())
    with h.card_client(world["card"]) as client:
        client.select()
        client.verify_pin(PIN)
        request = client.withdraw_request(100, False, AuthKind.MAC)
    forged = request[:-1] + bytes([request[-1] ^ 1])  # the MAC's last byte
    with h.bank() as bank, pytest.raises(Exception) as refused:
        bank.withdraw(forged)
    assert getattr(refused.value, "code", None) in ("bad_auth", "bad_signature", "bad_mac")
    assert calls, "the MAC was not compared with compare_digest"


def test_a_100_mb_batch_gets_a_clear_error_in_bounded_memory(world: dict[str, Any]) -> None:
    """100 MB of batch: one CARD-CERT field of 100 MB, and, separately, 100 MB spread
    over payments whose fields are each far too long. The first is refused as a whole
    (`malformed`, naming the limit); the second payment by payment; memory stays within
    a small multiple of the input, and nothing moves."""
    h: Home = world["home"]
    tf = h.terminal_file("Shop")
    key = SigningKey.from_private_bytes(tf.sid, tf.signing_key)
    huge = {
        "format": BATCH_FORMAT,
        "bank_id": tf.bank_id,
        "sid": tf.sid,
        "cards": [{"cert": "ab" * 50_000_000, "payments": [{"ser": 0}]}],
    }
    long_fields = {
        "format": BATCH_FORMAT,
        "bank_id": tf.bank_id,
        "sid": tf.sid,
        "cards": [
            {"cert": "00", "payments": [{"ser": i, "spec": "ab" * 500_000} for i in range(100)]}
        ],
    }
    for batch, whole in ((huge, True), (long_fields, False)):
        text = json.dumps(make_deposit(key, tf.bank_id, tf.sid, 1, NOW, batch))
        assert len(text) >= 100_000_000
        tracemalloc.start()
        try:
            message = loads_strict(text)
            with h.bank() as bank:
                if whole:
                    with pytest.raises(BadInput, match="at most") as exc:
                        bank.deposit(message)
                    assert exc.value.code == "malformed"
                else:
                    receipt = bank.deposit(message)
                    assert receipt["accepted"] == 0
                    assert {r["reason"] for r in receipt["results"]} == {"malformed"}
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        del message
        assert peak < 4 * len(text), f"peak {peak / 2**20:.0f} MiB for {len(text) >> 20} MiB"
    with h.bank() as bank:
        assert bank.account(bank.merchant("Shop").account_id).balance == 0
        assert bank.audit().ok
