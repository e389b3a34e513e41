"""A scheme in one process: banks ``bank-a`` (acquirer, merchant Shop) and ``bank-b``
(issuer, a cash card of holder bea), clearing house ``ch-1``, on SQLite files, wired
to each other by direct calls instead of HTTP (tests/e2e/test_clearing.py runs the
same over real servers). A test can then reach into any hop."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jointpay.crypto.certs import BankRole, SigningKey, issue_bank_cert
from jointpay.home import Home
from jointpay.service.bank import Bank
from jointpay.service.clearing import ClearingHouse
from jointpay.service.policy import DAY, Policy
from jointpay.storage import open_store
from worlds import PIN, Clock


class Member:
    """A bank as the house reaches it (what the house's HTTP member port does)."""

    def __init__(self, bank: Bank) -> None:
        self.bank = bank

    def interbank_deposit(self, message: object) -> dict[str, Any]:
        return self.bank.interbank_deposit(message)

    def interbank_relayed(self, message: object) -> dict[str, Any]:
        return self.bank.interbank.relayed(message)

    def interbank_settlement(self, message: object) -> dict[str, Any]:
        return self.bank.interbank_settlement(message)

    def interbank_position(self, ch_id: str) -> dict[str, Any]:
        return self.bank.interbank_position(ch_id)

    def interbank_online_check(self, message: object) -> dict[str, Any]:
        return self.bank.interbank_online_check(message)

    def hotlist(self, since: int = 0) -> Any:
        return self.bank.hotlist(since)


class ViaHouse:
    """A merchant's deposit port at the clearing house (``deposit --clearing``)."""

    def __init__(self, house: ClearingHouse, bank_id: str, merchant_cert: bytes) -> None:
        self.house = house
        self.bank_id = bank_id
        self.merchant_cert = merchant_cert

    def deposit(self, message: dict[str, Any]) -> dict[str, Any]:
        return self.house.relay({"deposit": message, "merchant_cert": self.merchant_cert.hex()})


@dataclass
class Scheme:
    root: Path
    clock: Clock
    ha: Home
    hb: Home
    a: Bank
    b: Bank
    house: ClearingHouse
    card: str
    via_house: ViaHouse
    members: dict[str, Member]
    root_key: SigningKey
    """The scheme's root (to certify another member)."""

    def audits_ok(self) -> bool:
        return self.a.audit().ok and self.b.audit().ok and bool(self.house.audit()["ok"])


def scheme(
    root: Path,
    policy_a: Policy | None = None,
    policy_b: Policy | None = None,
    *,
    house_url: str | None = None,
) -> Scheme:
    """The world; ``house_url``: the house's database (a SQLite file by default)."""
    clock = Clock()
    ha = Home(root, f"sqlite:///{root}/a.db", clock)
    hb = Home(root, f"sqlite:///{root}/b.db", clock)
    ha.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-a", policy=policy_a)
    hb.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-b", policy=policy_b)
    a, b = Bank(ha.store(), clock=clock), Bank(hb.store(), clock=clock)
    root_key = SigningKey.generate("test-scheme")

    def cert(bank_id: str, public: bytes, role: BankRole = BankRole.BANK) -> bytes:
        return issue_bank_cert(
            root_key,
            bank_id=bank_id,
            public_key=public,
            role=role,
            not_before=clock() - 3600,
            not_after=clock() + 5 * 365 * DAY,
        ).encode()

    cert_a, cert_b = cert("bank-a", a.verify_key.raw), cert("bank-b", b.verify_key.raw)
    a.interbank.join("test-scheme", root_key.verify_key.raw, cert_a)
    b.interbank.join("test-scheme", root_key.verify_key.raw, cert_b)
    members = {"bank-a": Member(a), "bank-b": Member(b)}
    house_store = open_store(house_url or f"sqlite:///{root}/ch.db")
    house = ClearingHouse.create(house_store, "ch-1", "EUR", clock=clock)
    house.connect = lambda bank_id, url: members[bank_id]  # type: ignore[method-assign,assignment,return-value]
    house.join(
        "test-scheme",
        root_key.verify_key.raw,
        cert("ch-1", house.verify_key.raw, BankRole.CLEARING),
    )
    house.add_member(cert_a.hex(), "a")
    house.add_member(cert_b.hex(), "b")
    for bank in (a, b):
        bank.interbank.connect = lambda link: house  # type: ignore[assignment,return-value]
        bank.interbank.add_clearing(house, "ch")  # type: ignore[arg-type]
    b.open_account("bea", 50_000)
    card = hb.issue_card(
        b, holder="bea", pin=PIN, load=20_000, mode="cash", limit=0, user_key="card"
    ).card_number
    tf = ha.open_merchant(a, "Shop")
    ha.sync_hotlist("Shop", a)  # the terminal learns the scheme's member banks
    via = ViaHouse(house, "bank-a", tf.merchant_cert)
    return Scheme(root, clock, ha, hb, a, b, house, card, via, members, root_key)
