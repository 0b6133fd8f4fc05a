"""AutoNAT v2 in the daemon: with ``autonat = "lab"`` a node connected to
another learns that its loopback listen address is reachable, and the
``identity``, ``status`` and ``autonat_status`` ops say so."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.errors import ConfigError
from overlay.nat.autonat_ext import AutoNATExtension
from overlay.nat.reachability import Reachability, ReachabilityState
from tests.daemon.helpers import LOOPBACK


async def test_lab_daemons_confirm_each_other(tmp_path: Path) -> None:
    homes = [Home(tmp_path / "a"), Home(tmp_path / "b")]
    config = DaemonConfig(listen=(LOOPBACK,), autonat="lab", mdns=False)
    keys = [init_home(home, config).key for home in homes]
    ext_a, ext_b = AutoNATExtension(), AutoNATExtension()
    async with Daemon(homes[0], config, keys[0], extensions=[ext_a]) as a, \
            Daemon(homes[1], config, keys[1], extensions=[ext_b]) as b:
        assert ext_b.service is not None
        public = asyncio.Event()

        def changed(state: ReachabilityState) -> None:
            if state.reachability is Reachability.PUBLIC:
                public.set()
        ext_b.service.on_change(changed)
        async with await ApiClient.connect(b.api_path) as client:
            before = await client.call("identity")
            await b.host.connect(f"{a.host.listen_addrs()[0]}/p2p/{a.host.peer_id}")
            async with asyncio.timeout(20):
                await public.wait()
            after = await client.call("identity")
            status = await client.call("status")
            detail = await client.call("autonat_status")
    assert before["reachability"] == "unknown"
    assert after["reachability"] == "public"
    own = str(b.host.listen_addrs()[0])
    assert after["reachability_reasons"] == [f"{own} dialled back by 1 server"]
    assert status["autonat"] == f"public via {own}; serving"
    assert detail["confirmed_addrs"] == [own] and detail["lab"] is True
    [entry] = [e for e in detail["addresses"] if e["addr"] == own]
    assert entry["confirmed_by"] == [str(a.host.peer_id)]


async def test_autonat_off_runs_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path / "off")
    config = DaemonConfig(listen=(LOOPBACK,), autonat="off", mdns=False)
    key = init_home(home, config).key
    ext = AutoNATExtension()
    async with Daemon(home, config, key, extensions=[ext]) as node:
        assert ext.service is None
        assert "/libp2p/autonat/2/dial-request" not in node.host.protocols()
        async with await ApiClient.connect(node.api_path) as client:
            reply = await client.call("identity")
            with pytest.raises(Exception, match="not running"):
                await client.call("autonat_status")
    assert reply["reachability"] == "unknown"


def test_bad_autonat_value_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="autonat"):
        DaemonConfig(autonat="maybe")
