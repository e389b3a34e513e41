"""A `jointpay bank serve` process for the tests: started, awaited, stopped."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jointpay.api.client import wait_until_serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bank_server(
    home: Path,
    *,
    db_url: str | None = None,
    port: int | None = None,
    kind: str = "bank",
    args: Sequence[str] = (),
    log: Path | None = None,
) -> Iterator[str]:
    """Serve the bank (or, with ``kind="clearing"``, the clearing house) of ``home``
    (on ``db_url`` if given, with more ``args`` to ``serve``, its standard error into
    the file ``log`` if given); yield its base URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if db_url is not None:
        env["JOINTPAY_DB"] = db_url
    port = port or free_port()
    with contextlib.ExitStack() as files:
        err_to = subprocess.PIPE if log is None else files.enter_context(log.open("wb"))
        yield from _served(home, port, kind, args, env, err_to, log)


def _served(
    home: Path,
    port: int,
    kind: str,
    args: Sequence[str],
    env: dict[str, str],
    err_to: Any,
    log: Path | None,
) -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jointpay",
            "--home",
            str(home),
            kind,
            "serve",
            "--port",
            str(port),
            *args,
        ],
        stdout=subprocess.DEVNULL,
        stderr=err_to,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        up = wait_until_serving(url, alive=lambda: proc.poll() is None, timeout=30)
        if not up and proc.poll() is None:
            raise AssertionError("the bank server did not answer in time")
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else log.read_bytes() if log else b""
            raise AssertionError(f"the bank server exited: {err.decode(errors='replace')}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def schemathesis_run(openapi_url: str, token: str, report_dir: Path) -> str:
    """schemathesis over a served OpenAPI description with every check but
    ``positive_data_acceptance`` (a well-shaped deposit still carries a signature that
    does not verify); fixed seed, ``JOINTPAY_SCHEMATHESIS_EXAMPLES`` (20) examples an
    operation and phase. Asserts it passed; returns its summary."""
    st = Path(sys.executable).with_name("schemathesis")
    p = subprocess.run(
        [
            str(st),
            "run",
            openapi_url,
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
            "--max-examples",
            os.environ.get("JOINTPAY_SCHEMATHESIS_EXAMPLES", "20"),
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {token}",
            "--report-dir",
            str(report_dir),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stdout[-6000:] + p.stderr[-2000:]
    assert " passed" in p.stdout
    return p.stdout[-1500:]
