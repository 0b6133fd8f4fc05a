"""`overlay dht …`: put, get, find-peer, provide, find-providers and table,
each one request to the daemon's stream API (``dht_*`` ops).

Exit codes are `overlay`'s: 4 when the DHT answered that nothing was found
(no record, no address, no provider), so scripts can tell "absent" from
"broken"; 2 for a malformed key, peer ID or a value over the limit.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    Parents,
    UsageError,
    add_command,
    call_api,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.cli.core import peer_id_arg
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.daemon.schema import cli_type
from overlay.kad.errors import InvalidRecord
from overlay.kad.records import immutable_key, namespace_of
from overlay.kad.store import StoreConfig

__all__ = ["MAX_VALUE_BYTES", "add_dht_parser", "read_value", "check_key"]

MAX_VALUE_BYTES = StoreConfig().max_record_bytes - len(immutable_key(b""))
"""The daemon's `dht_put` limit (``ops_dht.MAX_VALUE_BYTES``): the store
holds 10 KiB of key plus value and the ``/v/<sha256>`` key takes 67."""

_HEX = frozenset("0123456789abcdef")


def check_key(text: str) -> str:
    """An argparse type: a record key ``/<namespace>/<rest>``; a ``/v/`` key
    must be 64 lowercase hex digits."""
    try:
        namespace = namespace_of(text.encode("utf-8"))
    except InvalidRecord as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a record key: {exc} (such as /v/<sha256 hex>)") from None
    rest = text[len(namespace) + 2:]
    if not rest:
        raise argparse.ArgumentTypeError(f"{text!r} is not a record key: nothing after "
                                         f"/{namespace}/")
    if namespace == "v" and (len(rest) != 64 or not set(rest) <= _HEX):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a /v/ key: it needs 64 lowercase hex digits (a SHA-256)")
    return text


def _provider_text(text: str) -> str:
    if not text or len(text.encode("utf-8")) > 1024:
        raise argparse.ArgumentTypeError("KEY must be 1 to 1024 bytes")
    return text


def add_dht_parser(sub: Any, parents: Parents) -> None:
    """Add `dht` and its actions to the `overlay` subparsers ``sub``."""
    p = add_command(sub, "dht", parents=parents.pick(json=False),
                    help="the Kademlia DHT (put, get, find-peer …)",
                    description="Store and find values, peers and providers in the "
                                "Kademlia DHT through the running daemon.",
                    examples=["overlay dht put 'hello'", "overlay dht table"])
    actions = p.add_subparsers(dest="dht_action", metavar="ACTION", parser_class=type(p))
    both = parents.pick()

    a = add_command(actions, "put", parents=both, run=_run(_put, _prepare_put),
                    help="store an immutable value; prints its key /v/<sha256>",
                    description="Store an immutable value in the DHT under the key "
                                "/v/<sha256 hex of the value>, printed on stdout.  The value "
                                f"is 1 to {MAX_VALUE_BYTES:,} bytes (the 10 KiB record limit "
                                "less the 67-byte key), taken exactly as given: from the "
                                "argument (UTF-8), a file (-f) or stdin (-).",
                    examples=["overlay dht put 'hello world'",
                              "overlay dht put -f photo.jpg",
                              "tar c notes | overlay dht put -"])
    a.add_argument("value", metavar="VALUE", nargs="?",
                   help="the value as UTF-8 text, or - to read raw bytes from stdin")
    a.add_argument("-f", "--file", metavar="FILE",
                   help="read the value's raw bytes from FILE instead")

    a = add_command(actions, "get", parents=both, run=_run(_get, _prepare_get),
                    help="read the value stored under KEY",
                    description="Find the value stored under KEY and print it (text), or "
                                "write its exact bytes to a file with -o.  Exits 4 if no "
                                "peer has it.",
                    examples=["overlay dht get /v/<sha256 hex>",
                              "overlay dht get -o photo.jpg /v/<sha256 hex>"])
    a.add_argument("key", metavar="KEY", type=check_key,
                   help="a record key such as /v/<sha256 hex>")
    a.add_argument("-o", "--output", metavar="FILE",
                   help="write the raw value to FILE (- for stdout) instead of printing text")

    a = add_command(actions, "find-peer", parents=both, run=_run(_find_peer),
                    help="find a peer's addresses by its ID",
                    description="Ask the DHT for a peer's addresses, one a line.  Exits 4 "
                                "if none are found.",
                    examples=["overlay dht find-peer 12D3KooW…"])
    a.add_argument("peer", metavar="PEERID", type=peer_id_arg, help="the peer's ID")

    a = add_command(actions, "provide", parents=both, run=_run(_provide),
                    help="announce that this node provides KEY",
                    description="Announce to the peers closest to KEY that this node "
                                "provides it.",
                    examples=["overlay dht provide my-service"])
    a.add_argument("key", metavar="KEY", type=_provider_text,
                   help="a /v/<sha256 hex> key or any text")

    a = add_command(actions, "find-providers", parents=both,
                    run=_run(_find_providers),
                    help="find the providers of KEY",
                    description="List the peers that announced KEY, with their "
                                "addresses.  Exits 4 if there are none.",
                    examples=["overlay dht find-providers my-service --limit 5"])
    a.add_argument("key", metavar="KEY", type=_provider_text,
                   help="a /v/<sha256 hex> key or any text, as given to `provide`")
    a.add_argument("--limit", type=cli_type("dht_find_providers", "limit"), default=20, metavar="N",
                   help="at most N providers (1-100, default 20)")

    add_command(actions, "table", parents=both, run=_run(_table),
                help="routing-table bucket occupancy",
                description="Show the routing table: mode, size and each bucket's "
                            "peers and replacement cache.",
                examples=["overlay dht table", "overlay dht table --json"])


Action = Callable[[ApiClient, argparse.Namespace], Awaitable[int]]


def _run(action: Action,
         prepare: Callable[[argparse.Namespace], None] | None = None,
         ) -> Callable[[argparse.Namespace, Home], int]:
    """``prepare(ns)`` checks local input first: bad input exits 2 without
    a daemon."""
    def run(ns: argparse.Namespace, home: Home) -> int:
        if prepare is not None:
            prepare(ns)

        async def body(client: ApiClient) -> int:
            return await action(client, ns)
        return run_api(home, body)
    return run


def _prepare_put(ns: argparse.Namespace) -> None:
    ns.data = read_value(ns)


def _prepare_get(ns: argparse.Namespace) -> None:
    if ns.output is not None and ns.output != "-":
        parent = os.path.dirname(os.path.abspath(ns.output))
        if not os.path.isdir(parent):
            raise UsageError(f"cannot write {ns.output}: no directory {parent}")


def read_value(ns: argparse.Namespace) -> bytes:
    """The bytes to store, from VALUE, -f FILE or stdin; checked against
    the limit before the daemon is asked."""
    if (ns.value is None) == (ns.file is None):
        raise UsageError("give the value as VALUE, `-` (stdin) or -f FILE (exactly one)")
    if ns.file is not None:
        try:
            with open(ns.file, "rb") as handle:
                data = handle.read(MAX_VALUE_BYTES + 1)
        except OSError as exc:
            raise UsageError(f"cannot read {ns.file}: {exc.strerror or exc}") from None
    elif ns.value == "-":
        data = sys.stdin.buffer.read(MAX_VALUE_BYTES + 1)
    else:
        data = ns.value.encode("utf-8", errors="surrogateescape")
    if not data:
        raise UsageError("the value is empty")
    if len(data) > MAX_VALUE_BYTES:
        size = f"{len(data):,}" if ns.value not in ("-", None) else f"more than {MAX_VALUE_BYTES:,}"
        raise UsageError(f"the value is {size} bytes; the limit is {MAX_VALUE_BYTES:,} bytes")
    return data


async def _put(client: ApiClient, ns: argparse.Namespace) -> int:
    data: bytes = ns.data
    reply = await call_api(client, "dht_put", {"value_base64": base64.b64encode(data).decode()},
                           waiting="storing", quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
    else:
        print(reply["key"], flush=True)
        print(f"stored on {plural(reply['replicas'], 'peer')}", file=sys.stderr)
    return EXIT_OK


def _write_output(path: str, data: bytes) -> None:
    if path == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    from overlay.fsutil import atomic_write

    atomic_write(path, data, mode=0o644)


async def _get(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "dht_get", {"key": ns.key}, waiting="looking up",
                           quiet=ns.json)
    data = base64.b64decode(reply["value_base64"])
    if ns.output is not None:
        _write_output(ns.output, data)
        if ns.json:
            print_json({"key": reply["key"], "bytes": len(data), "output": ns.output},
                       out=sys.stderr if ns.output == "-" else None)
        elif ns.output != "-":
            print(f"wrote {plural(len(data), 'byte')} to {ns.output}", file=sys.stderr)
    elif ns.json:
        print_json(strip_reply(reply))
    elif "value" in reply:
        print(reply["value"])
    elif not sys.stdout.isatty():
        _write_output("-", data)
    else:
        raise UsageError(f"the value is {plural(len(data), 'byte')} of binary data; "
                         "write it with -o FILE or redirect stdout")
    return EXIT_OK


async def _find_peer(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "dht_find_peer", {"peer": ns.peer}, waiting="looking up",
                           quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
    else:
        for addr in reply["addrs"]:
            print(addr)
    return EXIT_OK


async def _provide(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "dht_provide", {"key": ns.key}, waiting="announcing",
                           quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
    else:
        print(f"providing {reply['key']} (announced to {plural(reply['peers'], 'peer')})")
    return EXIT_OK


async def _find_providers(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await call_api(client, "dht_find_providers", {"key": ns.key, "limit": ns.limit},
                           waiting="looking up", quiet=ns.json)
    if ns.json:
        print_json(strip_reply(reply))
    else:
        for provider in reply["providers"]:
            addrs = " ".join(provider["addrs"]) or "(no address)"
            print(f"{provider['peer_id']}  {addrs}")
    return EXIT_OK


async def _table(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_table")
    if ns.json:
        print_json(strip_reply(reply))
        return EXIT_OK
    print(f"{reply['protocol']} ({reply['mode']} mode), {plural(reply['size'], 'peer')}, "
          f"k={reply['k']}, {plural(reply['records'], 'record')}")
    if not reply["buckets"]:
        print("routing table is empty")
    else:
        print(f"{'bucket':>6}  {'cpl':>3}  {'peers':>5}  {'cache':>5}  checking")
        for bucket in reply["buckets"]:
            print(f"{bucket['index']:>6}  {bucket['common_prefix_length']:>3}  "
                  f"{bucket['size']:>5}  {bucket['replacements']:>5}  "
                  f"{'yes' if bucket['pending_check'] else ''}")
    return EXIT_OK
