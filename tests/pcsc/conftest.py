"""Fixtures for the PC/SC end-to-end tests: pcscd for the session, a fresh home each."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pcsc_env import make_world, pcscd


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.pcsc)


@pytest.fixture(scope="session")
def pcsc_daemon() -> Iterator[None]:
    with pcscd():
        yield


@pytest.fixture
def world(pcsc_daemon: None, tmp_path: Path) -> dict[str, Any]:
    return make_world(tmp_path)
