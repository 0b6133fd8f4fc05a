"""`overlay name …`: register, update, transfer, release, resolve, list and
connect, each one request to the daemon's stream API (``name_*`` ops)."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.cli_dht import run_api_action
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home

__all__ = ["add_name_parser", "run_name"]

_ACTIONS = ("register", "update", "transfer", "release", "resolve", "list", "connect")


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 7 * 24 * 3600:
        raise argparse.ArgumentTypeError("--ttl must be between 0 and 604800 seconds")
    return value


def _add_targets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--peer", metavar="self|PEERID|none",
                   help="the peer the name points at (register: default self)")
    p.add_argument("--addr", metavar="MULTIADDR", action="append", dest="addrs",
                   help="an address of --peer PEERID (repeatable)")
    p.add_argument("--ip", metavar="IP", action="append", dest="ips",
                   help="an IPv4 or IPv6 address for A/AAAA answers (repeatable)")
    p.add_argument("--service", metavar="PROTO:PORT[:TARGET]", action="append", dest="services",
                   help="an SRV-like service entry (repeatable)")
    p.add_argument("--txt", metavar="TEXT", action="append", help="a TXT string (repeatable)")
    p.add_argument("--ttl", type=_ttl, help="seconds resolvers may cache the record (default 300)")


def add_name_parser(sub: Any, parents: list[argparse.ArgumentParser],
                    json_parent: argparse.ArgumentParser) -> None:
    """Add `name` and its actions to the `overlay` subparsers ``sub``;
    ``parents`` carry --home, ``json_parent`` adds --json."""
    p = sub.add_parser("name", parents=parents, help="decentralized names (register, resolve …)")
    actions = p.add_subparsers(dest="name_action", metavar="ACTION",
                               parser_class=type(p))
    actions.required = True
    both = [*parents, json_parent]

    a = actions.add_parser("register", parents=both, help="claim a name (proof of work once)")
    a.add_argument("name")
    _add_targets(a)
    a = actions.add_parser("update", parents=both, help="change what an owned name points at")
    a.add_argument("name")
    _add_targets(a)
    a = actions.add_parser("transfer", parents=both, help="hand an owned name to another key")
    a.add_argument("name")
    a.add_argument("new_owner", metavar="NEW-OWNER-PEERID")
    a = actions.add_parser("release", parents=both, help="free an owned name")
    a.add_argument("name")
    a = actions.add_parser("resolve", parents=both, help="look a name up")
    a.add_argument("name")
    a.add_argument("--no-cache", action="store_true", help="ask the network, not the cache")
    actions.add_parser("list", parents=both, help="names this node owns")
    a = actions.add_parser("connect", parents=parents,
                           help="open a stream to the named peer; relays stdin/stdout")
    a.add_argument("name")
    a.add_argument("protocol", metavar="PROTOCOL")
    p.set_defaults(run=run_name)


def run_name(ns: argparse.Namespace, home: Home) -> int:
    return run_api_action(home, _HANDLERS[ns.name_action], ns, "overlay name", "name_not_found")


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def _strip(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


def _when(ts: float | int | None) -> str:
    if ts is None:
        return "-"
    moment = datetime.datetime.fromtimestamp(float(ts), tz=datetime.timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _target_args(ns: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for field in ("peer", "addrs", "ips", "services", "txt", "ttl"):
        value = getattr(ns, field, None)
        if value is not None:
            args[field] = value
    return args


def _describe(record: dict[str, Any]) -> list[str]:
    lines = [f"owner: {record['owner']}", f"sequence: {record['sequence']}",
             f"expires: {_when(record['expires'])}", f"ttl: {record['ttl']} s"]
    for peer in record.get("peers", []):
        lines.append(f"peer: {peer['peer_id']}")
        lines.extend(f"  addr: {addr}" for addr in peer.get("addrs", []))
    lines.extend(f"ip: {ip}" for ip in record.get("ips", []))
    for service in record.get("services", []):
        target = f" -> {service['target']}" if service.get("target") else ""
        lines.append(f"service: {service['protocol']}:{service['port']}{target}")
    lines.extend(f"txt: {text}" for text in record.get("txt", []))
    return lines


async def _publish(client: ApiClient, ns: argparse.Namespace, op: str,
                   args: dict[str, Any], verb: str) -> int:
    reply = await client.call(op, args)
    if ns.json:
        _print_json(_strip(reply))
        return 0
    print(f"{verb} {reply['name']} (sequence {reply['sequence']}, "
          f"stored on {reply['stored']} nodes)")
    if reply.get("pow_ms"):
        print(f"proof of work: {reply['pow_ms']:.0f} ms")
    if reply.get("republish_at") is not None:
        print(f"next republish: {_when(reply['republish_at'])}")
    return 0


async def _register(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_register", {"name": ns.name, **_target_args(ns)},
                          "registered")


async def _update(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_update", {"name": ns.name, **_target_args(ns)},
                          "updated")


async def _transfer(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_transfer",
                          {"name": ns.name, "new_owner": ns.new_owner}, "transferred")


async def _release(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_release", {"name": ns.name}, "released")


async def _resolve(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("name_resolve", {"name": ns.name, "no_cache": ns.no_cache})
    if ns.json:
        _print_json(_strip(reply))
        return 0
    print(f"{reply['name']}  ({reply['source']}, {reply['elapsed_ms']} ms)")
    for line in _describe(reply["record"]):
        print(f"  {line}")
    return 0


async def _list(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("name_list")
    names = reply.get("names", [])
    if ns.json:
        _print_json(_strip(reply))
    elif not names:
        print("this node owns no names")
    else:
        print(f"{'name':32}  {'sequence':>20}  {'expires':23}  next republish")
        for entry in names:
            print(f"{entry['name']:32}  {entry['sequence']:>20}  {_when(entry['expires']):23}  "
                  f"{_when(entry['republish_at'])}")
    return 0


async def _connect(client: ApiClient, ns: argparse.Namespace) -> int:
    # The API connection becomes the stream's raw bytes after the reply.
    reply, reader, writer = await client._take_over(
        "name_connect", {"name": ns.name, "protocol": ns.protocol})
    print(f"connected to {reply['peer_id']} for {reply['name']} ({reply['protocol']})",
          file=sys.stderr, flush=True)

    async def downstream() -> None:
        out = sys.stdout.buffer
        while data := await reader.read(65536):
            out.write(data)
            out.flush()

    async with asyncio.TaskGroup() as group:
        up = group.create_task(_stdin_to(writer))
        await downstream()
        up.cancel()
    writer.close()
    return 0


async def _stdin_to(writer: asyncio.StreamWriter) -> None:
    fd = sys.stdin.fileno()
    if stat.S_ISREG(os.fstat(fd).st_mode):
        # Regular files are always "readable"; the event loop cannot watch them.
        while data := os.read(fd, 65536):
            writer.write(data)
            await writer.drain()
    else:
        loop = asyncio.get_running_loop()
        chunks: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            data = os.read(fd, 65536)
            chunks.put_nowait(data)
            if not data:
                loop.remove_reader(fd)

        loop.add_reader(fd, readable)
        try:
            while data := await chunks.get():
                writer.write(data)
                await writer.drain()
        finally:
            loop.remove_reader(fd)
    if writer.can_write_eof():
        writer.write_eof()


_HANDLERS: dict[str, Callable[[ApiClient, argparse.Namespace], Awaitable[int]]] = {
    "register": _register,
    "update": _update,
    "transfer": _transfer,
    "release": _release,
    "resolve": _resolve,
    "list": _list,
    "connect": _connect,
}
