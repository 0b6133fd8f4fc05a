"""The `overlay` command.  Except for `init`, `daemon`, `demo`, `sim` and
`completion`, every command talks to the running daemon through its stream
API.

Exit codes, on every command: 0 success, 1 the operation failed, 2 bad
usage or bad input, 3 no daemon, 4 not found; 141 when stdout is closed
early (SIGPIPE convention, nothing printed).

Command groups register in ``COMMAND_GROUPS``: each is
``add_<group>_parser(sub, parents)`` (see ``overlay.cli.common``).  Shell
completion is generated from the finished parser, so a group added there
is completed without further work.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from overlay import AGENT_VERSION
from overlay.cli.common import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_NO_DAEMON,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    CliParser,
    Parents,
    ParserExit,
    api_status,
    make_parents,
)
from overlay.cli.admin import add_admin_parsers
from overlay.cli.apps import add_apps_parsers
from overlay.cli.core import add_core_parsers
from overlay.cli.dht import add_dht_parser
from overlay.cli.holepunch import add_holepunch_parser
from overlay.cli.name import add_name_parser
from overlay.cli.nat import add_nat_parser
from overlay.cli.relay import add_relay_parser
from overlay.cli.stats import add_stats_parser
from overlay.cli.rendezvous import add_rendezvous_parser
from overlay.cli.serve import add_serve_parser
from overlay.cli.vip import add_vip_parser
from overlay.daemon.errors import ApiError, DaemonNotRunning
from overlay.daemon.home import Home, resolve_home
from overlay.errors import OverlayError

__all__ = [
    "main",
    "build_parser",
    "COMMAND_GROUPS",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "EXIT_NO_DAEMON",
    "EXIT_NOT_FOUND",
    "EXIT_BROKEN_PIPE",
]

AddParser = Callable[[Any, Parents], None]


def _add_completion_parser(sub: Any, parents: Parents) -> None:
    from overlay.cli.completion import add_completion_parser

    add_completion_parser(sub, parents, build_parser)


def _add_sim_parser(sub: Any, parents: Parents) -> None:
    # The simulator has its own parser; `main` hands it the arguments.
    sub.add_parser("sim", help="Kademlia and naming simulator (see `overlay sim --help`)",
                   add_help=False)


COMMAND_GROUPS: list[AddParser] = [
    add_core_parsers,
    add_admin_parsers,
    add_dht_parser,
    add_name_parser,
    add_nat_parser,
    add_relay_parser,
    add_holepunch_parser,
    add_vip_parser,
    add_stats_parser,
    add_rendezvous_parser,
    add_serve_parser,
    add_apps_parsers,
    _add_sim_parser,
    _add_completion_parser,
]
"""Every subcommand group, in `overlay --help` order."""


def build_parser() -> CliParser:
    parents = make_parents()
    parser = CliParser(prog="overlay", parents=[parents.home],
                       description="A libp2p-compatible peer-to-peer network node.",
                       epilog="exit codes: 0 success, 1 failed, 2 bad usage or input, "
                              "3 no daemon, 4 not found")
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    parser.set_defaults(label="overlay")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for add in COMMAND_GROUPS:
        add(sub, parents)
    return parser


def _sim_argv(argv: Sequence[str]) -> list[str] | None:
    """The arguments after `sim` if that is the command; the simulator has
    its own parser, so they are passed through untouched."""
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--home":
            i += 2
        elif token.startswith("--home="):
            i += 1
        elif token == "sim":
            return list(argv[i + 1:])
        else:
            return None
    return None


def _run_sim(argv: list[str]) -> int:
    # Imported by name: the simulator is optional and owned by another module.
    try:
        module = importlib.import_module("overlay.sim.command")
    except ImportError as exc:
        print(f"overlay sim: the simulator is not available in this build ({exc})", file=sys.stderr)
        return EXIT_FAILED
    sim_main: Callable[[list[str]], int | None] = module.main
    try:
        return int(sim_main(argv) or 0)
    except SystemExit as exc:  # its argparse exits on --help and usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)


def _subcommand_help(parser: argparse.ArgumentParser, ns: argparse.Namespace) -> str:
    """The help of the deepest command named, for a group given without
    its action (`overlay`, `overlay dht`); follows each parser's own
    subcommand ``dest``, so groups registered later need nothing here."""
    current = parser
    while True:
        subs = [a for a in current._actions if isinstance(a, argparse._SubParsersAction)]
        chosen = getattr(ns, subs[0].dest, None) if subs else None
        if chosen is None or chosen not in subs[0].choices:
            return current.format_help()
        current = subs[0].choices[chosen]


def _dispatch(args: list[str]) -> int:
    sim_args = _sim_argv(args)
    if sim_args is not None:
        return _run_sim(sim_args)
    parser = build_parser()
    try:
        ns, extra = parser.parse_known_args(args)
    except ParserExit as exc:
        if str(exc):
            print(str(exc), file=sys.stderr)
        return exc.status
    label: str = getattr(ns, "label", "overlay")
    if extra:
        # Named after the subcommand that refused them, not `overlay`.
        print(f"{label}: unrecognized arguments: {' '.join(extra)} (see `{label} --help`)",
              file=sys.stderr)
        return EXIT_USAGE
    run: Callable[[argparse.Namespace, Home], int] | None = getattr(ns, "run", None)
    if run is None:
        # A bare `overlay` or `overlay dht`: the list of what can follow.
        print(_subcommand_help(parser, ns), end="")
        return EXIT_USAGE
    try:
        home = resolve_home(getattr(ns, "home", None))
        return run(ns, home)
    except DaemonNotRunning as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except CliError as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return exc.status
    except ApiError as exc:
        print(f"{label}: {exc.message} [{exc.code}]", file=sys.stderr)
        return api_status(exc.code)
    except BrokenPipeError:
        raise
    except (OverlayError, OSError) as exc:
        print(f"{label}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _quiet_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so the interpreter's
    final flush does not complain (the recipe of Python's `signal` docs)."""
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # replaced by a file-less stream (tests)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _is_broken_pipe(exc: BaseException) -> bool:
    if isinstance(exc, BrokenPipeError):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_broken_pipe(inner) for inner in exc.exceptions)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        status = _dispatch(args)
        sys.stdout.flush()
    except (BrokenPipeError, BaseExceptionGroup) as exc:
        if not _is_broken_pipe(exc):
            raise
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    return status

