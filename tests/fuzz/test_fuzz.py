"""Bounded atheris runs of the fuzz targets in fuzz/ (a longer campaign: run them by hand).

Each target runs in its own process from a seed corpus of an honest payment; any
exception other than the documented ones, and any broken invariant (money moving
without a valid payment, a taken payment that does not verify), makes libFuzzer stop
with a crash artifact and a non-zero exit.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[2] / "fuzz"
RUNS = int(os.environ.get("JOINTPAY_FUZZ_RUNS", "30000"))


def run_target(script: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    p = subprocess.run(
        [
            sys.executable,
            str(FUZZ / script),
            f"-runs={RUNS}",
            "-max_len=8192",
            "-seed=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        env={**os.environ, "PYTHONPATH": str(FUZZ), **(env or {})},
    )
    assert p.returncode == 0, p.stderr[-4000:]
    assert f"Done {RUNS} runs" in p.stderr
    assert not list(tmp_path.glob("crash-*"))


@pytest.mark.parametrize("target", ["fuzz_card.py", "fuzz_terminal.py"])
def test_bounded_fuzz_run(target: str, tmp_path: Path) -> None:
    run_target(target, tmp_path)


PARSERS = [
    "apdu",
    "card_cert",
    "merchant_cert",
    "bank_cert",
    "spec",
    "payment_cert",
    "messages",
    "batch",
    "deposit",
    "http_bodies",
]


@pytest.mark.parametrize("target", PARSERS)
def test_bounded_parser_fuzz_run(target: str, tmp_path: Path) -> None:
    """Every parser of outside input, from its checked-in corpus (fuzz/corpus/NAME)."""
    assert list((FUZZ / "corpus" / target).glob("seed-*")), "the seed corpus is missing"
    run_target("fuzz_parsers.py", tmp_path, {"JOINTPAY_FUZZ_TARGET": target})
