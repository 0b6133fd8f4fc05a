"""What every `overlay` subcommand shares: exit codes, the parser class,
the command builder (description + example), the API runner, error
statuses, readable times and plurals.

A command group lives in its own ``overlay/cli_<group>.py`` and exposes
``add_<group>_parser(sub, parents)``; ``overlay.cli.COMMAND_GROUPS`` lists
them.  Build each subcommand with ``add_command`` so it gets a description,
an example and its full name for error messages, and raise ``CliError`` /
``UsageError`` for a one-line failure: ``main`` prefixes the message with
the subcommand (``overlay dht put: …``) and exits with its status.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.daemon.error_codes import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_USAGE, exit_status_for
from overlay.errors import OverlayError

if TYPE_CHECKING:
    from _typeshed import SupportsWrite

__all__ = [
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NO_DAEMON",
    "EXIT_NOT_FOUND",
    "EXIT_BROKEN_PIPE",
    "CliError",
    "UsageError",
    "NotFound",
    "ParserExit",
    "CliParser",
    "Parents",
    "add_command",
    "make_parents",
    "api_status",
    "run_api",
    "call_api",
    "api_socket",
    "print_json",
    "strip_reply",
    "setup_logging",
    "plural",
    "format_duration",
    "format_when",
    "format_until",
]

EXIT_OK = 0
# EXIT_FAILED (1), EXIT_USAGE (2: bad usage or input) and EXIT_NOT_FOUND (4)
# come from the error registry, which maps API error codes to them.
EXIT_NO_DAEMON = 3
EXIT_BROKEN_PIPE = 141
"""stdout was closed early (`overlay peers | head -1`): 128 + SIGPIPE, what
a shell reports for a tool killed by SIGPIPE; nothing is printed."""

_LOG_LEVELS = ("debug", "info", "warning", "error")

class CliError(OverlayError):
    """A command failed; ``main`` prints ``overlay <cmd>: <message>`` and
    exits with ``status``."""

    def __init__(self, message: str, status: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CliError):
    """Bad usage or bad input, caught before asking the daemon (exit 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class NotFound(CliError):
    """The thing asked for does not exist (exit 4)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_NOT_FOUND)


class ParserExit(Exception):
    """argparse wants to stop (--help, a usage error); not an OverlayError
    because it is control flow, as SystemExit is."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class CliParser(argparse.ArgumentParser):
    """Errors become one line on stderr and exit status 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise ParserExit(f"{self.prog}: {message} (see `{self.prog} --help`)", EXIT_USAGE)

    def _print_message(self, message: str, file: SupportsWrite[str] | None = None) -> None:
        # argparse swallows OSError here; a closed stdout must reach main's
        # broken-pipe handling like any other output.
        if message:
            (file or sys.stderr).write(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise ParserExit("", status)


@dataclass(frozen=True, slots=True)
class Parents:
    """Shared option sets: ``--home``, ``--json``, ``--log-level``."""

    home: CliParser
    json: CliParser
    log: CliParser

    def pick(self, *, json: bool = True, log: bool = False) -> list[argparse.ArgumentParser]:
        chosen: list[argparse.ArgumentParser] = [self.home]
        if json:
            chosen.append(self.json)
        if log:
            chosen.append(self.log)
        return chosen


def make_parents() -> Parents:
    home = CliParser(add_help=False)
    home.add_argument("--home", metavar="DIR", default=argparse.SUPPRESS,
                      help="data directory (default: $OVERLAY_HOME or ~/.overlay)")
    as_json = CliParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="machine-readable output")
    log = CliParser(add_help=False)
    log.add_argument("--log-level", choices=_LOG_LEVELS, default=None,
                     help="stderr logging threshold (default: info for `daemon`, which "
                          "reports its bootstrap and shutdown there; warning otherwise)")
    return Parents(home, as_json, log)


def add_command(
    sub: Any,
    name: str,
    *,
    help: str,
    description: str,
    examples: Sequence[str],
    parents: Sequence[argparse.ArgumentParser],
    run: Callable[[argparse.Namespace, Home], int] | None = None,
    add_help: bool = True,
) -> CliParser:
    """A subcommand with a description and examples in its ``--help``.

    ``run(ns, home) -> exit status`` runs it; ``ns.label`` is its full name
    (``overlay dht put``) for messages."""
    epilog = "example:\n" if len(examples) == 1 else "examples:\n"
    epilog += "\n".join(f"  {line}" for line in examples)
    parser: CliParser = sub.add_parser(
        name, parents=list(parents), help=help, description=description, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter, add_help=add_help)
    parser.set_defaults(label=parser.prog)
    if run is not None:
        parser.set_defaults(run=run)
    return parser


def api_status(code: str) -> int:
    """The exit status for a daemon error ``code`` (overlay/daemon/error_codes.py)."""
    return exit_status_for(code)


def api_socket(home: Home) -> Path:
    from overlay.daemon.config import load_config

    return home.api_socket(load_config(home.config_file).api_socket)


def run_api(home: Home, body: Callable[[ApiClient], Awaitable[int]]) -> int:
    """Connect to the daemon and run ``body(client)``; API errors propagate
    to ``main``, which maps them with ``api_status``."""

    async def go() -> int:
        async with await ApiClient.connect(api_socket(home)) as client:
            return await body(client)

    return asyncio.run(go())


async def call_api(
    client: ApiClient,
    op: str,
    args: Mapping[str, Any] | None = None,
    *,
    waiting: str,
    quiet: bool = False,
    on_event: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """``client.call`` for a wait that may be long: on a terminal, unless
    ``quiet`` (--json), ``waiting… 2.5 s`` counts once it passes a second,
    and is cleared before the reply is printed."""
    from overlay.cli.progress import SlowWait

    async with SlowWait(waiting, enabled=not quiet):
        return await client.call(op, args, on_event=on_event)


def print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out or sys.stdout, flush=True)


def strip_reply(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


def setup_logging(level: str | None, default: str = "warning") -> None:
    chosen = (level or default).upper()
    logging.basicConfig(stream=sys.stderr, level=chosen,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if chosen != "DEBUG":
        # aioquic logs every connection close at INFO; a daemon with many
        # peers would bury its own messages under them.
        logging.getLogger("quic").setLevel(logging.WARNING)


# -- wording -----------------------------------------------------------------


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 peer``, ``2 peers``, ``0 entries`` (with ``many="entries"``)."""
    return f"{count} {word if count == 1 else (many or word + 's')}"


def format_duration(seconds: float) -> str:
    """A rough, readable span: ``40 s``, ``5 min``, ``23 h``, ``3 d``."""
    seconds = abs(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def format_when(ts: float | None, now: float) -> str:
    """``2026-11-28 14:05 UTC (in 23 h)`` or ``… (5 min ago)``; ``-`` for None."""
    if ts is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(ts), tz=datetime.timezone.utc)
    delta = float(ts) - now
    relative = "now" if abs(delta) < 1 else (
        f"in {format_duration(delta)}" if delta > 0 else f"{format_duration(delta)} ago")
    return f"{moment:%Y-%m-%d %H:%M} UTC ({relative})"


def format_until(ts: float, now: float) -> str:
    """``until 2026-11-28 14:05 UTC (in 23 h)``."""
    return f"until {format_when(ts, now)}"
