"""UPnP in the daemon and the driver: a loopback-only daemon never starts
it (no route read, no SSDP), the config key and flag, and ``PortMapper``
against the lab's IGD (interop/netns/igd_server.py) served over loopback
HTTP with its nftables calls recorded instead of made."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.errors import ConfigError
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.nat.daemon_ext import NatExtension
from overlay.nat.upnp import IgdCallFailed, PortMapper
from overlay.nat.upnp_core import UpnpConfig
from overlay.nat.upnp_ext import UpnpExtension
from tests.daemon.helpers import LOOPBACK, DaemonProcess, cli_command

IGD_SERVER = Path(__file__).resolve().parents[2] / "interop" / "netns" / "igd_server.py"


class Never:
    """Stands for discovery and the routing table; records any call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def __call__(self, *args: Any) -> Any:
        self.calls.append(args)
        raise AssertionError("UPnP must not run on a loopback-only node")


async def test_a_loopback_only_daemon_starts_no_upnp(tmp_path: Path) -> None:
    home = Home(tmp_path / "a")
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    discover, gateway = Never(), Never()
    upnp = UpnpExtension(discover=discover, gateway=gateway)
    async with Daemon(home, config, key, extensions=[NatExtension(), upnp]) as daemon:
        async with await ApiClient.connect(daemon.api_path) as client:
            reply = await client.call("nat_status")
    assert discover.calls == [] and gateway.calls == []
    assert upnp.mapper is None and upnp.mapped_addrs() == []
    assert reply["upnp"]["running"] is False
    assert reply["upnp"]["reason"] == "listening on loopback or IPv6 only"
    assert not any("upnp" in a["sources"] for a in reply["public_addrs"])


async def test_upnp_false_in_the_config_turns_it_off(tmp_path: Path) -> None:
    home = Home(tmp_path / "a")
    config = DaemonConfig(listen=(LOOPBACK,), upnp=False)
    key = init_home(home, config).key
    upnp = UpnpExtension(discover=Never(), gateway=Never())
    async with Daemon(home, config, key, extensions=[upnp]):
        assert upnp.decision is not None and upnp.decision.reason == "turned off (upnp = false)"
    with pytest.raises(ConfigError, match="upnp"):
        DaemonConfig(upnp="yes")  # type: ignore[arg-type]


def test_no_upnp_flag_reaches_the_config() -> None:
    from overlay.cli import build_parser

    ns = build_parser().parse_args(["daemon", "--no-upnp"])
    assert ns.upnp is False
    assert build_parser().parse_args(["daemon"]).upnp is None


# -- the driver against the lab IGD over loopback ---------------------------

def _load_igd() -> ModuleType:
    spec = importlib.util.spec_from_file_location("igd_server_under_test", IGD_SERVER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def igd() -> AsyncIterator[tuple[ModuleType, str]]:
    """The IGD's HTTP side only (no SSDP: that would multicast), with
    AddPortMapping/DeletePortMapping recorded instead of applied."""
    module = _load_igd()

    class RecordingRules(module.Rules):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__("public", "127.0.0.0/8")
            self.log: list[tuple[str, ...]] = []

        def add(self, proto: str, ext_port: int, client: str, int_port: int) -> None:
            self.handles[(proto, ext_port)] = len(self.log)
            self.log.append(("add", proto, str(ext_port), f"{client}:{int_port}"))

        def delete(self, proto: str, ext_port: int) -> bool:
            if self.handles.pop((proto, ext_port), None) is None:
                return False
            self.log.append(("delete", proto, str(ext_port)))
            return True

    module.RULES = RecordingRules()
    module.WAN_IP = "203.0.113.1"
    port = _free_port()
    server = module.UpnpServer(module.Gateway, ("127.0.0.1", 0), http_port=port)
    # The HTTP half of UpnpServer.async_start (private in the library).
    server._create_device()
    await server._async_start_http_server()
    try:
        yield module, f"http://127.0.0.1:{port}/igd.xml"
    finally:
        await server._async_stop_http_server()


async def test_port_mapper_maps_renews_and_deletes(
        igd: tuple[ModuleType, str]) -> None:
    module, location = igd
    asked: list[tuple[str, float]] = []

    async def discover(lan_ip: str, timeout: float) -> str:
        asked.append((lan_ip, timeout))
        return location

    mapper = PortMapper("127.0.0.1", 40001, UpnpConfig(lease=600), discover=discover)
    async with mapper.running():
        await asyncio.wait_for(mapper.attempted.wait(), 10)
        assert mapper.mapping is not None, mapper.schedule.last_error
        assert mapper.mapping.multiaddr == "/ip4/203.0.113.1/udp/40001/quic-v1"
        assert mapper.location == location
        renewed = await mapper.map_once()  # what the schedule does at half the lease
        assert renewed.lease == 600
    assert asked == [("127.0.0.1", 3.0)]  # discovered once, reused for the renewal
    assert module.RULES.log == [("add", "UDP", "40001", "127.0.0.1:40001"),
                                ("add", "UDP", "40001", "127.0.0.1:40001"),
                                ("delete", "UDP", "40001")]
    assert mapper.schedule.mapping is None


async def test_a_refused_mapping_is_a_typed_error(
        igd: tuple[ModuleType, str]) -> None:
    _, location = igd

    async def discover(lan_ip: str, timeout: float) -> str:
        return location

    # 10.0.1.10 is outside the IGD's LAN (127.0.0.0/8 here): 402 Invalid Args.
    mapper = PortMapper("10.0.1.10", 40001, UpnpConfig(), discover=discover)
    with pytest.raises(IgdCallFailed, match="AddPortMapping"):
        await mapper.map_once()



def test_overlay_daemon_reports_why_upnp_is_off(tmp_path: Path) -> None:
    """The shipped daemon (default extensions, real CLI): on loopback UPnP
    stays off and says why; ``--no-upnp`` says so instead."""
    reasons = []
    for name, extra in (("a", ()), ("b", ("--no-upnp",))):
        with DaemonProcess(tmp_path / name, "--dns", "off", "--no-mdns", *extra) as node:
            done = subprocess.run(cli_command("--home", str(node.home), "nat", "--json"),
                                  capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            reasons.append(json.loads(done.stdout)["upnp"])
    assert [r["running"] for r in reasons] == [False, False]
    assert [r["reason"] for r in reasons] == ["listening on loopback or IPv6 only",
                                              "turned off (upnp = false)"]
