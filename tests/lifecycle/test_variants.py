"""The patent's variants on every backend: payments converted from another currency,
cheque cards, credit cards (limit restored by FIG. 10, settlement run)."""

from __future__ import annotations

from typing import Any

import pytest

from jointpay.domain.money import convert, parse_rate
from jointpay.home import Home
from jointpay import home as home_module
from jointpay.protocol import terminal as terminal_module
from jointpay.protocol.spec import PaymentSpec
from jointpay.protocol.terminal import PaymentDeclined
from jointpay.service.errors import BadInput, Refused
from jointpay.service.policy import DAY
from worlds import PIN


def reasons(receipt: dict[str, Any]) -> list[str | None]:
    return [r["reason"] for r in receipt["results"]]


# -- currency conversion ---------------------------------------------------------------
def test_a_converted_payment_is_checked_against_the_rate_of_its_time(
    world: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    h: Home = world["home"]
    card, clock = world["alice"], world["clock"]
    with h.bank() as bank:
        bank.set_rate("USD", parse_rate("0.92"), clock.now - DAY)
        bank.set_rate("JPY", parse_rate("0.0061"), clock.now - DAY)
        assert bank.rates()["rates"]["USD"] == [{"from": clock.now - DAY, "rate": "0.92"}]
    at_bank = h.pay(card, "Shop", "10.00", PIN, price_currency="USD")  # the bank's rate
    close = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.925")  # 0.54 %
    yen = h.pay(card, "Shop", "1234", PIN, price_currency="JPY", rate="0.0061")
    far = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.95")  # 3.3 %
    unknown = h.pay(card, "Shop", "10.00", PIN, price_currency="GBP", rate="1.15")
    assert (at_bank.amount, close.amount, yen.amount, far.amount) == (920, 925, 753, 950)
    spec = PaymentSpec.decode(at_bank.spec)
    assert spec.conversion is not None
    assert (spec.conversion.orig_amount, spec.conversion.orig_currency) == (1000, "USD")
    # A terminal that states the bank's rate but converts to its own advantage:
    monkeypatch.setattr(terminal_module, "convert", lambda *a: 1000)
    monkeypatch.setattr(home_module, "convert", lambda *a: 1000)
    greedy = h.pay(card, "Shop", "10.00", PIN, price_currency="USD", rate="0.92")
    monkeypatch.undo()
    assert greedy.amount == 1000
    # A rate published later does not apply to a payment made before it.
    with h.bank() as bank:
        bank.set_rate("USD", parse_rate("0.95"), clock.now + 1)
        clock.now += 2
        receipt = h.deposit("Shop", bank)
        assert reasons(receipt) == [None, None, None] + ["currency_mismatch"] * 3
        assert bank.account(bank.merchant("Shop").account_id).balance == 920 + 925 + 753
        assert bank.audit().ok
    after = h.pay(card, "Shop", "10.00", PIN, price_currency="USD")  # the new rate now
    assert after.amount == 950


def test_conversion_arithmetic_and_refusals(world: dict[str, Any]) -> None:
    assert convert(1, "USD", parse_rate("0.5"), "EUR") == 1  # 0.5 cent rounds half up
    assert convert(999, "JPY", parse_rate("0.006"), "KWD") == 5994  # 5.994 KWD
    assert convert(1, "KWD", parse_rate("3.25"), "EUR") == 0  # 0.325 cent rounds down
    h: Home = world["home"]
    with h.bank() as bank:
        with pytest.raises(BadInput):
            bank.set_rate("EUR", parse_rate("1"))  # the bank's own currency
        with pytest.raises(Refused) as exc:
            h.pay(world["alice"], "Shop", "10.00", PIN, price_currency="CHF", bank=bank)
        assert exc.value.code == "currency_mismatch"  # no published rate, none given
    with pytest.raises(ValueError):
        parse_rate("1.0000001")
    with pytest.raises(PaymentDeclined) as declined:
        with h.card_client(world["alice"]) as client, h.terminal("Shop") as (tf, store):
            from jointpay.protocol.spec import Conversion
            from jointpay.protocol.terminal import Terminal

            t = Terminal(tf.config(frozenset()), store)
            t.pay(
                client,
                999,
                lambda: PIN,
                world["clock"].now,
                conversion=Conversion(1000, "USD", 920_000),
            )
    assert declined.value.code == "bad_conversion"
