"""Shared test setup: make ``tests`` importable as a package root (tests/pg.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
