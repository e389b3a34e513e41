"""``bytes`` and ``None`` bound to SQLite as they are, without a failed adapter lookup.

Python's ``sqlite3`` binds ``int``, ``float``, ``str`` and ``bytearray`` parameters
directly, but any other parameter, ``bytes`` and ``None`` among them, first goes
through its adapter protocol: with no adapter registered for its type, it asks the
protocol type for ``__adapt__``, which raises an ``AttributeError`` whose message is
formatted and then dropped. A payment row carries four byte strings (cert id, spec,
``b``, ``r``), and a terminal's record of a receipt one ``None`` per accepted payment
(its reason); counted by callgrind that lookup was 1,500 instructions a parameter: 60 M
of the 570 M of inserting 10,000 payment rows, the work of the thread that writes a
deposit's rows.

Registering an identity adapter for each makes the lookup succeed: ``bytes(b)``
returns ``b`` unchanged (an exact ``bytes`` is returned as is, without a copy), and
``None`` stays ``None``, so SQLite binds the same blob or NULL as before. The registry
is the ``sqlite3`` module's, for the whole process; these entries change no value
anyone binds, and only exact ``bytes`` and ``None`` use them (adapters are looked up by
exact type).
"""

from __future__ import annotations

import sqlite3


def _same(value: None) -> None:
    return value


def register_identity_adapters() -> None:
    """Register the identity adapters for ``bytes`` and ``None`` (idempotent)."""
    sqlite3.register_adapter(bytes, bytes)
    sqlite3.register_adapter(type(None), _same)
