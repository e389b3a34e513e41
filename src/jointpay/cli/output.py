"""How every command answers: one JSON object with ``--json``, Rich text without.

Exit status (CONTRACT section 4): 0 done; 1 refused by the protocol; 2 bad usage or
bad input. Errors go to stderr, and with ``--json`` also as
``{"error": code, "message": ...}`` on stdout.

Human output never parses Rich markup: the consoles are made with ``markup=False``
(and no emoji codes), so a holder or merchant called ``[red]Evil`` or ``bob[/]``
prints as typed. Styles come only from :func:`styled`, whose plain parts are
literal text: there is nothing to escape, and nothing to forget.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.text import Text

from jointpay.adapters.pcsc import NoCard, PcscError, UnknownReader
from jointpay.crypto.errors import CryptoError
from jointpay.domain.money import AmountError
from jointpay.protocol.deposit import BatchError
from jointpay.protocol.terminal import CardError, PaymentDeclined
from jointpay.service.errors import BadInput, Refused
from jointpay.storage.base import BalanceOutOfRange, StorageError

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2

DEBUG_ENV = "JOINTPAY_DEBUG"
"""Set to 1 to see the traceback of an unexpected error instead of ``internal``."""


class _ErrConsole(Console):
    """Standard error: a reader that went away loses these lines, and nothing else
    (Rich's default would point stdout at /dev/null and exit 1)."""

    def on_broken_pipe(self) -> None:
        pass


def console(*, stderr: bool = False) -> Console:
    """A console that prints text as given: no markup, no emoji codes, no
    highlighting, and long lines (card numbers, keys) never hard-wrapped."""
    kind = _ErrConsole if stderr else Console
    return kind(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)


def styled(*parts: str | tuple[str, str]) -> Text:
    """One line of human output: plain strings and ``(text, style)`` pairs, all
    literal (``styled("Card ", (number, "bold"), " issued.")``)."""
    return Text.assemble(*parts)


def plural(n: int, one: str, many: str | None = None) -> str:
    """``1 try``, ``2 tries``, ``0 entries``."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def when(unix: int) -> str:
    """A Unix time for people: ``2026-12-01 10:22 UTC`` (seconds shown only when
    there are any)."""
    t = datetime.fromtimestamp(unix, tz=UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC" if t.second else "%Y-%m-%d %H:%M UTC")


def readable(value: Any) -> str:
    """A figure for people: a mapping as ``key value, ...``, a list joined by
    commas, nothing as ``none``; never a Python or JSON repr."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {readable(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list | tuple):
        return ", ".join(readable(v) for v in value) or "none"
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass
class Output:
    as_json: bool
    console: Console
    err: Console

    @classmethod
    def make(cls, as_json: bool) -> Output:
        return cls(as_json, console(), console(stderr=True))

    def done(self, obj: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        elif human is not None:
            human(self.console)
        else:
            for k, v in obj.items():
                self.console.print(styled((k, "bold"), f": {readable(v)}"))

    def fail(self, code: str, message: str, status: int) -> NoReturn:
        """The error, on stdout first with ``--json`` (a broken stderr cannot lose
        it), then on stderr."""
        if self.as_json:
            sys.stdout.write(json.dumps({"error": code, "message": message}) + "\n")
            sys.stdout.flush()
        say_error(code, message, self.err)
        raise typer.Exit(status)


def say_error(code: str, message: str, err: Console | None = None) -> None:
    """``error (code): message`` on stderr; a stderr that cannot be written loses only
    this line."""
    with contextlib.suppress(OSError, ValueError):
        (err or console(stderr=True)).print(styled(("error", "red"), f" ({code}): {message}"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def known_failure(exc: Exception) -> tuple[str, str, int] | None:
    """Errors of libraries that may not be loaded (the import costs time): their
    modules are looked up, not imported."""
    sa = sys.modules.get("sqlalchemy.exc")
    if sa is not None and isinstance(exc, sa.OperationalError | sa.InterfaceError):
        cause = exc.orig if exc.orig is not None else exc
        return (
            "database_unreachable",
            f"the database cannot be used: {_first_line(cause)}",
            EXIT_REFUSED,
        )
    pg = sys.modules.get("psycopg")
    if pg is not None and isinstance(exc, pg.OperationalError | pg.InterfaceError):
        return (
            "database_unreachable",
            f"the database cannot be used: {_first_line(exc)}",
            EXIT_REFUSED,
        )
    httpx = sys.modules.get("httpx")
    if httpx is not None and isinstance(exc, httpx.InvalidURL):
        return ("bad_input", f"not a usable URL: {_first_line(exc)}", EXIT_BAD_INPUT)
    return None


def internal(exc: BaseException) -> tuple[str, str, int]:
    """An error nobody expected: one line, and where the traceback is."""
    return (
        "internal",
        f"{type(exc).__name__}: {_first_line(exc)} (set {DEBUG_ENV}=1 for the traceback)",
        EXIT_REFUSED,
    )


@contextmanager
def answering(out: Output) -> Iterator[None]:
    """Map every expected failure to its exit status and message; nothing else leaks:
    anything unforeseen is ``internal`` (exit 1), its traceback shown only with
    ``JOINTPAY_DEBUG=1``."""
    try:
        yield
    except typer.Exit:
        raise
    except PaymentDeclined as exc:
        out.fail(exc.code, str(exc), EXIT_REFUSED)
    except Refused as exc:
        out.fail(exc.code, exc.message, EXIT_REFUSED)
    except BadInput as exc:
        out.fail(exc.code, exc.message, EXIT_BAD_INPUT)
    except AmountError as exc:
        out.fail("bad_amount", str(exc), EXIT_BAD_INPUT)
    except BatchError as exc:
        out.fail("malformed", str(exc), EXIT_BAD_INPUT)
    except CryptoError as exc:
        out.fail("bad_input", str(exc), EXIT_BAD_INPUT)
    except CardError as exc:
        out.fail("card_error", str(exc), EXIT_REFUSED)
    except PcscError as exc:
        code = {NoCard: "no_card", UnknownReader: "unknown_reader"}.get(type(exc), "reader")
        out.fail(code, str(exc), EXIT_BAD_INPUT)
    except BalanceOutOfRange as exc:
        out.fail("amount_out_of_range", str(exc), EXIT_REFUSED)
    except StorageError as exc:
        out.fail("storage", str(exc), EXIT_REFUSED)
    except FileNotFoundError as exc:
        out.fail("not_found", f"{exc.filename}: no such file", EXIT_BAD_INPUT)
    except (OSError, ValueError) as exc:
        out.fail("bad_input", str(exc), EXIT_BAD_INPUT)
    except Exception as exc:
        known = known_failure(exc)
        if known is not None:
            out.fail(*known)
        if os.environ.get(DEBUG_ENV):
            raise
        out.fail(*internal(exc))


@contextmanager
def serving(out: Output) -> Iterator[None]:
    """A server's run: one that stops with an error status (uvicorn's 1 or 3, its
    reason logged on stderr above) answers as every command does."""
    try:
        yield
    except SystemExit as exc:
        if exc.code in (0, None):
            raise
        out.fail(
            "server_failed",
            f"the server stopped with status {exc.code} (its log above says why)",
            EXIT_REFUSED,
        )


def read_pin(pin_stdin: bool, out: Output, *, prompt: str = "PIN") -> str:
    """The PIN from stdin's first line (``--pin-stdin``) or a prompt without echo."""
    if pin_stdin:
        line = sys.stdin.readline()
        pin = line.rstrip("\r\n")
    else:
        if not sys.stdin.isatty():
            out.fail("no_pin", "no terminal to ask for the PIN: use --pin-stdin", EXIT_BAD_INPUT)
        pin = typer.prompt(prompt, hide_input=True)
    if not (pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
        out.fail("bad_pin", "a PIN is 4 to 12 digits", EXIT_BAD_INPUT)
    return pin
