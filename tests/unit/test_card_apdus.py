"""The card's answers to malformed commands, and the terminal's to a card that misbehaves.

Each case was found by reading the code against ISO 7816-4 and the applet's promise
that :meth:`CardApplet.process` answers every input with a status word and never raises.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from jointpay.adapters.card_file import CardFile
from jointpay.crypto.certs import MerchantCert, SigningKey, mac
from jointpay.crypto.encoding import Writer
from jointpay.home import Home
from jointpay.protocol.apdu import SW, Command, Response
from jointpay.protocol.card import (
    AID,
    INS_CHALLENGE,
    INS_GET_DATA,
    INS_PERSONALISE,
    INS_SELECT,
    INS_VERIFY,
    INS_WITHDRAW_REQ,
    P_IDENTITY,
    payment_from_last,
)
from jointpay.protocol.messages import (
    LATEST,
    WITHDRAW_REQUEST_TAG,
    AuthKind,
    WithdrawRequest,
    payment_read,
)
from jointpay.protocol.terminal import MAX_ANSWER, CardClient, PaymentDeclined, Terminal
from jointpay.service.errors import Refused

PIN = "2468"
NOW = 1_800_000_000


def sw(answer: bytes) -> int:
    return Response.parse(answer).sw


@pytest.fixture
def home(tmp_path: Path) -> tuple[Home, str]:
    h = Home(tmp_path / "bank", "memory:", lambda: NOW)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-a")
    with h.bank() as bank:
        bank.open_account("alice", 100_000)
        card = h.issue_card(
            bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
        ).card_number
        h.open_merchant(bank, "Shop")
    return h, card


@pytest.mark.parametrize(("p1", "p2"), [(3, 0), (0xFF, 0), (1, 0x77), (0, 1)])
def test_withdraw_request_with_a_wrong_p1_or_p2_is_6a86_and_nothing_pending(
    home: tuple[Home, str], p1: int, p2: int
) -> None:
    h, card = home
    applet = h.card(card).applet()
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK
    verify = Command(0x00, INS_VERIFY, 0x00, 0x80, PIN.encode())
    assert sw(applet.process(verify.encode())) == SW.OK
    body = (100).to_bytes(8, "big") + b"\x00"  # amount, renew
    answer = applet.process(Command(0x80, INS_WITHDRAW_REQ, p1, p2, body).encode())
    assert sw(answer) == SW.WRONG_P1P2
    assert h.card(card).load().pending_withdrawal == b""
    # the same request with P1 = 1 (a signature) and P2 = 0 is served
    good = applet.process(Command(0x80, INS_WITHDRAW_REQ, 1, 0, body).encode())
    assert sw(good) == SW.OK
    assert h.card(card).load().pending_withdrawal != b""


def test_personalise_with_group_parameters_nested_past_the_recursion_limit_is_6a80(
    tmp_path: Path,
) -> None:
    card, applet = CardFile.blank(tmp_path / "blank.card")
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK
    identity = (
        Writer()
        .text("4000000000000002")
        .text("modp-2048-256")
        .text("g1")
        .text("[" * 2000)  # within the field's 2,048 characters, nested 2,000 deep
        .text("EUR")
        .text("cash")
        .text("bank-a")
        .raw(b"\x01" * 32)
        .raw(b"\x02" * 32)
        .text(PIN)
        .text("")
        .blob(b"")
        .finish()
    )
    answer = applet.process(Command(0x80, INS_PERSONALISE, P_IDENTITY, 0, identity).encode())
    assert sw(answer) == SW.WRONG_DATA
    assert card.load().phase == "blank"


class _Endless:
    """A card (or a reader in the middle) that answers every command with 61 00 and
    256 more bytes."""

    extended_length = True

    def __init__(self) -> None:
        self.sent = 0

    def transmit(self, apdu: bytes) -> bytes:
        self.sent += 1
        assert self.sent < 10_000, "the terminal never stopped asking"
        return b"\xaa" * 256 + b"\x61\x00"


def test_a_card_that_never_stops_answering_is_declined_after_a_bounded_answer(
    home: tuple[Home, str],
) -> None:
    h, _ = home
    channel = _Endless()
    with h.terminal("Shop") as (tf, store):
        terminal = Terminal(tf.config(frozenset()), store)
        with pytest.raises(PaymentDeclined) as caught:
            terminal.read_card(CardClient(channel), NOW)
    assert caught.value.code == "card_error"
    assert "runs past" in str(caught.value)
    # one command and as many GET RESPONSEs as fill the bound, not one more
    assert channel.sent == MAX_ANSWER // 256 + 1


@pytest.mark.parametrize("flags", [0x02, 0x03, 0x04, 0x80])
def test_withdraw_request_flags_up_to_is_for_credit_cards_and_unknown_flags_are_6a80(
    home: tuple[Home, str], flags: int
) -> None:
    """WITHDRAW REQUEST's flags byte: bit 0 renew, bit 1 up to (a credit card's restore
    of at most the amount). A cash card refuses up to; every card refuses other bits."""
    h, card = home
    applet = h.card(card).applet()
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK
    assert sw(applet.process(Command(0x00, INS_VERIFY, 0x00, 0x80, PIN.encode()).encode())) == SW.OK
    body = (100).to_bytes(8, "big") + bytes([flags])
    answer = applet.process(Command(0x80, INS_WITHDRAW_REQ, 1, 0, body).encode())
    assert sw(answer) == SW.WRONG_DATA
    assert h.card(card).load().pending_withdrawal == b""


def test_the_bank_refuses_an_up_to_request_from_a_cash_card(home: tuple[Home, str]) -> None:
    """Made by hand (a cash card will not sign one): the card's own signature over it,
    yet the bank answers with its signed refusal, and no money moves."""
    h, card = home
    with h.card_client(card) as client, h.bank() as bank:
        client.select()
        client.verify_pin(PIN)
        real = WithdrawRequest.decode(client.withdraw_request(100, False, AuthKind.MAC))
        master = bank.card(card).master_key
        forged = replace(real, up_to=True)
        forged = replace(forged, auth=mac(master, WITHDRAW_REQUEST_TAG, forged.tbs()))
        before = bank.account(bank.card(card).float_account).balance
        with pytest.raises(Refused) as refused:
            bank.withdraw(forged.encode())
        assert refused.value.code == "bad_amount"
        assert bank.account(bank.card(card).float_account).balance == before


def test_get_data_0105_reads_a_payment_back_for_its_payee_only(home: tuple[Home, str]) -> None:
    """GET DATA 0105 asks for a payment by ser (or the latest to the reader), signed
    with the reader's merchant key: the card answers its payee with that payment of
    its last 8, and anyone else with nothing. Anonymous reads (no data) are 6982;
    another merchant, or a signature over another ser, 6982 or 6A88."""
    h, card = home
    with h.bank() as bank:
        h.open_merchant(bank, "Cafe")
    for merchant, amount in (("Shop", 100), ("Cafe", 200), ("Shop", 300)):
        h.pay(card, merchant, amount, PIN)
    shop, cafe = h.terminal_file("Shop"), h.terminal_file("Cafe")
    shop_key = SigningKey.from_private_bytes(shop.sid, shop.signing_key)
    cafe_key = SigningKey.from_private_bytes(cafe.sid, cafe.signing_key)
    applet = h.card(card).applet()
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK

    def challenge() -> bytes:
        answer = Response.parse(applet.process(Command(0x00, INS_CHALLENGE, 0, 0, le=8).encode()))
        assert answer.sw == SW.OK
        assert len(answer.data) == 8
        return answer.data

    def get(data: bytes) -> Response:
        raw = applet.process(Command(0x80, INS_GET_DATA, 0x01, 0x05, data).encode())
        return Response.parse(raw)

    def read(ser: int, cert: bytes, key: SigningKey) -> Response:
        return get(payment_read(card, ser, challenge(), cert, b"", key))

    def ser_of(answer: Response) -> int:
        assert answer.sw == SW.OK
        return payment_from_last(answer.data)[1].ser

    assert [ser_of(read(s, shop.merchant_cert, shop_key)) for s in (0, 2)] == [0, 2]
    assert ser_of(read(LATEST, shop.merchant_cert, shop_key)) == 2
    assert ser_of(read(LATEST, cafe.merchant_cert, cafe_key)) == 1
    assert read(1, shop.merchant_cert, shop_key).sw == SW.DATA_NOT_FOUND  # the Cafe's
    assert read(0, cafe.merchant_cert, cafe_key).sw == SW.DATA_NOT_FOUND  # the Shop's
    assert read(3, shop.merchant_cert, shop_key).sw == SW.DATA_NOT_FOUND  # none yet
    assert get(b"").sw == SW.SECURITY_STATUS  # anonymous
    # the Shop's certificate with the Cafe's key, and a signature over another ser
    assert read(0, shop.merchant_cert, cafe_key).sw == SW.SECURITY_STATUS
    other = payment_read(card, 2, challenge(), shop.merchant_cert, b"", shop_key)
    assert get((0).to_bytes(8, "big") + other[8:]).sw == SW.SECURITY_STATUS
    challenge()
    assert get(bytes(9)).sw == SW.WRONG_DATA  # malformed


def test_a_payment_read_is_good_once(home: tuple[Home, str]) -> None:
    """GET DATA 0105's signature covers the card's challenge: without a GET CHALLENGE
    first it is 6985, and a request captured on its way (answered or not) is refused
    when replayed, on a new challenge or none. (It carried no challenge, and a replayed
    request gave that merchant's payment to whoever sent it.)"""
    h, card = home
    h.pay(card, "Shop", 100, PIN)
    shop = h.terminal_file("Shop")
    shop_key = SigningKey.from_private_bytes(shop.sid, shop.signing_key)
    applet = h.card(card).applet()
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK

    def challenge() -> bytes:
        return Response.parse(
            applet.process(Command(0x00, INS_CHALLENGE, 0, 0, le=8).encode())
        ).data

    def get(data: bytes) -> int:
        return sw(applet.process(Command(0x80, INS_GET_DATA, 0x01, 0x05, data).encode()))

    unchallenged = payment_read(card, LATEST, bytes(8), shop.merchant_cert, b"", shop_key)
    assert get(unchallenged) == SW.CONDITIONS
    captured = payment_read(card, LATEST, challenge(), shop.merchant_cert, b"", shop_key)
    assert get(captured) == SW.OK
    assert get(captured) == SW.CONDITIONS  # its challenge is used up
    challenge()
    assert get(captured) == SW.SECURITY_STATUS  # a new challenge, not the one it signed
    # a refused request uses its challenge up too
    stale = payment_read(card, LATEST, challenge(), shop.merchant_cert, b"", shop_key)
    assert get(stale[:-1]) == SW.WRONG_DATA
    assert get(stale) == SW.CONDITIONS


def test_a_reader_with_a_self_made_merchant_cert_learns_nothing_of_the_log(
    home: tuple[Home, str],
) -> None:
    """A MERCHANT-CERT naming a real merchant but issued by no bank, with the reader's
    own key: 6982 whether or not the card paid that merchant. (The card used to check
    the certificate's issuer only for a payment that matched it: 6982 for a merchant
    it paid, 6A88 for another, which told where the card was used.)"""
    h, card = home
    with h.bank() as bank:
        h.open_merchant(bank, "Cafe")
    h.pay(card, "Shop", 100, PIN)
    stranger = SigningKey.generate("stranger")
    applet = h.card(card).applet()
    assert sw(applet.process(Command(0x00, INS_SELECT, 0x04, 0x00, AID).encode())) == SW.OK
    answers = []
    for name in ("Shop", "Cafe"):
        real = MerchantCert.decode(h.terminal_file(name).merchant_cert)
        forged = replace(real, public_key=stranger.verify_key.raw).signed(stranger).encode()
        nonce = Response.parse(applet.process(Command(0x00, INS_CHALLENGE, 0, 0, le=8).encode()))
        data = payment_read(card, LATEST, nonce.data, forged, b"", stranger)
        answers.append(sw(applet.process(Command(0x80, INS_GET_DATA, 0x01, 0x05, data).encode())))
    assert answers == [SW.SECURITY_STATUS, SW.SECURITY_STATUS]
