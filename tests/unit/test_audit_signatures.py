"""``bank audit --signatures``: every signature the bank relies on, verified again.

The audit of the books (``bank audit``) proves the rows agree with each other; an
insider who writes rows that agree (a payment's ``b`` altered, a spec rewritten with
its row and its legs, a card inserted with a CARD-CERT of their own making, a payment
moved to another card with the certificate it names) passes it. Each tampering test
builds a bank on the memory store, SQLite and PostgreSQL, edits its rows as someone
with write access to the database would (SQL on the SQL stores, the store's own tables
in memory), shows that the audit of the books still passes, and asks the signature
audit for the specific violation. A sound bank passes with a count for every payment,
certificate and card; the signature audit reads a page at a time (memory flat however
many payments) and verifies in the verification pool.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from jointpay.api.server import create_app
from jointpay.crypto.certs import (
    CardCert,
    CardMode,
    SigningKey,
    VerifyKey,
    issue_card_cert,
    mac,
)
from jointpay.crypto.group import ModpGroup, comb_powers
from jointpay.crypto.joint import Role, prove_possession
from jointpay.crypto.schnorr import SecretScalar, sign
from jointpay.domain.records import Leg, PaymentRecord
from jointpay.home import Home
from jointpay.protocol.deposit import BATCH_FORMAT
from jointpay.protocol.messages import WITHDRAW_REQUEST_TAG, AuthKind, WithdrawRequest
from jointpay.protocol.spec import PaymentSpec
from jointpay.service import audit as audit_module
from jointpay.service.bank import AuditReport, Bank, luhn_complete
from jointpay.service.errors import BadInput, Refused
from jointpay.storage.memory import MemoryUnitOfWork
from jointpay.storage.sql import SqlUnitOfWork
from jointpay.storage.tables import signed_text, u64_text
from pg import fresh_schema, schema_url
from worlds import PIN, Clock

SHOP = "Shop"


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The bank's database: the memory store, the home's SQLite file (None), or a
    fresh PostgreSQL schema."""
    if request.param == "memory":
        yield "memory:"
    elif request.param == "sqlite":
        yield None
    else:
        with fresh_schema() as schema:
            yield schema_url(schema)


def new_home(
    root: Path, url: str | None, suite: str = "secp256k1", group: str | None = None
) -> Home:
    h = Home(root, url, Clock())
    h.init_bank(suite=suite, group=group, currency="EUR", bank_id="test-bank")
    with h.bank() as bank:
        bank.open_account("alice", 50_000)
        bank.open_account("bob", 50_000)
        h.open_merchant(bank, SHOP)
    return h


@pytest.fixture
def world(url: str | None, tmp_path: Path) -> dict[str, Any]:
    """Alice's cash card pays the shop 10.00 and 5.00, Bob's 7.00; all deposited."""
    return paid(new_home(tmp_path, url))


def paid(h: Home) -> dict[str, Any]:
    with h.bank() as bank:
        a = h.issue_card(bank, holder="alice", pin=PIN, load=20_000, mode="cash", limit=0,
                         user_key="card")  # fmt: skip
        b = h.issue_card(bank, holder="bob", pin=PIN, load=20_000, mode="cash", limit=0,
                         user_key="card")  # fmt: skip
    h.pay(a.card_number, SHOP, 1_000, PIN)
    h.pay(a.card_number, SHOP, 500, PIN)
    h.pay(b.card_number, SHOP, 700, PIN)
    with h.bank() as bank:
        receipt = h.deposit(SHOP, bank)
        assert receipt["accepted"] == 3
        return {
            "home": h,
            "a": a.card_number,
            "b": b.card_number,
            "cert_a": a.cert.cert_id,
            "cert_b": b.cert.cert_id,
            "shop": bank.merchant(SHOP),
            "posting": f"deposit:{receipt['deposit_id']}",
        }


def audited(h: Home, *, signatures: bool = True, **kw: Any) -> AuditReport:
    with h.bank() as bank:
        report = bank.audit(signatures=signatures, **kw)
    assert report.ok == (not report.violations)
    return report


def books_only(h: Home) -> AuditReport:
    """The audit as it was before ``signatures`` (no keyword: it runs on that code too)."""
    with h.bank() as bank:
        return bank.audit()


# -- the insider: rows written straight into the database ------------------------------------
class Insider:
    """Edits rows as someone with write access to the bank's database: SQL on SQLite and
    PostgreSQL; on the memory store, its tables (the same rows, as records)."""

    def __init__(self, h: Home) -> None:
        self.h = h

    @contextmanager
    def tx(self) -> Iterator[SqlUnitOfWork | MemoryUnitOfWork]:
        with self.h.bank() as bank, bank.store.transaction() as tx:
            assert isinstance(tx, SqlUnitOfWork | MemoryUnitOfWork)
            yield tx

    def payment(self, card: str, ser: int, /, **values: Any) -> None:
        """Set columns of payment (card, ser); ``card_number`` and ``ser`` move it."""
        with self.tx() as tx:
            if isinstance(tx, SqlUnitOfWork):
                sets = ", ".join(f"{k} = :{k}" for k in values)
                binds = {k: u64_text(v) if k == "ser" else v for k, v in values.items()}
                tx.c.execute(
                    text(f"UPDATE payments SET {sets} WHERE card_number = :_n AND ser = :_s"),
                    {**binds, "_n": card, "_s": u64_text(ser)},
                )
            else:
                p: PaymentRecord = tx._d.payments.pop((card, ser))
                p = p._replace(**values)
                tx._d.payments[(p.card_number, p.ser)] = p

    def card(self, number: str, /, **values: Any) -> None:
        with self.tx() as tx:
            if isinstance(tx, SqlUnitOfWork):
                sets = ", ".join(f"{k} = :{k}" for k in values)
                binds = {k: signed_text(v) if k == "highest_ser" else v for k, v in values.items()}
                tx.c.execute(
                    text(f"UPDATE cards SET {sets} WHERE card_number = :_n"),
                    {**binds, "_n": number},
                )
            else:
                tx._d.cards[number] = replace(tx._d.cards[number], **values)

    def cert(self, cert_id: bytes, **values: Any) -> None:
        with self.tx() as tx:
            if isinstance(tx, SqlUnitOfWork):
                sets = ", ".join(f"{k} = :{k}" for k in values)
                tx.c.execute(
                    text(f"UPDATE certs SET {sets} WHERE cert_id = :_id"),
                    {**values, "_id": cert_id},
                )
            else:
                tx._d.certs[cert_id] = replace(tx._d.certs[cert_id], **values)

    def merchant_key(self, sid: str, key: bytes) -> None:
        with self.tx() as tx:
            if isinstance(tx, SqlUnitOfWork):
                tx.c.execute(
                    text("UPDATE merchants SET public_key = :k WHERE sid = :s"),
                    {"k": key, "s": sid},
                )
            else:
                tx._d.merchants[sid] = replace(tx._d.merchants[sid], public_key=key)

    def legs(
        self, transfer: str, deltas: dict[str, int], moved: tuple[str, str] | None = None
    ) -> None:
        """Add ``deltas`` to the legs of ``transfer`` on those accounts and to the
        accounts' balances (they must sum to zero); ``moved``: (from, to) moves the leg
        on one account to another, its amount taken off one balance and put on the other."""
        assert sum(deltas.values()) == 0
        with self.tx() as tx:
            if isinstance(tx, SqlUnitOfWork):
                for acc, d in deltas.items():
                    tx.c.execute(
                        text(
                            "UPDATE entries SET amount = amount + :d"
                            " WHERE transfer_id = :t AND account_id = :a"
                        ),
                        {"d": d, "t": transfer, "a": acc},
                    )
                    tx.c.execute(
                        text("UPDATE accounts SET balance = balance + :d WHERE id = :a"),
                        {"d": d, "a": acc},
                    )
                if moved is not None:
                    old, new = moved
                    [amount] = tx.c.execute(
                        text(
                            "SELECT amount FROM entries WHERE transfer_id = :t AND account_id = :a"
                        ),
                        {"t": transfer, "a": old},
                    ).scalars()
                    tx.c.execute(
                        text(
                            "UPDATE entries SET account_id = :new"
                            " WHERE transfer_id = :t AND account_id = :old"
                        ),
                        {"new": new, "old": old, "t": transfer},
                    )
                    for acc, d in ((old, -amount), (new, amount)):
                        tx.c.execute(
                            text("UPDATE accounts SET balance = balance + :d WHERE id = :a"),
                            {"d": d, "a": acc},
                        )
            else:
                t = tx._d.transfers[transfer]
                legs = [Leg(leg.account_id, leg.amount + deltas.get(leg.account_id, 0))
                        for leg in t.legs]  # fmt: skip
                changes = dict(deltas)
                if moved is not None:
                    old, new = moved
                    [amount] = [leg.amount for leg in legs if leg.account_id == old]
                    legs = [Leg(new if g.account_id == old else g.account_id, g.amount)
                            for g in legs]  # fmt: skip
                    changes[old] = changes.get(old, 0) - amount
                    changes[new] = changes.get(new, 0) + amount
                tx._d.transfers[transfer] = replace(t, legs=tuple(legs))
                for acc, d in changes.items():
                    a = tx._d.accounts[acc]
                    tx._d.accounts[acc] = replace(a, balance=a.balance + d)


def flipped(data: bytes) -> bytes:
    """``data`` with its last byte changed (a scalar stays below q: its top is untouched)."""
    return data[:-1] + bytes([data[-1] ^ 1])


def stored_payment(h: Home, card: str, ser: int) -> PaymentRecord:
    with h.bank() as bank, bank.store.transaction() as tx:
        p = tx.get_payment(card, ser)
    assert p is not None
    return p


# -- a sound bank ----------------------------------------------------------------------------
def test_a_sound_bank_passes_with_every_signature_counted(world: dict[str, Any]) -> None:
    h = world["home"]
    report = audited(h)
    assert report.violations == []
    with h.bank() as bank:
        key = bank.verify_key.raw.hex()
    assert report.figures["signatures"] == {
        "bank_key": key,
        "card_certs": 2,
        "cards": 2,
        "payments": 3,
        "merchant_certs": 1,
        "bank_cert": "none",
    }
    assert report.figures["payments"] == 3
    # without the option: the audit of the books, its figures as they were
    plain = books_only(h)
    assert plain.ok
    assert "signatures" not in plain.figures
    assert {k: v for k, v in report.figures.items() if k != "signatures"} == plain.figures


def test_renewed_certificates_and_the_bank_key_pinned(tmp_path: Path) -> None:
    """A card renewed at a withdrawal has two CARD-CERTs, both verified (the bank has one
    key for its life: every certificate it stored verifies under it); the key given by
    the auditor is the one verified under, and another key fails every certificate."""
    w = paid(new_home(tmp_path, "memory:"))
    h = w["home"]
    with h.bank() as bank:
        h.withdraw(w["a"], bank, pin=PIN, amount=100, renew=True)
        key = bank.verify_key.raw
    h.pay(w["a"], SHOP, 200, PIN)  # under the renewed certificate
    with h.bank() as bank:
        assert h.deposit(SHOP, bank)["accepted"] == 1
    report = audited(h, bank_key=key)
    assert report.violations == []
    assert report.figures["signatures"]["card_certs"] == 3
    assert report.figures["signatures"]["cards"] == 2
    assert report.figures["signatures"]["payments"] == 4
    other = SigningKey.generate("test-bank").verify_key
    found = audited(h, bank_key=other.raw).violations
    held = VerifyKey("test-bank", key).fingerprint
    assert found[0] == (
        f"the bank's key in the database is {held}, not the given {other.fingerprint}: "
        "every signature is verified under the given key"
    )
    assert sum("does not verify under the bank's key" in v for v in found) == 3
    assert sum("does not bear the bank's signature" in v for v in found) == 4
    assert audited(h, bank_key=other.raw).figures["signatures"]["payments"] == 0
    with h.bank() as bank, pytest.raises(BadInput) as e:
        bank.audit(bank_key=key)
    assert e.value.code == "bad_usage"
    with h.bank() as bank, pytest.raises(BadInput) as e:
        bank.audit(signatures=True, bank_key=key[:31])
    assert e.value.code == "bad_key"


# -- tampering that only the signatures show ---------------------------------------------------
@pytest.mark.parametrize("field", ["b", "r"])
def test_a_payment_whose_b_or_r_was_altered_is_caught(world: dict[str, Any], field: str) -> None:
    h, card = world["home"], world["a"]
    p = stored_payment(h, card, 1)
    Insider(h).payment(card, 1, **{field: flipped(getattr(p, field))})
    assert books_only(h).ok  # the rows agree with each other
    report = audited(h)
    assert report.violations == [
        f"payment {card}/1: its signature does not verify under its CARD-CERT "
        f"{world['cert_a'].hex()}"
    ]
    assert report.figures["signatures"]["payments"] == 2


def test_a_payment_whose_spec_was_rewritten_with_its_row_and_legs_is_caught(
    world: dict[str, Any],
) -> None:
    """10.00 made 11.00: the spec, the row's amount, the deposit's legs on the card's
    float and the merchant, and both balances, all moved by 1.00."""
    h, card = world["home"], world["a"]
    p = stored_payment(h, card, 0)
    spec = PaymentSpec.decode(p.spec)
    Insider(h).payment(card, 0, spec=spec._replace(amount=1_100).encode(), amount=1_100)
    Insider(h).legs(world["posting"], {f"card:{card}": -100, world["shop"].account_id: 100})
    assert books_only(h).ok
    assert audited(h).violations == [
        f"payment {card}/0: its signature does not verify under its CARD-CERT "
        f"{world['cert_a'].hex()}"
    ]


def test_a_payment_moved_to_another_card_with_its_certificate_is_caught(
    world: dict[str, Any],
) -> None:
    """Bob's payment (its row, its leg) moved to Alice's card as her ser 2, and Bob's
    CARD-CERT relabelled as hers, so that the payment's certificate is its card's."""
    h, a, b = world["home"], world["a"], world["b"]
    cert_b = world["cert_b"].hex()
    ins = Insider(h)
    ins.payment(b, 0, card_number=a, ser=2)
    ins.card(a, highest_ser=2)
    ins.card(b, highest_ser=-1)
    ins.legs(world["posting"], {}, moved=(f"card:{b}", f"card:{a}"))
    ins.cert(world["cert_b"], card_number=a)
    assert books_only(h).ok
    report = audited(h)
    assert report.violations == [
        f"CARD-CERT {cert_b} stored for card {a}: names card {b}",
        f"card {b}: its current CARD-CERT {cert_b} is not among the certificates stored for it",
        f"payment {a}/2: not verified: its CARD-CERT {cert_b} is card {b}'s",
    ]
    assert report.figures["signatures"] == {
        **report.figures["signatures"],
        "card_certs": 1,
        "cards": 0,
        "payments": 2,
    }


def card_of_keys(
    bank: Bank, holder: str, load: int, signer: SigningKey
) -> tuple[str, SecretScalar, CardCert]:
    """A card whose key shares are both the test's (as bench/deposit.py makes them),
    certified by ``signer``: its rows as the bank writes them, its float loaded from
    ``holder``'s account by a withdrawal authenticated by its MAC. With a key other than
    the bank's: a card inserted by an insider, who makes its CARD-CERT and its MACs."""
    group, now = bank.group, bank.clock()
    number = luhn_complete("4" + "".join(str(secrets.randbelow(10)) for _ in range(14)))
    s_u, s_c = SecretScalar(group.random_scalar()), SecretScalar(group.random_scalar())
    cert = issue_card_cert(
        signer,
        group=group,
        card_number=number,
        contributions=[
            prove_possession(group, s_u, number, Role.USER),
            prove_possession(group, s_c, number, Role.BANK),
        ],
        currency=bank.currency,
        mode=CardMode.CASH,
        not_before=now - 3600,
        not_after=now + bank.policy.cert_validity,  # as the bank's own: none renewed
    )
    master = secrets.token_bytes(32)
    bank._open_card_account(number, holder, CardMode.CASH, 0, cert, master, now)
    req = WithdrawRequest(bank.bank_id, number, cert.cert_id, 1, 0, load, False, AuthKind.MAC)
    request = replace(req, auth=mac(master, WITHDRAW_REQUEST_TAG, req.tbs())).encode()
    if signer.verify_key.raw == bank.verify_key.raw:
        bank.withdraw(request)
    else:  # the bank refuses to load a card whose stored CARD-CERT it did not sign: the
        # insider writes the withdrawal's rows as the bank's own code writes them
        with mock.patch.object(CardCert, "verify", return_value=None):
            bank.withdraw(request)
    return number, SecretScalar((s_u.reveal() + s_c.reveal()) % group.q), cert


def signed_batch(
    bank: Bank,
    sid: str,
    cards: list[tuple[str, SecretScalar, CardCert]],
    per_card: int,
    amount: int = 100,
) -> dict[str, Any]:
    """``per_card`` payments of ``amount`` by each card to merchant ``sid``, signed as
    a card signs them."""
    entries = []
    for number, secret, cert in cards:
        payments = []
        for ser in range(per_card):
            spec = PaymentSpec(
                bank.bank_id, sid, amount, bank.currency, bank.clock() - 60, ser, cert.cert_id
            ).encode()
            pc, _ = sign(bank.group, secret, cert.joint_key, ser, spec)
            payments.append(
                {"ser": ser, "spec": spec.hex(), "b": pc.b_bytes.hex(), "r": pc.r_bytes.hex()}
            )
        assert number == cert.card_number
        entries.append({"cert": cert.encode().hex(), "payments": payments})
    return {"format": BATCH_FORMAT, "bank_id": bank.bank_id, "sid": sid, "cards": entries}


def test_an_inserted_card_with_a_self_signed_certificate_is_caught(
    world: dict[str, Any],
) -> None:
    """The deposit reads back the CARD-CERTs the bank stored without checking the bank's
    signature again (it checked it when it stored them), so the inserted card's
    payments are accepted and the books agree; the signature audit names the
    certificate and each payment made under it."""
    h = world["home"]
    with h.bank() as bank:
        forger = SigningKey.generate(bank.bank_id)  # names the bank; not its key
        number, secret, cert = card_of_keys(bank, "bob", 1_000, forger)
        batch = signed_batch(bank, world["shop"].sid, [(number, secret, cert)], 2)
        assert h.deposit(SHOP, bank, batch)["accepted"] == 2
    assert books_only(h).ok
    report = audited(h)
    cid = cert.cert_id.hex()
    [cert_fault, *payments] = report.violations
    assert cert_fault.startswith(
        f"CARD-CERT {cid} stored for card {number}: does not verify under the bank's key "
    )
    assert cert_fault.endswith("(the bank's signature on the CARD-CERT is invalid)")
    assert payments == [
        f"payment {number}/{ser}: not verified: its CARD-CERT {cid} does not bear the "
        "bank's signature"
        for ser in (0, 1)
    ]
    assert report.figures["signatures"]["card_certs"] == 2
    assert report.figures["signatures"]["cards"] == 2
    assert report.figures["signatures"]["payments"] == 3


def test_the_bank_will_not_load_or_renew_a_card_whose_certificate_it_did_not_sign(
    world: dict[str, Any],
) -> None:
    """A withdrawal reads the card's stored CARD-CERT and may renew it: signed by the
    bank over a certificate an insider wrote into the database, the renewal would be
    genuine, and the payments made under it would pass even the signature audit. The
    bank checks the stored certificate's signature first and refuses ``bad_cert``;
    nothing moves. (It used to load the card and renew its certificate.)"""
    h = world["home"]
    with h.bank() as bank:
        forger = SigningKey.generate(bank.bank_id)
        number, _secret, cert = card_of_keys(bank, "bob", 1_000, forger)
        master = bank.card(number).master_key
        float_before = bank.account(f"card:{number}").balance
        for renew in (False, True):
            req = WithdrawRequest(
                bank.bank_id, number, cert.cert_id, 2, 1_000, 0 if renew else 500, renew,
                AuthKind.MAC,
            )  # fmt: skip
            request = replace(req, auth=mac(master, WITHDRAW_REQUEST_TAG, req.tbs())).encode()
            with pytest.raises(Refused) as refused:
                bank.withdraw(request)
            assert refused.value.code == "bad_cert"
            assert "does not bear this bank's signature" in refused.value.message
        assert bank.account(f"card:{number}").balance == float_before
        assert bank.card(number).seq == 1
        assert bank.card(number).current_cert_id == cert.cert_id


def test_a_card_record_whose_key_is_not_its_certificates_is_caught(world: dict[str, Any]) -> None:
    """The card's row says another joint key than the CARD-CERTs stored for it sign."""
    h, a = world["home"], world["a"]
    with h.bank() as bank:
        other = bank.group.public_key(bank.group.random_scalar()).encoded
    Insider(h).card(a, joint_key=other)
    assert books_only(h).ok
    report = audited(h)
    assert report.violations == [
        f"CARD-CERT {world['cert_a'].hex()} stored for card {a}: its joint key is not the one "
        "its card's record says"
    ]
    assert report.figures["signatures"]["cards"] == 1
    assert report.figures["signatures"]["payments"] == 3  # under the certificate's key


def test_a_merchant_key_swapped_is_caught(world: dict[str, Any]) -> None:
    """With the merchant's key replaced, whoever holds the new one signs its deposit
    sessions; its MERCHANT-CERT certifies the old."""
    h, sid = world["home"], world["shop"].sid
    Insider(h).merchant_key(sid, SigningKey.generate(sid).verify_key.raw)
    assert books_only(h).ok
    report = audited(h)
    assert report.violations == [
        f"merchant {sid}: its MERCHANT-CERT certifies another key than the one its "
        "deposits are checked with"
    ]
    assert report.figures["signatures"]["merchant_certs"] == 0


def test_a_certificate_whose_stored_key_powers_were_replaced_is_caught(tmp_path: Path) -> None:
    """modp (the secure group): a CARD-CERT's comb powers replaced by another key's. The
    deposit trusts them (they are the bank's own); the audit computes them again, names
    the certificate, and verifies its payments without them (all three verify)."""
    h = paid(new_home(tmp_path, None, "modp-2048-256", "jointpay-secure-2048-256"))
    with h["home"].bank() as bank:
        group = bank.group
        assert isinstance(group, ModpGroup)
        other = group.key_powers(group.public_key(group.random_scalar()))
    Insider(h["home"]).cert(h["cert_a"], key_powers=other)
    assert books_only(h["home"]).ok
    report = audited(h["home"])
    assert report.violations == [
        f"CARD-CERT {h['cert_a'].hex()} stored for card {h['a']}: its stored key powers are "
        "not its joint key's"
    ]
    assert report.figures["signatures"]["payments"] == 3
    Insider(h["home"]).cert(h["cert_a"], key_powers=None)
    assert audited(h["home"]).violations == []


def test_key_powers_stored_by_the_first_comb_pass_and_a_forged_blob_of_their_length_does_not(
    tmp_path: Path,
) -> None:
    """Migration 0005's first comb (commit 2b8d62a) stored three powers, Y^(2^64),
    Y^(2^128) and Y^(2^192); the comb of eight rows since takes seven, and declines the
    three (a deposit verifies such a certificate's payments by exponentiation, and the
    backfill fills only certificates with none). A bank upgraded from then is sound:
    its certificates' three powers are their keys' own. Three other residues are not."""
    h = paid(new_home(tmp_path, None, "modp-2048-256", "jointpay-secure-2048-256"))
    with h["home"].bank() as bank, bank.store.transaction() as tx:
        group = bank.group
        assert isinstance(group, ModpGroup)
        y = CardCert.decode(tx.get_cert(h["cert_a"]).encoded, bank.resolve_group).joint_key
        first = b"".join(
            group.encode_value(v) for v in comb_powers(y.native, group.params.p, 4, 64)[1:]
        )
        other = group.public_key(group.random_scalar()).native
        forged = b"".join(
            group.encode_value(v) for v in comb_powers(other, group.params.p, 4, 64)[1:]
        )
    Insider(h["home"]).cert(h["cert_a"], key_powers=first)
    h["home"].pay(h["a"], SHOP, 100, PIN)
    with h["home"].bank() as bank:
        assert h["home"].deposit(SHOP, bank)["accepted"] == 1
    report = audited(h["home"])
    assert report.violations == []
    assert report.figures["signatures"]["payments"] == 4
    Insider(h["home"]).cert(h["cert_a"], key_powers=forged)
    assert audited(h["home"]).violations == [
        f"CARD-CERT {h['cert_a'].hex()} stored for card {h['a']}: its stored key powers are "
        "not its joint key's"
    ]


def test_a_member_banks_certificate_and_its_cards_paid_at_another_bank(tmp_path: Path) -> None:
    """The scheme: bank-b's card pays at bank-a's merchant, cleared through the house.
    bank-b verifies the payment its card made (kept with its b and r); both verify
    their BANK-CERTs. bank-a keeps only the spec of another bank's card's payment: it
    has nothing of it to verify."""
    from scheme_world import scheme

    w = scheme(tmp_path)
    w.ha.pay(w.card, "Shop", 1_000, PIN)
    assert w.ha.deposit("Shop", w.a)["accepted"] == 1
    ra, rb = w.a.audit(signatures=True), w.b.audit(signatures=True)
    assert ra.violations == []
    assert rb.violations == []
    assert ra.figures["signatures"]["bank_cert"] == "verified"
    assert rb.figures["signatures"]["bank_cert"] == "verified"
    assert ra.figures["signatures"]["payments"] == 0
    assert rb.figures["signatures"]["payments"] == 1
    assert rb.figures["signatures"]["cards"] == 1


# -- a page at a time, in the pool -------------------------------------------------------------
def bulk(root: Path, cards: int, per_card: int, url: str | None = None) -> Home:
    """A bank (on SQLite by default) with ``cards`` cards of ``per_card`` payments each,
    deposited in one batch."""
    h = new_home(root, url)
    with h.bank() as bank:
        made = [card_of_keys(bank, "alice", per_card, bank.signing_key) for _ in range(cards)]
        batch = signed_batch(bank, bank.merchant(SHOP).sid, made, per_card, amount=1)
        assert h.deposit(SHOP, bank, batch)["accepted"] == cards * per_card
    return h


def test_pages_in_the_pool_each_payment_once(
    url: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pages of 16 payments and 2 certificates' worth of cache, verified by the pool's
    worker processes: every payment counted once, and one altered on a page's edge
    named alone."""
    monkeypatch.setattr(audit_module, "SIGNATURE_PAGE", 16)
    monkeypatch.setattr(audit_module, "CERT_CACHE", 2)
    h = bulk(tmp_path, cards=5, per_card=19, url=url)  # 95 payments: pages end mid-card
    with h.bank() as bank:
        bank.verifier.min_batch = 1  # every chunk to the workers
        assert bank.verifier.workers >= 1
        report = bank.audit(signatures=True)
        assert bank.verifier._pool is not None  # they did the work
        with bank.store.transaction() as tx:
            cards = sorted(c.card_number for c in tx.list_cards())
    assert report.violations == []
    assert report.figures["signatures"]["payments"] == 95
    assert report.figures["signatures"]["card_certs"] == 5
    assert report.figures["signatures"]["cards"] == 5
    # the 16th payment in (card, ser) order: the last of the first page
    card, ser = cards[0], 15
    p = stored_payment(h, card, ser)
    Insider(h).payment(card, ser, r=flipped(p.r))
    with h.bank() as bank:
        bank.verifier.min_batch = 1
        report = bank.audit(signatures=True)
    assert [v.split(":")[0] for v in report.violations] == [f"payment {card}/{ser}"]
    assert report.figures["signatures"]["payments"] == 94


def peak_of_signature_audit(h: Home) -> int:
    with h.bank() as bank:
        bank.verifier.workers = 0  # in this process, where tracemalloc sees it
        bank.audit(signatures=True)  # warm: compiled queries, group tables
        tracemalloc.start()
        try:
            report = bank.audit(signatures=True)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert report.ok, report.violations
    return peak


def test_memory_stays_flat_however_many_payments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Four times the payments, the same peak (within 64 KiB); the same audit reading
    each bank's payments in one page grows by over a megabyte (the test sees it)."""
    small = bulk(tmp_path / "small", cards=4, per_card=100)
    large = bulk(tmp_path / "large", cards=4, per_card=400)
    monkeypatch.setattr(audit_module, "SIGNATURE_PAGE", 50)
    paged = peak_of_signature_audit(small), peak_of_signature_audit(large)
    assert paged[1] - paged[0] < 64 * 1024, paged
    monkeypatch.setattr(audit_module, "SIGNATURE_PAGE", 10_000)
    whole = peak_of_signature_audit(small), peak_of_signature_audit(large)
    assert whole[1] - whole[0] > 1024 * 1024, whole


# -- the command line and the HTTP API ---------------------------------------------------------
def jp(home: Path, *args: str, code: int) -> tuple[dict[str, Any], str]:
    """``jointpay --home HOME bank audit ARGS`` in its own process (the home's SQLite
    bank); its exit status checked; its ``--json`` answer, and what it printed.
    (tests/cli_run.py's ``jp`` takes every exit 1 for an error; the audit's carries
    its report.)"""
    env = {k: v for k, v in os.environ.items() if k not in ("JOINTPAY_HOME", "JOINTPAY_DB")}
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), "bank", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**env, "COLUMNS": "200"},
    )
    assert run.returncode == code, (run.stdout, run.stderr)
    return (json.loads(run.stdout) if "--json" in args else {}), run.stdout


def test_the_command_line(tmp_path: Path) -> None:
    w = paid(new_home(tmp_path, None))
    h, a = w["home"], w["a"]
    out, _ = jp(tmp_path, "--signatures", "--json", code=0)
    assert out["ok"] is True
    assert out["signatures"]["payments"] == 3
    assert out["signatures"]["card_certs"] == 2
    _, human = jp(tmp_path, "--signatures", code=0)
    assert "The books balance." in human
    assert "signatures: bank_key " in human
    assert "payments 3" in human
    key = out["signatures"]["bank_key"]
    other = SigningKey.generate("x").verify_key.raw.hex()
    out, _ = jp(tmp_path, "--signatures", "--bank-key", other, "--json", code=1)
    assert out["violations"][0].startswith("the bank's key in the database is ")
    out, _ = jp(tmp_path, "--bank-key", key, "--json", code=2)
    assert out["error"] == "bad_usage"
    p = stored_payment(h, a, 0)
    Insider(h).payment(a, 0, b=flipped(p.b))
    out, _ = jp(tmp_path, "--json", code=0)  # the books agree
    assert out["ok"] is True
    assert "signatures" not in out
    out, _ = jp(tmp_path, "--signatures", "--json", code=1)
    assert out["violations"] == [
        f"payment {a}/0: its signature does not verify under its CARD-CERT {w['cert_a'].hex()}"
    ]


def test_the_http_api(tmp_path: Path) -> None:
    w = paid(new_home(tmp_path, "memory:"))
    token = "t" * 32
    auth = {"Authorization": f"Bearer {token}"}
    with w["home"].bank() as bank:
        client = TestClient(create_app(lambda: bank, admin_token=token))
        plain = client.get("/v1/admin/audit", headers=auth)
        assert plain.status_code == 200
        assert "signatures" not in plain.json()
        signed = client.get("/v1/admin/audit", params={"signatures": "true"}, headers=auth)
        assert signed.status_code == 200
        body = signed.json()
        assert body["ok"] is True
        assert body["signatures"]["payments"] == 3
        key = body["signatures"]["bank_key"]
        pinned = client.get(
            "/v1/admin/audit", params={"signatures": "true", "bank_key": key}, headers=auth
        )
        assert pinned.json()["ok"] is True
        alone = client.get("/v1/admin/audit", params={"bank_key": key}, headers=auth)
        assert (alone.status_code, alone.json()["code"]) == (400, "bad_usage")
        bad = client.get(
            "/v1/admin/audit", params={"signatures": "true", "bank_key": "00"}, headers=auth
        )
        assert (bad.status_code, bad.json()["code"]) == (400, "malformed")
