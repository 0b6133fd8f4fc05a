"""One op, one place: the argument schema (overlay/daemon/schema.py) is what
the server checks, what the CLI's option types check, and what docs/api.md
lists; the error registry is the one exception → code table."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.error_codes import CODES, error_code_for, exit_status_for
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops import NodeOpsConfig
from overlay.daemon.run import default_extensions
from overlay.daemon.schema import OPS, cli_type
from overlay.errors import OverlayError
from overlay.kad.service_errors import ValueNotFound
from overlay.naming.errors import InvalidName
from overlay.naming.net_errors import NameNotFound
from tests.daemon.helpers import LOOPBACK, REPO

ONLY_WITH_TUN = {"vip_status"}
"""Ops a test daemon cannot run (a TUN device needs root)."""


def documented_ops() -> dict[str, str]:
    """docs/api.md's op tables: op → its arguments cell."""
    rows: dict[str, str] = {}
    in_table = False
    for line in (REPO / "docs" / "api.md").read_text().splitlines():
        if line.startswith("| op | arguments |"):
            in_table = True
        elif in_table and line.startswith("|"):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            match = re.fullmatch(r"`([a-z_]+)`", cells[0])
            if match:
                assert match.group(1) not in rows, f"{match.group(1)} documented twice"
                rows[match.group(1)] = cells[1]
        else:
            in_table = False
    return rows


def test_every_op_is_documented_with_its_schema_arguments() -> None:
    docs = documented_ops()
    assert sorted(docs) == sorted(OPS)
    for op, cell in docs.items():
        # Backticked identifiers in the cell, less references to other ops.
        named = set(re.findall(r"`([a-z][a-z0-9_]*)`", cell)) - set(OPS)
        assert named == set(OPS[op].by_name), f"docs/api.md's `{op}` row"


async def test_every_op_of_a_real_daemon_has_a_schema(short_tmp: Path) -> None:
    home = Home(short_tmp / "d")
    config = DaemonConfig(listen=(LOOPBACK,), dns="off", mdns=False, upnp=False)
    key = init_home(home, config).key
    async with asyncio.timeout(60), Daemon(
            home, config, key, extensions=default_extensions(key, config)) as daemon:
        registered = set(daemon.api.ops)
    assert registered == set(OPS) - ONLY_WITH_TUN


def test_bounds_copied_from_subsystems_match_them() -> None:
    from overlay.rendezvous import MAX_TTL

    assert OPS["rendezvous_register"].arg("ttl").maximum == MAX_TTL
    assert OPS["ping"].arg("count").maximum == NodeOpsConfig().max_ping_count
    assert OPS["ping"].arg("interval_ms").maximum == NodeOpsConfig().max_ping_interval_ms


class Recorder:
    def __init__(self) -> None:
        self.calls: list[Mapping[str, Any]] = []

    async def handle(self, call: ApiCall) -> Mapping[str, Any]:
        self.calls.append(dict(call.args))
        return {}


@pytest.mark.parametrize(("op", "args", "code", "names"), [
    ("dht_find_providers", {"key": "k", "limit": 0}, "bad_request", "`limit`"),
    ("dht_find_providers", {"key": "k", "limit": "5"}, "bad_request", "`limit`"),
    ("dht_find_providers", {}, "bad_request", "`key`"),
    ("rendezvous_register", {"ns": "x", "ttl": 72 * 3600 + 1}, "bad_request", "`ttl`"),
    ("name_register", {"name": "a.ovl", "ttl": -1}, "bad_request", "`ttl`"),
    ("name_resolve", {"name": "a.ovl", "no_cache": "yes"}, "bad_request", "`no_cache`"),
    ("name_connect", {"name": "a.ovl", "protocol": "echo"}, "bad_request", "`protocol`"),
    ("stream_open", {"peer": "nope", "protocols": ["/a/1"]}, "invalid_peer_id", ""),
    ("ping", {"addr": "/ip4/1.2.3.4/tcp/1"}, "invalid_multiaddr", ""),
    ("stats", {"verbose": True}, "bad_request", "verbose"),
])
async def test_the_server_checks_the_schema_before_the_handler(
        short_tmp: Path, op: str, args: dict[str, Any], code: str, names: str) -> None:
    recorder = Recorder()
    async with asyncio.timeout(10), ApiServer(short_tmp / "api.sock") as server:
        server.register(op, recorder.handle)
        async with await ApiClient.connect(server.path) as client:
            with pytest.raises(ApiError) as info:
                await client.call(op, args)
            assert info.value.code == code and names in info.value.message
            assert recorder.calls == []
            good = {"dht_find_providers": {"key": "k", "limit": 100}}.get(op)
            if good is not None:
                await client.call(op, good)  # the same connection goes on serving
                assert recorder.calls == [good]


def test_the_cli_types_come_from_the_schema() -> None:
    limit = cli_type("dht_find_providers", "limit")
    assert limit("100") == 100
    for bad in ("0", "101", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            limit(bad)
    protocol = cli_type("name_connect", "protocol")
    assert protocol("/echo/1.0.0") == "/echo/1.0.0"
    with pytest.raises(argparse.ArgumentTypeError, match="protocol ID"):
        protocol("echo")
    ttl = cli_type("name_register", "ttl")
    assert ttl("0") == 0
    with pytest.raises(argparse.ArgumentTypeError):
        ttl(str(7 * 24 * 3600 + 1))


def test_the_error_registry_names_codes_and_exit_statuses() -> None:
    assert error_code_for(NameNotFound("a.ovl")) == "name_not_found"
    assert error_code_for(InvalidName("ldh", "a_b.ovl", "letters, digits, hyphens")) == "invalid_name"
    assert error_code_for(ValueNotFound(b"/v/x")) == "not_found"
    assert error_code_for(ApiError("no_rendezvous_point", "none")) == "no_rendezvous_point"
    assert error_code_for(OverlayError("?")) == "failed"
    assert exit_status_for("invalid_name") == 2
    assert exit_status_for("name_not_found") == exit_status_for("not_found") == 4
    assert exit_status_for("dial_failed") == 1
    # A subclass listed after its base would never be reached.
    for i, (cls, _) in enumerate(CODES):
        for base, _ in CODES[:i]:
            assert not issubclass(cls, base), f"{cls.__name__} is shadowed by {base.__name__}"


async def test_an_absent_argument_is_its_schema_default(short_tmp: Path) -> None:
    async def handler(call: ApiCall) -> Mapping[str, Any]:
        return {"limit": call.arg("limit")}

    async with asyncio.timeout(10), ApiServer(short_tmp / "api.sock") as server:
        server.register("dht_find_providers", handler)
        async with await ApiClient.connect(server.path) as client:
            assert (await client.call("dht_find_providers", {"key": "k"}))["limit"] == 20
            assert (await client.call("dht_find_providers", {"key": "k", "limit": None}))["limit"] == 20
            assert (await client.call("dht_find_providers", {"key": "k", "limit": 7}))["limit"] == 7


def test_only_protocols_takes_a_bare_string_for_a_list() -> None:
    from overlay.daemon.errors import BadRequest
    from overlay.daemon.schema import validate

    validate("stream_open", {"peer": None, "protocols": "/echo/1.0.0"})
    with pytest.raises(BadRequest, match="`ips`"):
        validate("name_update", {"name": "a.ovl", "ips": "10.0.0.1"})


def test_every_error_code_is_documented() -> None:
    from overlay.daemon.error_codes import DhtErrorCode, NameErrorCode, RendezvousErrorCode
    from overlay.daemon.protocol import ErrorCode

    documented: set[str] = set()
    in_table = False
    for line in (REPO / "docs" / "api.md").read_text().splitlines():
        if line.startswith("| code | meaning |"):
            in_table = True
        elif in_table and line.startswith("|"):
            match = re.match(r"\| `([a-z_]+)` \|", line)
            if match:
                documented.add(match.group(1))
        else:
            in_table = False
    codes = {code for _, code in CODES}
    for group in (ErrorCode, NameErrorCode, DhtErrorCode, RendezvousErrorCode):
        codes |= {value for key, value in vars(group).items() if key.isupper()}
    assert codes == documented
