"""`overlay nat`: the NAT type, the public addresses and how each was learnt
(asks the daemon's ``nat_status``); `overlay nat --classic SERVER:PORT`
runs pystun3's RFC 3489 classification on a socket of its own, without the
daemon.  Also ``stun_server_arg``, the ``HOST:PORT`` check `overlay daemon
--stun` uses."""

from __future__ import annotations

import argparse
import importlib
import socket
from typing import Any

from overlay.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CliError,
    Parents,
    add_command,
    call_api,
    print_json,
    run_api,
    strip_reply,
)
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.errors import OverlayError

__all__ = ["add_nat_parser", "stun_server_arg"]

CLASSIC_TIMEOUT = 1.0
"""Seconds pystun3 waits per try (it tries 4 times) on its own socket."""


def stun_server_arg(text: str) -> str:
    """argparse type for ``HOST:PORT``: a bad one is a one-line usage error."""
    from overlay.nat.config import parse_stun_server

    try:
        parse_stun_server(text)
    except OverlayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_nat_parser(sub: Any, parents: Parents) -> None:
    p = add_command(
        sub, "nat", parents=parents.pick(), run=_cmd_nat,
        help="NAT type and public addresses (STUN on the node's QUIC socket)",
        description="Show what kind of NAT the node is behind and its public addresses, "
                    "each with how it was learnt: STUN servers asked from the node's own "
                    "QUIC socket (`stun` in config.toml or `overlay daemon --stun`) and "
                    "addresses peers reported through identify.  Mapping behaviour needs "
                    "two servers; filtering needs one that answers from a second address "
                    "(RFC 5780).\n\n"
                    "--classic runs the RFC 3489 test of pystun3 instead, from a new "
                    "socket and without the daemon: a diagnostic of the network, not of "
                    "the node's own mapping.",
        examples=["overlay nat", "overlay nat --refresh --json",
                  "overlay nat --classic 203.0.113.10:3478"])
    p.add_argument("--refresh", action="store_true",
                   help="ask the STUN servers again first (up to about 15 s)")
    p.add_argument("--classic", metavar="HOST:PORT", type=stun_server_arg, default=None,
                   help="run pystun3's RFC 3489 test against this server, no daemon needed")
    p.add_argument("--source", metavar="IP", default="0.0.0.0",
                   help="with --classic: the local address to bind (default: any)")


def _cmd_nat(ns: argparse.Namespace, home: Home) -> int:
    if ns.classic is not None:
        return _classic(ns)

    async def body(client: ApiClient) -> int:
        reply = await call_api(client, "nat_status", {"refresh": bool(ns.refresh)},
                               waiting="asking the STUN servers", quiet=ns.json)
        if ns.json:
            print_json(strip_reply(reply))
        else:
            _print_report(reply)
        return EXIT_OK

    return run_api(home, body)


def _print_report(reply: dict[str, Any]) -> None:
    print(f"nat type: {reply['nat_type']}")
    for key in ("mapping", "filtering"):
        verdict = reply[key]
        print(f"{key}: {verdict['behaviour']} ({verdict['reason']})")
    publics = reply.get("public_addrs", [])
    if not publics:
        print("public addresses: none known")
    for entry in publics:
        print(f"public {entry['addr']}  via {', '.join(entry['sources'])}")
    servers = reply.get("stun_servers", [])
    print(f"stun servers: {', '.join(servers) if servers else 'none configured'}")
    for sock in reply.get("sockets", []):
        for obs in sock["observations"]:
            print(f"  {sock['local']} -> {obs['server']}: mapped {obs['mapped']} "
                  f"({obs['rtt_ms']} ms, {obs['age_s']:g} s ago)")
        for failure in sock["failures"]:
            print(f"  {sock['local']} -> {failure['server']}: {failure['error']}")
    if reply.get("introducer"):
        print(f"introducer: answering STUN ({reply['stun_answered']} answered, "
              f"{reply['stun_refused']} refused by the rate limit)")


def _classic(ns: argparse.Namespace) -> int:
    from overlay.nat.config import parse_stun_server

    try:
        pystun = importlib.import_module("stun")  # pystun3's package; optional, untyped
    except ImportError:
        raise CliError("--classic needs pystun3 (pip install pystun3)") from None
    host, port = parse_stun_server(ns.classic)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLASSIC_TIMEOUT)
        try:
            sock.bind((ns.source, 0))
        except OSError as exc:
            raise CliError(f"cannot bind {ns.source}: {exc.strerror or exc}") from None
        source_ip, source_port = sock.getsockname()[:2]
        # pystun3 compares the mapped IP with the one we pass to detect "no
        # NAT": give it the bound address, never the wildcard.
        if source_ip == "0.0.0.0":
            source_ip = _route_source(host, port) or source_ip
        try:
            nat_type, info = pystun.get_nat_type(sock, source_ip, source_port,
                                                 stun_host=host, stun_port=port)
        except (OSError, KeyError, ValueError) as exc:
            raise CliError(f"pystun3 failed against {ns.classic}: {exc!r}") from None
    result = {"nat_type": nat_type, "server": ns.classic,
              "local": f"{source_ip}:{source_port}",
              "external_ip": info.get("ExternalIP"), "external_port": info.get("ExternalPort"),
              "rfc": "3489", "tool": "pystun3"}
    if ns.json:
        print_json(result)
    else:
        print(f"nat type (RFC 3489, pystun3): {nat_type}")
        if result["external_ip"]:
            print(f"external address: {result['external_ip']}:{result['external_port']}")
    return EXIT_OK if nat_type != "Blocked" else EXIT_FAILED


def _route_source(host: str, port: int) -> str | None:
    """The local IP the kernel would use towards ``host`` (no packet sent)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, port))
            return str(probe.getsockname()[0])
    except OSError:
        return None
