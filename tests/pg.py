"""PostgreSQL for tests: a fresh schema per test, dropped afterwards.

The server is ``JOINTPAY_TEST_PG`` (default the local one). If it cannot be reached
the tests fail; they are skipped only where ``JOINTPAY_ALLOW_NO_PG=1`` says so
(never in CI).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest


def pg_url() -> str:
    return os.environ.get("JOINTPAY_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def require_pg() -> None:
    try:
        with psycopg.connect(pg_url(), connect_timeout=3) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        if os.environ.get("JOINTPAY_ALLOW_NO_PG") == "1" and os.environ.get("CI") != "true":
            pytest.skip(f"PostgreSQL unreachable and JOINTPAY_ALLOW_NO_PG=1: {exc}")
        pytest.fail(
            f"PostgreSQL at {pg_url()} is unreachable: {exc}. Start it with "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
        )


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new empty schema; yields its name and drops it (CASCADE) afterwards."""
    require_pg()
    name = f"jp_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url(), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(pg_url(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def schema_url(schema: str) -> str:
    sep = "&" if "?" in pg_url() else "?"
    return f"{pg_url()}{sep}options=-csearch_path%3D{schema}"


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new empty database on the test server; yields its URL, drops it afterwards."""
    require_pg()
    name = f"jp_db_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_url(), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, rest = pg_url().rpartition("/")
    query = rest.partition("?")[2]
    try:
        yield f"{base}/{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(pg_url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
