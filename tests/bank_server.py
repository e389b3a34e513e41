"""A `jointpay bank serve` process for the tests: started, awaited, stopped."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def bank_server(
    home: Path, *, db_url: str | None = None, port: int | None = None, kind: str = "bank"
) -> Iterator[str]:
    """Serve the bank (or, with ``kind="clearing"``, the clearing house) of ``home``
    (on ``db_url`` if given); yield its base URL."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if db_url is not None:
        env["JOINTPAY_DB"] = db_url
    port = port or free_port()
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
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if proc.poll() is not None:
                    break
                time.sleep(0.05)
        else:
            raise AssertionError("the bank server did not answer in time")
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else b""
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
