"""`overlay dht …`: put, get, find-peer, provide, find-providers and table,
each one request to the daemon's stream API (``dht_*`` ops).

Exit codes follow `overlay`'s (0 ok, 1 failed, 2 usage, 3 no daemon), plus
4 when the DHT answered that nothing was found (no record, no address, no
provider): scripts can tell "absent" from "broken".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home

__all__ = ["EXIT_NOT_FOUND", "add_dht_parser", "run_api_action", "run_dht"]

EXIT_NOT_FOUND = 4


def add_dht_parser(
    sub: Any, parents: list[argparse.ArgumentParser], json_parent: argparse.ArgumentParser
) -> None:
    """Add `dht` and its actions to the `overlay` subparsers ``sub``;
    ``parents`` carry --home, ``json_parent`` adds --json."""
    p = sub.add_parser("dht", parents=parents, help="the Kademlia DHT (put, get, find-peer …)")
    actions = p.add_subparsers(dest="dht_action", metavar="ACTION", parser_class=type(p))
    actions.required = True
    both = [*parents, json_parent]

    a = actions.add_parser("put", parents=both,
                           help="store an immutable value; prints its key /v/<sha256>")
    a.add_argument("value", metavar="VALUE", help="the value (UTF-8 text)")
    a = actions.add_parser("get", parents=both, help="read the value stored under KEY")
    a.add_argument("key", metavar="KEY", help="a record key such as /v/<sha256 hex>")
    a = actions.add_parser("find-peer", parents=both, help="find a peer's addresses by its ID")
    a.add_argument("peer", metavar="PEERID")
    a = actions.add_parser("provide", parents=both, help="announce that this node provides KEY")
    a.add_argument("key", metavar="KEY", help="a /v/<sha256 hex> key or any text")
    a = actions.add_parser("find-providers", parents=both, help="find the providers of KEY")
    a.add_argument("key", metavar="KEY")
    a.add_argument("--limit", type=int, default=20, metavar="N",
                   help="at most N providers (1-100, default 20)")
    actions.add_parser("table", parents=both, help="routing-table bucket occupancy")
    p.set_defaults(run=run_dht)


def run_dht(ns: argparse.Namespace, home: Home) -> int:
    return run_api_action(home, _HANDLERS[ns.dht_action], ns, f"overlay dht {ns.dht_action}", "not_found")


def run_api_action(
    home: Home,
    action: Callable[[ApiClient, argparse.Namespace], Awaitable[int]],
    ns: argparse.Namespace,
    label: str,
    not_found_code: str,
) -> int:
    """Run one API-backed subcommand; a not-found reply exits 4 so scripts
    can tell "no such key/name" from a failure."""
    from overlay.cli import _api_socket  # the CLI's own socket lookup

    async def go() -> int:
        async with await ApiClient.connect(_api_socket(home)) as client:
            try:
                return await action(client, ns)
            except ApiError as exc:
                if exc.code != not_found_code:
                    raise
                print(f"{label}: {exc.message} [{exc.code}]", file=sys.stderr)
                return EXIT_NOT_FOUND

    return asyncio.run(go())


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True), flush=True)


def _strip(reply: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in reply.items() if k not in ("id", "ok")}


async def _put(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_put", {"value": ns.value})
    if ns.json:
        _print_json(_strip(reply))
    else:
        print(reply["key"])
        print(f"stored on {reply['replicas']} peers", file=sys.stderr)
    return 0


async def _get(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_get", {"key": ns.key})
    if ns.json:
        _print_json(_strip(reply))
    elif "value" in reply:
        print(reply["value"])
    else:
        print(f"(binary value, base64) {reply['value_base64']}")
    return 0


async def _find_peer(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_find_peer", {"peer": ns.peer})
    if ns.json:
        _print_json(_strip(reply))
    else:
        for addr in reply["addrs"]:
            print(addr)
    return 0


async def _provide(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_provide", {"key": ns.key})
    if ns.json:
        _print_json(_strip(reply))
    else:
        print(f"providing {reply['key']} (announced to {reply['peers']} peers)")
    return 0


async def _find_providers(client: ApiClient, ns: argparse.Namespace) -> int:
    if not 1 <= ns.limit <= 100:
        print("overlay dht find-providers: --limit must be between 1 and 100", file=sys.stderr)
        return 2
    reply = await client.call("dht_find_providers", {"key": ns.key, "limit": ns.limit})
    if ns.json:
        _print_json(_strip(reply))
    else:
        for provider in reply["providers"]:
            addrs = " ".join(provider["addrs"]) or "(no address)"
            print(f"{provider['peer_id']}  {addrs}")
    return 0


async def _table(client: ApiClient, ns: argparse.Namespace) -> int:
    reply = await client.call("dht_table")
    if ns.json:
        _print_json(_strip(reply))
        return 0
    print(f"{reply['protocol']} ({reply['mode']} mode), {reply['size']} peers, "
          f"k={reply['k']}, {reply['records']} records")
    if not reply["buckets"]:
        print("routing table is empty")
    else:
        print(f"{'bucket':>6}  {'cpl':>3}  {'peers':>5}  {'cache':>5}  checking")
        for bucket in reply["buckets"]:
            print(f"{bucket['index']:>6}  {bucket['common_prefix_length']:>3}  "
                  f"{bucket['size']:>5}  {bucket['replacements']:>5}  "
                  f"{'yes' if bucket['pending_check'] else ''}")
    return 0


_HANDLERS: dict[str, Callable[[ApiClient, argparse.Namespace], Awaitable[int]]] = {
    "put": _put,
    "get": _get,
    "find-peer": _find_peer,
    "provide": _provide,
    "find-providers": _find_providers,
    "table": _table,
}
