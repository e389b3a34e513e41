"""Files that hold secrets: created readable by their owner only."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def create_private(path: Path) -> None:
    """Create ``path`` empty with mode 0600 unless it exists, whatever the umask.

    A bank's SQLite database holds its signing key and every card's master key, and
    a terminal's its payments: SQLite creates a missing database file with the
    process's umask (0644 by default), and its ``-wal`` and ``-shm`` files with the
    database file's mode. Made here first, all three are the owner's only."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
