"""Naming inside real daemons: API, DNS front and restart, over QUIC."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from dnslib import DNSRecord

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.errors import ListenFailed
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops_name import NameExtension, naming_extensions
from tests.namenet.helpers import FAST_HOST, FAST_KAD, FAST_NAMES, LOOPBACK


@asynccontextmanager
async def daemon(root: Path, bootstrap: tuple[str, ...] = (),
                 dns: tuple[str, int] = ("127.0.0.1", 0), dns_required: bool = True,
                 ) -> AsyncIterator[tuple[Daemon, NameExtension]]:
    home = Home(root)
    config = DaemonConfig(listen=(LOOPBACK,), bootstrap=bootstrap)
    key = init_home(home, config).key
    dht, names = naming_extensions(key, dns=dns, dns_required=dns_required,
                                   names=FAST_NAMES, kad=FAST_KAD)
    async with Daemon(home, config, key, host_config=FAST_HOST, extensions=[dht, names]) as d:
        if bootstrap:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        yield d, names


async def test_daemons_register_resolve_answer_dns_and_republish_after_restart(
        short_tmp: Path) -> None:
    async with asyncio.timeout(90), daemon(short_tmp / "d0") as (intro, _):
        boot = (intro.full_addrs()[0],)
        async with daemon(short_tmp / "d2", boot) as (reader, reader_names):
            async with daemon(short_tmp / "d1", boot) as (owner, _):
                async with await ApiClient.connect(owner.api_path) as api:
                    first = await api.call("name_register", {"name": "gina.ovl",
                                                             "ips": ["192.0.2.77"]})
                async with await ApiClient.connect(reader.api_path) as api:
                    got = await api.call("name_resolve", {"name": "gina.ovl"})
                    assert got["record"]["owner"] == str(owner.peer_id)
                assert reader_names.dns_address is not None
                query = DNSRecord.question("gina.ovl", "A")
                raw = await asyncio.to_thread(query.send, *reader_names.dns_address, False, 5)
                assert [str(rr.rdata) for rr in DNSRecord.parse(raw).rr] == ["192.0.2.77"]
            # The owner's daemon stops; a new one on the same home republishes.
            async with daemon(short_tmp / "d1", boot) as (owner, owner_names):
                assert owner_names.names is not None
                await owner_names.names.wait_republished(1)
                async with await ApiClient.connect(owner.api_path) as api:
                    listed = await api.call("name_list")
                    assert [n["name"] for n in listed["names"]] == ["gina.ovl"]
                    assert listed["names"][0]["sequence"] > first["sequence"]
                async with await ApiClient.connect(reader.api_path) as api:
                    again = await api.call("name_resolve", {"name": "gina.ovl",
                                                            "no_cache": True, "final": True})
                    assert again["record"]["sequence"] == listed["names"][0]["sequence"]
                    assert again["record"]["peers"][0]["addrs"] != \
                        got["record"]["peers"][0]["addrs"]


async def test_a_busy_dns_port_fails_only_when_it_was_asked_for(short_tmp: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))
        port = busy.getsockname()[1]
        async with asyncio.timeout(30):
            async with daemon(short_tmp / "a", dns=("127.0.0.1", port),
                              dns_required=False) as (_, names):
                assert names.names is not None and names.dns_address is None
            with pytest.raises(ListenFailed, match="cannot serve DNS"):
                async with daemon(short_tmp / "b", dns=("127.0.0.1", port)):
                    pass
