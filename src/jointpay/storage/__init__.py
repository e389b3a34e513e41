"""The bank's storage: the :class:`Store` seam and its three implementations."""

from __future__ import annotations

from pathlib import Path

from jointpay.storage.base import (
    Conflict,
    InsufficientFunds,
    NotFound,
    StorageError,
    Store,
    UnitOfWork,
)


def open_store(url: str | None, *, home: Path | None = None, schema: str | None = None) -> Store:
    """``None`` → SQLite ``home/bank.db``; ``memory:``; ``sqlite:///...``; ``postgresql://...``."""
    if url is None:
        if home is None:
            raise ValueError("a home folder or a database URL is needed")
        url = f"sqlite:///{home / 'bank.db'}"
    if url == "memory:":
        from jointpay.storage.memory import MemoryStore

        return MemoryStore()
    if url.startswith(("sqlite:", "postgresql:", "postgres:", "postgresql+psycopg:")):
        from jointpay.storage.sql import SqlStore

        return SqlStore(url, schema=schema)
    raise ValueError(
        f"unsupported database URL {url.split(':', 1)[0]}:… "
        "(use sqlite:///PATH, postgresql://... or memory:)"
    )


__all__ = [
    "Conflict",
    "InsufficientFunds",
    "NotFound",
    "StorageError",
    "Store",
    "UnitOfWork",
    "open_store",
]
