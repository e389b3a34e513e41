"""A running server takes up what the CLI changes in the bank's settings meanwhile.

``bank policy --set`` and ``bank join-scheme`` write the bank's config from another
process; the server loaded it once, at its first request, and went on with the old
policy and no scheme until restarted (a newcomer's walk through docs/variants.md
found `GET /v1/scheme` still empty after joining)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jointpay.api.server import create_app
from jointpay.crypto.certs import BankRole, SigningKey, issue_bank_cert
from jointpay.home import Home
from jointpay.service import bank as bank_module
from jointpay.service.bank import Bank
from jointpay.service.policy import DAY
from worlds import Clock


def test_the_server_takes_up_a_policy_and_a_scheme_set_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock()
    h = Home(tmp_path, None, clock)
    h.init_bank(suite="secp256k1", group=None, currency="EUR", bank_id="bank-a")
    served = Bank(h.store(), clock=clock)
    client = TestClient(create_app(lambda: served, admin_token="t" * 32))
    assert client.get("/v1/scheme").json().get("scheme_id") is None
    # the CLI, another process: its own Bank on the same database
    with h.bank() as cli:
        cli.set_policy(payment_fee=7)
        root = SigningKey.generate("test-scheme")
        cert = issue_bank_cert(
            root,
            bank_id="bank-a",
            public_key=cli.verify_key.raw,
            role=BankRole.BANK,
            not_before=clock() - 3600,
            not_after=clock() + 365 * DAY,
        ).encode()
        cli.interbank.join("test-scheme", root.verify_key.raw, cert)
    assert served.policy.payment_fee == 0
    monkeypatch.setattr(bank_module, "CONFIG_MAX_AGE", 0.0)  # no wait for the test
    assert client.get("/v1/scheme").json()["scheme_id"] == "test-scheme"
    assert served.policy.payment_fee == 7
