"""`overlay name …`: register, update, transfer, release, resolve, list and
connect, each one request to the daemon's stream API (``name_*`` ops)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.cli.common import (
    CliError,
    Parents,
    UsageError,
    add_command,
    call_api,
    format_duration,
    format_until,
    format_when,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.cli.core import peer_id_arg
from overlay.cli.progress import SlowWait, pow_estimate
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError, ApiProtocolError, DaemonError
from overlay.daemon.home import Home
from overlay.daemon.schema import cli_type

__all__ = ["add_name_parser"]


_ttl = cli_type("name_register", "ttl")


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


def _name_arg(text: str) -> str:
    """An argparse type: a host name by the naming rules (the daemon also
    checks that it lies in its zone)."""
    from overlay.naming.errors import InvalidName
    from overlay.naming.names import normalize_hostname

    try:
        normalize_hostname(text)
    except InvalidName as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_protocol_arg = cli_type("name_connect", "protocol")


_NAME_HELP = "a name in the daemon's zone, such as alice.ovl"


def add_name_parser(sub: Any, parents: Parents) -> None:
    """Add `name` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(sub, "name", parents=parents.pick(json=False),
                    help="decentralized names (register, resolve …)",
                    description="Register, resolve and manage names in the decentralized "
                                "name system through the running daemon.",
                    examples=["overlay name register alice.ovl", "overlay name resolve bob.ovl"])
    actions = p.add_subparsers(dest="name_action", metavar="ACTION", parser_class=type(p))
    both = parents.pick()

    a = add_command(actions, "register", parents=both, run=_run(_register),
                    help="claim a name (proof of work once)",
                    description="Claim a free name for this node's key.  The first "
                                "registration solves a proof of work (seconds to minutes); "
                                "the daemon then republishes the record.  Without --peer the "
                                "name points at this node and its current addresses.",
                    examples=["overlay name register alice.ovl",
                              "overlay name register web.alice.ovl --ip 192.0.2.7 "
                              "--service tcp:443"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    _add_targets(a)
    a = add_command(actions, "update", parents=both, run=_run(_update),
                    help="change what an owned name points at",
                    description="Publish a new version of a name this node owns; only the "
                                "targets given change.",
                    examples=["overlay name update alice.ovl --txt 'hello'"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    _add_targets(a)
    a = add_command(actions, "transfer", parents=both, run=_run(_transfer),
                    help="hand an owned name to another key",
                    description="Sign the name over to another peer's key; that peer "
                                "then owns it and this node no longer can update it.",
                    examples=["overlay name transfer alice.ovl 12D3KooW…"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    a.add_argument("new_owner", metavar="NEW-OWNER-PEERID", type=peer_id_arg,
                   help="the peer ID of the new owner")
    a = add_command(actions, "release", parents=both, run=_run(_release),
                    help="free an owned name",
                    description="Publish a release of an owned name so others may claim it.",
                    examples=["overlay name release alice.ovl"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    a = add_command(actions, "resolve", parents=both, run=_run(_resolve),
                    help="look a name up",
                    description="Resolve a name to its record (owner, peers, addresses, "
                                "IPs, services, TXT).  Exits 4 if it is not registered.",
                    examples=["overlay name resolve bob.ovl",
                              "overlay name resolve bob.ovl --no-cache --json"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    a.add_argument("--no-cache", action="store_true", help="ask the network, not the cache")
    add_command(actions, "list", parents=both, run=_run(_list),
                help="names this node owns",
                description="List the names this node owns with their sequence, expiry "
                            "and next republish.",
                examples=["overlay name list"])
    a = add_command(actions, "connect", parents=both,
                    run=_run(_connect),
                    help="open a stream to the named peer; relays stdin/stdout",
                    description="Resolve NAME, connect to its peer and open a stream with "
                                "PROTOCOL; stdin goes to the peer and the peer's bytes to "
                                "stdout, like netcat.  With --json, one JSON line about the "
                                "connection (name, peer_id, addr, protocol) goes to stderr "
                                "before any data.",
                    examples=["echo hi | overlay name connect bob.ovl /echo/1.0.0"])
    a.add_argument("name", type=_name_arg, help=_NAME_HELP)
    a.add_argument("protocol", metavar="PROTOCOL", type=_protocol_arg,
                   help="the protocol ID to open, such as /echo/1.0.0")


Action = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]


def _run(action: Action) -> Callable[[argparse.Namespace, Home], int]:
    def run(ns: argparse.Namespace, home: Home) -> int:
        _check_targets(ns)

        async def body(client: ApiClient) -> int:
            return await action(client, ns)
        return run_api(home, body)
    return run


def _check_targets(ns: argparse.Namespace) -> None:
    """--addr says where --peer PEERID is reached: without such a peer it
    would be dropped, so it is refused."""
    if getattr(ns, "addrs", None) and getattr(ns, "peer", None) in (None, "self", "none"):
        raise UsageError("--addr needs --peer PEERID (this node's own addresses are "
                         "published automatically)")


def _when(ts: float | int | None) -> str:
    return format_when(ts, time.time())


def _target_args(ns: argparse.Namespace) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for field in ("peer", "addrs", "ips", "services", "txt", "ttl"):
        value = getattr(ns, field, None)
        if value is not None:
            args[field] = value
    return args


def _describe(record: dict[str, Any]) -> list[str]:
    lines = [f"owner: {record['owner']}", f"sequence: {record['sequence']}",
             f"valid {format_until(record['expires'], time.time())}",
             f"ttl: {format_duration(record['ttl'])}"]
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
    reply = await call_api(client, op, args, waiting="publishing", quiet=ns.json)
    return _print_publication(ns, reply, verb)


def _print_publication(ns: argparse.Namespace, reply: dict[str, Any], verb: str) -> int:
    if ns.json:
        print_json(strip_reply(reply))
        return 0
    print(f"{verb} {reply['name']} (sequence {reply['sequence']}, "
          f"stored on {plural(reply['stored'], 'node')})")
    if reply.get("pow_ms"):
        print(f"proof of work: {reply['pow_ms'] / 1000:.1f} s")
    if reply.get("expires") is not None:
        print(f"valid {format_until(reply['expires'], time.time())}")
    if reply.get("republish_at") is not None:
        print(f"next republish: {_when(reply['republish_at'])}")
    return 0


async def _register(client: ApiClient, ns: argparse.Namespace) -> int:
    wait = SlowWait("registering", enabled=not ns.json, after=0.5)

    def on_event(event: dict[str, Any]) -> None:
        # The daemon starts the proof of work: say so, with this machine's
        # estimate of how long 2^bits hashes take.
        if event.get("event") == "pow_started" and isinstance(event.get("bits"), int):
            wait.what = f"proof of work ({event['bits']} bits)"
            if wait.line.enabled:
                wait.estimate = pow_estimate(event["bits"])

    interrupt = _Interrupt(client)
    try:
        with interrupt:
            async with wait:
                reply = await client.call("name_register",
                                          {"name": ns.name, **_target_args(ns)},
                                          on_event=on_event)
    except (ApiError, DaemonError, ApiProtocolError) as exc:
        if not interrupt.requested:
            raise
        if isinstance(exc, ApiError) and exc.code == "cancelled":
            print("cancelled: nothing was published", file=sys.stderr)
        else:
            print(f"interrupted; the daemon did not say whether {ns.name} was published "
                  f"({exc})", file=sys.stderr)
        return _EXIT_INTERRUPTED
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not interrupt.gave_up or task is None or task.uncancel() > 0:
            raise
        print(f"stopped waiting; the daemon may still publish {ns.name}", file=sys.stderr)
        return _EXIT_INTERRUPTED
    if interrupt.requested:
        _print_publication(ns, reply, "registered")
        print(f"interrupted, but {reply['name']} was already published", file=sys.stderr)
        return _EXIT_INTERRUPTED
    return _print_publication(ns, reply, "registered")


_EXIT_INTERRUPTED = 130


class _Interrupt:
    """Ctrl-C during a registration half-closes the API connection: the
    daemon then cancels the registration unless the record has already left
    it, and replies either way (docs/api.md, "Names").  A second Ctrl-C
    stops waiting for that reply."""

    def __init__(self, client: ApiClient) -> None:
        self._client = client
        self._task: asyncio.Task[Any] | None = None
        self.requested = False
        self.gave_up = False

    def __enter__(self) -> _Interrupt:
        self._task = asyncio.current_task()
        try:
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, self._on_sigint)
        except RuntimeError:
            # Not the main thread (the CLI run inside a program): Ctrl-C is
            # not ours to take.
            self._task = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGINT)

    def _on_sigint(self) -> None:
        if self.requested:
            self.gave_up = True
            if self._task is not None:
                self._task.cancel()
            return
        self.requested = True
        print("\ninterrupted: cancelling the registration (Ctrl-C again to stop waiting)",
              file=sys.stderr, flush=True)
        with contextlib.suppress(OSError):
            self._client.half_close()


async def _update(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_update", {"name": ns.name, **_target_args(ns)},
                          "updated")


async def _transfer(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_transfer",
                          {"name": ns.name, "new_owner": ns.new_owner}, "transferred")


async def _release(client: ApiClient, ns: argparse.Namespace) -> int:
    return await _publish(client, ns, "name_release", {"name": ns.name}, "released")


async def _resolve(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "name_resolve", {"name": ns.name, "no_cache": ns.no_cache},
                           waiting="resolving", quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
        return 0
    print(f"{reply['name']}  ({reply['source']}, {reply['elapsed_ms']} ms)")
    for line in _describe(reply["record"]):
        print(f"  {line}")
    if reply.get("vip6"):  # the daemon runs with --tun
        print(f"  virtual IPs: {reply.get('vip4') or '(IPv4 table full)'}  {reply['vip6']}")
    return 0


async def _list(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("name_list")
    names = reply.get("names", [])
    if ns.json:
        print_json(strip_reply(reply))
    elif not names:
        print("this node owns no names")
    else:
        now = time.time()
        print(f"{'name':32}  {'sequence':>20}  {'expires':32}  next republish")
        for entry in names:
            print(f"{entry['name']:32}  {entry['sequence']:>20}  "
                  f"{format_when(entry['expires'], now):32}  "
                  f"{format_when(entry['republish_at'], now)}")
    return 0


async def _connect(client: ApiClient, ns: argparse.Namespace) -> int:
    # The API connection becomes the stream's raw bytes after the reply.
    reply, reader, writer = await client._take_over(
        "name_connect", {"name": ns.name, "protocol": ns.protocol})
    # stderr, before any data: stdout carries only the stream's bytes.
    if ns.json:
        print(json.dumps({"event": "connected", **strip_reply(reply)}), file=sys.stderr,
              flush=True)
    else:
        print(f"connected to {reply['peer_id']} for {reply['name']} ({reply['protocol']})",
              file=sys.stderr, flush=True)

    async def downstream() -> None:
        out = sys.stdout.buffer
        with contextlib.suppress(ConnectionError):  # the verdict below says why
            while data := await reader.read(65536):
                out.write(data)
                out.flush()

    async with asyncio.TaskGroup() as group:
        up = group.create_task(_stdin_to(writer))
        await downstream()
        up.cancel()
    writer.close()
    await _stream_verdict(client, reply)
    return 0


async def _stream_verdict(client: ApiClient, reply: dict[str, Any]) -> None:
    """EOF on the API socket is all a broken stream looks like from here:
    ask the daemon how it really ended, so a cut transfer never exits 0."""
    pump_id = reply.get("pump_id")
    if not isinstance(pump_id, str):
        return  # a daemon from before stream_outcome: nothing to ask
    async with await ApiClient.connect(client.path) as api:
        verdict = await api.call("stream_outcome", {"pump_id": pump_id, "wait": 10})
    if verdict.get("state") == "broken":
        raise CliError(f"the stream to {reply.get('peer_id')} broke: {verdict.get('error')}")
    if verdict.get("state") != "ended":
        raise CliError(f"the stream to {reply.get('peer_id')} did not end within 10 s")


async def _stdin_to(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):  # a broken stream: the verdict says why
        await _copy_stdin(writer)


async def _copy_stdin(writer: asyncio.StreamWriter) -> None:
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

