"""Running the ``jointpay`` command line as a user does, for the end-to-end tests: a
real process, its exit status checked, its ``--json`` answer parsed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def _env(db: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("JOINTPAY_HOME", "JOINTPAY_DB")}
    if db is not None:
        env["JOINTPAY_DB"] = db
    return env


def jp(
    home: Path, *args: str, stdin: str = "", code: int | None = 0, db: str | None = None
) -> dict[str, Any]:
    """Run ``jointpay --home HOME ... --json`` (on the bank database ``db``, else the
    home's SQLite); check the exit status (unless ``code`` is None) and that stdout is
    exactly one JSON object, an error's being ``{"error", "message"}`` with a line on
    stderr, and a deposit's exit 1 meaning some payment was rejected; return it."""
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), *args, "--json"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=_env(db),
    )
    if code is not None:
        assert run.returncode == code, (args, run.returncode, run.stdout, run.stderr)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, run.stdout  # exactly one JSON object on stdout
    out = json.loads(lines[0])
    assert isinstance(out, dict)
    # exit 1 with an answer: a deposit with a rejection, a declined merchant check, an
    # audit that found something
    answered = {"results", "approved", "ok"} & out.keys()
    if run.returncode != 0 and not answered:
        assert set(out) == {"error", "message"}
        assert out["message"]
        assert run.stderr.strip()
    if "results" in out:  # a deposit: exit 1 exactly when some payment was rejected
        assert (run.returncode == 1) == (out["rejected"] > 0)
    return out


def jp_text(home: Path, *args: str, stdin: str = "", db: str | None = None) -> str:
    """What a successful command prints for a person (no ``--json``, 200 columns)."""
    run = subprocess.run(
        [sys.executable, "-m", "jointpay", "--home", str(home), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={**_env(db), "COLUMNS": "200"},
    )
    return run.stdout
