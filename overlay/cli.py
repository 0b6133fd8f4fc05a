"""The `overlay` command.  Except for `init`, `daemon`, `demo` and `sim`,
every command talks to the running daemon through its stream API.

Exit codes: 0 success, 1 the operation failed, 2 bad usage, 3 no daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from overlay import AGENT_VERSION
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError, DaemonError, DaemonNotRunning
from overlay.daemon.home import Home, resolve_home
from overlay.errors import ConfigError, InvalidMultiaddr, OverlayError

__all__ = ["main", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_NO_DAEMON"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NO_DAEMON = 3

_LOG_LEVELS = ("debug", "info", "warning", "error")


class _UsageError(Exception):
    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """Errors become one line on stderr and exit status 2, not a usage dump."""

    def error(self, message: str) -> NoReturn:
        raise _UsageError(f"{self.prog}: {message} (see `{self.prog} --help`)", EXIT_USAGE)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            sys.stderr.write(message)
        raise _UsageError("", status)


def _multiaddr_arg(text: str) -> str:
    from overlay.multiaddrs import parse_quic_multiaddr

    try:
        parse_quic_multiaddr(text)
    except InvalidMultiaddr as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _protocol_id(text: str) -> str:
    if not text.startswith("/") or len(text) > 256 or "\n" in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a protocol ID such as /ovl/kad/1.0.0")
    return text


def _connect_target(text: str) -> str:
    """A QUIC multiaddr, or `/p2p/PEERID` alone (the daemon asks the DHT)."""
    parts = text.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[1] == "p2p":
        from overlay.identity import PeerId

        try:
            PeerId.from_string(parts[2])
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        return text
    return _multiaddr_arg(text)


def _target_fields(addr: str) -> dict[str, str]:
    """`/p2p/PEERID` alone becomes the op's `peer` field; the daemon then
    dials what it knows or what the DHT finds."""
    parts = addr.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[1] == "p2p":
        return {"peer": parts[2]}
    return {"addr": addr}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 60:
        raise argparse.ArgumentTypeError(f"{text!r} must be between 0 and 60 seconds")
    return value


def _dns_arg(text: str) -> str:
    from overlay.naming.dns_front import parse_dns_address

    try:
        parse_dns_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def _build_parser() -> _Parser:
    home_parent = _Parser(add_help=False)
    home_parent.add_argument(
        "--home", metavar="DIR", default=argparse.SUPPRESS,
        help="data directory (default: $OVERLAY_HOME or ~/.overlay)")
    json_parent = _Parser(add_help=False)
    json_parent.add_argument("--json", action="store_true", help="machine-readable output")
    log_parent = _Parser(add_help=False)
    log_parent.add_argument("--log-level", choices=_LOG_LEVELS, default="warning",
                            help="stderr logging threshold (default: warning)")

    parser = _Parser(prog="overlay", parents=[home_parent],
                     description="A libp2p-compatible peer-to-peer network node.")
    parser.add_argument("--version", action="version", version=AGENT_VERSION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("init", parents=[home_parent, json_parent],
                       help="create the identity key and config (never overwrites a key)")
    p.set_defaults(run=_cmd_init)

    p = sub.add_parser("daemon", parents=[home_parent, json_parent, log_parent],
                       help="run the node and its local API")
    p.add_argument("--listen", metavar="MULTIADDR", action="append", type=_multiaddr_arg,
                   default=[], help="listen address, repeatable (default: from config.toml)")
    p.add_argument("--bootstrap", metavar="MULTIADDR", action="append", type=_multiaddr_arg,
                   default=[], help="DHT bootstrap peer (with /p2p/), repeatable "
                                    "(default: from config.toml)")
    p.add_argument("--dht-mode", choices=("server", "client"), default=None,
                   help="answer DHT queries (server) or only ask (client) "
                        "(default: from config.toml, else server)")
    p.add_argument("--kad-protocol", metavar="ID", type=_protocol_id, default=None,
                   help="Kademlia protocol ID (default: from config.toml, else /ovl/kad/1.0.0)")
    p.add_argument("--dns", metavar="HOST:PORT|off", type=_dns_arg, default=None,
                   help="serve names over DNS here, UDP and TCP (default: from config.toml, "
                        "else 127.0.0.1:5335); `off` disables it")
    p.set_defaults(run=_cmd_daemon)

    p = sub.add_parser("id", parents=[home_parent, json_parent],
                       help="peer ID and addresses of the running daemon")
    p.set_defaults(run=_cmd_id)

    p = sub.add_parser("peers", parents=[home_parent, json_parent], help="connected peers")
    p.set_defaults(run=_cmd_peers)

    p = sub.add_parser("connect", parents=[home_parent, json_parent],
                       help="connect to a peer (/p2p/PEERID alone: look it up in the DHT)")
    p.add_argument("addr", metavar="MULTIADDR", type=_connect_target)
    p.set_defaults(run=_cmd_connect)

    p = sub.add_parser("ping", parents=[home_parent, json_parent],
                       help="ping a peer (/p2p/PEERID alone: look it up in the DHT)")
    p.add_argument("addr", metavar="MULTIADDR", type=_connect_target)
    p.add_argument("-n", "--count", type=_positive_int, default=3, help="pings to send (default 3)")
    p.add_argument("-i", "--interval", type=_seconds, default=1.0,
                   help="seconds between pings (default 1)")
    p.set_defaults(run=_cmd_ping)

    p = sub.add_parser("demo", parents=[home_parent, json_parent, log_parent],
                       help="the seed network: an introduction node and peers register, "
                            "resolve and reach names (--nodes N: the ping/identify demo)")
    p.add_argument("--peers", type=int, default=10,
                   help="peers besides the introduction node, 2 to 32 (default 10)")
    p.add_argument("--pow-bits", type=int, default=16,
                   help="proof-of-work difficulty of the demo network (default 16)")
    p.add_argument("--nodes", type=int, default=None,
                   help="instead: N nodes connect, ping and identify each other (2 to 16)")
    p.add_argument("--timeout", type=float, default=None,
                   help="overall limit in seconds (default 120; 60 with --nodes)")
    p.set_defaults(run=_cmd_demo)

    from overlay.cli_dht import add_dht_parser
    from overlay.cli_name import add_name_parser

    add_dht_parser(sub, [home_parent], json_parent)
    add_name_parser(sub, [home_parent], json_parent)

    sub.add_parser("sim", help="Kademlia simulator (see `overlay sim --help`)", add_help=False)
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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    sim_args = _sim_argv(args)
    if sim_args is not None:
        return _run_sim(sim_args)
    parser = _build_parser()
    try:
        ns = parser.parse_args(args)
    except _UsageError as exc:
        if str(exc):
            print(str(exc), file=sys.stderr)
        return exc.status
    home = resolve_home(getattr(ns, "home", None))
    run: Callable[[argparse.Namespace, Home], int] = ns.run
    try:
        return run(ns, home)
    except DaemonNotRunning as exc:
        print(f"overlay {ns.command}: {exc}", file=sys.stderr)
        return EXIT_NO_DAEMON
    except ApiError as exc:
        print(f"overlay {ns.command}: {exc.message} [{exc.code}]", file=sys.stderr)
        return EXIT_FAILED
    except (OverlayError, OSError) as exc:
        print(f"overlay {ns.command}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


def _print_json(value: Any, out: TextIO | None = None) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), file=out or sys.stdout, flush=True)


def _strip(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


def _with_client(home: Home, body: Callable[[ApiClient], Awaitable[int]]) -> int:
    async def go() -> int:
        async with await ApiClient.connect(_api_socket(home)) as client:
            return await body(client)
    return asyncio.run(go())


def _api_socket(home: Home) -> Path:
    from overlay.daemon.config import load_config

    return home.api_socket(load_config(home.config_file).api_socket)


def _setup_logging(level: str) -> None:
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# -- commands ---------------------------------------------------------------


def _cmd_init(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.init import init_home

    result = init_home(home)
    if ns.json:
        _print_json({"peer_id": str(result.peer_id), "home": str(home.root),
                     "created_key": result.created_key, "created_config": result.created_config})
    elif result.created_key:
        print(f"initialized {home.root}\nkey: {home.key_file}\nconfig: {home.config_file}")
        print(f"peer id: {result.peer_id}")
    else:
        print(f"{home.root} is already initialized; the existing key was kept")
        print(f"peer id: {result.peer_id}")
    return EXIT_OK


def _cmd_daemon(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.run import event_loop_factory, run_daemon

    _setup_logging(ns.log_level)
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run_daemon(home, sys.stdout, listen=ns.listen, as_json=ns.json,
                                     bootstrap=ns.bootstrap, dht_mode=ns.dht_mode,
                                     kad_protocol=ns.kad_protocol, dns=ns.dns))


def _cmd_id(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("identity")
        if ns.json:
            _print_json(_strip(reply))
        else:
            print(f"peer id: {reply['peer_id']}")
            print(f"agent: {reply.get('agent_version', '?')}")
            for addr in reply.get("addrs", []):
                print(f"addr: {addr}")
            for seen in reply.get("observed_addrs", []):
                count = seen["reporters"]
                print(f"observed: {seen['addr']} ({count} peer{'' if count == 1 else 's'})")
        return EXIT_OK
    return _with_client(home, body)


def _cmd_peers(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("peers")
        peers = reply.get("peers", [])
        if ns.json:
            _print_json(_strip(reply))
        elif not peers:
            print("no connected peers")
        else:
            for peer in peers:
                addrs = peer.get("connected_addrs") or peer.get("addrs") or ["?"]
                print(f"{peer['peer_id']}  {peer.get('direction', '?'):8}  "
                      f"{peer.get('agent_version') or '?'}  "
                      f"{len(peer.get('protocols', []))} protocols  {addrs[0]}")
        return EXIT_OK
    return _with_client(home, body)


def _cmd_connect(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("connect", {"addr": ns.addr})
        if ns.json:
            _print_json(_strip(reply))
        else:
            print(f"connected to {reply['peer_id']} ({reply.get('direction', '?')})")
        return EXIT_OK
    return _with_client(home, body)


def _cmd_ping(ns: argparse.Namespace, home: Home) -> int:
    def on_event(event: dict[str, Any]) -> None:
        if not ns.json and event.get("event") == "pong":
            print(f"pong from {event.get('peer_id')}: seq={event.get('seq')} "
                  f"time={event.get('rtt_ms')} ms", flush=True)

    async def body(client: ApiClient) -> int:
        reply = await client.call(
            "ping",
            {**_target_fields(ns.addr), "count": ns.count,
             "interval_ms": int(ns.interval * 1000)},
            on_event=on_event)
        if ns.json:
            _print_json(_strip(reply))
        else:
            print(f"{reply['count']} pings to {reply['peer_id']}: min/avg/max = "
                  f"{reply['min_ms']}/{reply['avg_ms']}/{reply['max_ms']} ms")
        return EXIT_OK
    return _with_client(home, body)


def _cmd_demo(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.run import event_loop_factory
    from overlay.demo import run_demo

    _setup_logging(ns.log_level)
    if ns.nodes is None:
        from overlay.seed_demo import run_seed_demo

        if not 2 <= ns.peers <= 32 or not 0 <= ns.pow_bits <= 24:
            print("overlay demo: --peers must be 2 to 32 and --pow-bits 0 to 24", file=sys.stderr)
            return EXIT_USAGE
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            ok = runner.run(run_seed_demo(sys.stdout, peers=ns.peers, timeout=ns.timeout or 120.0,
                                          as_json=ns.json, pow_bits=ns.pow_bits))
        return EXIT_OK if ok else EXIT_FAILED
    if not 2 <= ns.nodes <= 16:
        print("overlay demo: --nodes must be between 2 and 16", file=sys.stderr)
        return EXIT_USAGE
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        ok = runner.run(run_demo(ns.nodes, ns.timeout or 60.0, sys.stdout, as_json=ns.json))
    return EXIT_OK if ok else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
