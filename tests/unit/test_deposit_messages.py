"""Regressions the fuzzers found in the deposit messages' parsers."""

from __future__ import annotations

from pathlib import Path

import pytest

from jointpay.protocol.deposit import BatchError, loads_strict, parse_batch, parse_deposit

CORPUS = Path(__file__).resolve().parents[2] / "fuzz" / "corpus"


def test_a_batch_naming_a_malformed_bank_is_a_batch_error() -> None:
    """fuzz_parsers.py batch, seed 1: check_ident's DecodeError escaped parse_batch, so
    a clearing house (which expects BatchError) answered such a batch with a 500."""
    raw = loads_strict((CORPUS / "batch" / "regress-bad-bank-id").read_bytes())
    with pytest.raises(BatchError, match="bank id"):
        parse_batch(raw)


@pytest.mark.parametrize("field", ["bank_id", "sid"])
def test_a_deposit_with_a_malformed_identifier_is_a_batch_error(field: str) -> None:
    batch = {"format": "jointpay-batch/1", "bank_id": "b", "sid": "SP1", "cards": []}
    deposit = {
        "format": "jointpay-deposit/1",
        "bank_id": "b",
        "sid": "SP1",
        "seq": 1,
        "time": 1,
        "batch": batch,
        "signature": "00",
    }
    with pytest.raises(BatchError):
        parse_deposit({**deposit, field: "(bad"})
    with pytest.raises(BatchError):
        parse_batch({**batch, field: " bad"})


@pytest.mark.parametrize(
    "text",
    [b'{"seq": ' + b"1" * 4301 + b"}", b'{"seq": 1.5}', b'{"a": 1, "a": 2}', b"[" * 100_000],
)
def test_what_json_cannot_hold_as_the_protocol_reads_it_is_a_batch_error(text: bytes) -> None:
    with pytest.raises(BatchError):
        loads_strict(text)
