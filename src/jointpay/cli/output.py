"""How every command answers: one JSON object with ``--json``, Rich text without.

Exit status (CONTRACT section 4): 0 done; 1 refused by the protocol; 2 bad usage or
bad input. Errors go to stderr, and with ``--json`` also as
``{"error": code, "message": ...}`` on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import typer
from rich.console import Console

from jointpay.adapters.pcsc import NoCard, PcscError, UnknownReader
from jointpay.crypto.errors import CryptoError
from jointpay.domain.money import AmountError
from jointpay.protocol.deposit import BatchError
from jointpay.protocol.terminal import CardError, PaymentDeclined
from jointpay.service.errors import BadInput, Refused
from jointpay.storage.base import BalanceOutOfRange, StorageError

EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass
class Output:
    as_json: bool
    console: Console
    err: Console

    @classmethod
    def make(cls, as_json: bool) -> Output:
        return cls(as_json, Console(highlight=False), Console(stderr=True, highlight=False))

    def done(self, obj: dict[str, Any], human: Callable[[Console], None] | None = None) -> None:
        if self.as_json:
            sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        elif human is not None:
            human(self.console)
        else:
            for k, v in obj.items():
                self.console.print(f"[bold]{k}[/]: {v}")

    def fail(self, code: str, message: str, status: int) -> NoReturn:
        self.err.print(f"[red]error[/] ({code}): {message}")
        if self.as_json:
            sys.stdout.write(json.dumps({"error": code, "message": message}) + "\n")
        raise typer.Exit(status)


@contextmanager
def answering(out: Output) -> Iterator[None]:
    """Map every expected failure to its exit status and message; nothing else leaks."""
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
