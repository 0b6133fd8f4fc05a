"""mDNS in the daemon, on loopback only: which interfaces it would use, that
a daemon listening on 127.0.0.1 starts no mDNS at all, and how it is
switched off.  Nothing here multicasts: the tests that do live in
interop/test_netns_mdns.py and run inside network namespaces."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any, NoReturn

import pytest
from multiaddr import Multiaddr

from overlay.cli import EXIT_USAGE, main
from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig, parse_config
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.errors import ConfigError
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mdns import MdnsConfig, mdns_addresses
from overlay.mdns import driver
from overlay.mdns.daemon_ext import MdnsExtension
from overlay.mdns.driver import MdnsService, zeroconf_tasks
from tests.daemon.helpers import LOOPBACK, DaemonProcess, cli_command


@pytest.fixture
def no_zeroconf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything creates a zeroconf instance (a multicast socket)."""

    def refuse(*args: Any, **kwargs: Any) -> NoReturn:
        raise AssertionError("zeroconf was started")

    monkeypatch.setattr(driver, "AsyncZeroconf", refuse)
    monkeypatch.setattr(driver, "AsyncServiceBrowser", refuse)


def test_mdns_runs_only_on_non_loopback_listen_addresses() -> None:
    assert mdns_addresses([LOOPBACK, "/ip6/::1/udp/1/quic-v1"]) == []
    assert mdns_addresses([
        "/ip4/127.0.0.1/udp/1/quic-v1", "/ip4/10.0.0.7/udp/1/quic-v1",
        "/ip4/10.0.0.7/udp/2/quic-v1", "/ip4/0.0.0.0/udp/1/quic-v1",
        "/ip6/fe80::1/udp/1/quic-v1", "/ip6/fd00::7/udp/1/quic-v1",
        Multiaddr("/ip4/192.0.2.7/udp/1/quic-v1"), "/dns4/example.org/udp/1/quic-v1",
        "/ip4/10.0.0.8/tcp/1",
    ]) == ["10.0.0.7", "fd00::7", "192.0.2.7"]


@pytest.mark.parametrize("name", ["resolve_timeout", "dial_timeout", "address_check_interval",
                                  "shutdown_timeout"])
def test_mdns_config_is_validated(name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MdnsConfig(**{name: 0})  # type: ignore[arg-type]


async def test_service_on_loopback_opens_nothing(no_zeroconf: None) -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    found: list[object] = []
    async with MdnsService(peer, lambda: [Multiaddr(LOOPBACK)], lambda n, s: found.append(s),
                           lambda n: found.append(n)) as service:
        assert not service.active and service.interfaces == []
        assert zeroconf_tasks() == []
    assert found == [] and zeroconf_tasks() == []


async def _status(config: DaemonConfig, root: Path) -> tuple[dict[str, Any], str]:
    """The status reply and the extension's state while the daemon ran."""
    home = Home(root)
    key = init_home(home, config).key
    extension = MdnsExtension()
    async with Daemon(home, config, key, extensions=[extension]) as daemon:
        state = extension.state
        async with await ApiClient.connect(daemon.api_path) as client:
            status = await client.call("status")
    assert extension.service is None
    return dict(status), state


async def test_daemon_on_loopback_starts_no_mdns(tmp_path: Path, no_zeroconf: None) -> None:
    status, state = await _status(DaemonConfig(listen=(LOOPBACK,)), tmp_path)
    assert state == "loopback"
    assert status["mdns"] == "off (listening on loopback only)"
    assert zeroconf_tasks() == []


async def test_daemon_with_mdns_false_starts_no_mdns(tmp_path: Path, no_zeroconf: None) -> None:
    status, state = await _status(DaemonConfig(listen=(LOOPBACK,), mdns=False), tmp_path)
    assert state == "disabled" and status["mdns"] == "off"


def test_config_key_mdns() -> None:
    assert DaemonConfig().mdns is True
    assert parse_config({"version": 1, "mdns": False}).mdns is False
    with pytest.raises(ConfigError, match="mdns"):
        parse_config({"version": 1, "mdns": "no"})


def test_config_set_mdns(tmp_path: Path) -> None:
    home = ["--home", str(tmp_path)]
    assert main([*home, "init"]) == 0
    assert main([*home, "config", "set", "mdns", "false"]) == 0
    assert "mdns = false" in (tmp_path / "config.toml").read_text()
    assert main([*home, "config", "set", "mdns", "off"]) == EXIT_USAGE


def _status_of(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command("--home", str(daemon.home), "status", *args),
                          capture_output=True, text=True, timeout=60, check=False)


def test_daemon_flag_no_mdns_and_status_line(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "a") as plain, DaemonProcess(tmp_path / "b", "--no-mdns") as off:
        shown = _status_of(plain)
        assert shown.returncode == 0, shown.stderr
        assert "mdns:         off (listening on loopback only)" in shown.stdout
        reply = json.loads(_status_of(off, "--json").stdout)
        assert reply["mdns"] == "off"
        plain.stop()
        off.stop()


class _FakeZeroconf:
    """Records what the service asks of zeroconf; sends nothing."""

    def __init__(self) -> None:
        self.updates: list[bytes] = []
        self.interfaces: list[list[str]] = []

    async def _done(self) -> None:
        return None

    async def async_update_service(self, info: Any) -> Any:
        self.updates.append(info.text)
        return self._done()

    async def async_update_interfaces(self, interfaces: list[str], ip_version: Any) -> None:
        self.interfaces.append(interfaces)


async def test_changed_listen_addresses_are_announced_again() -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    listen = [Multiaddr("/ip4/10.0.0.7/udp/4001/quic-v1"), Multiaddr(LOOPBACK)]
    service = MdnsService(peer, lambda: listen, lambda n, s: None, lambda n: None)
    service.interfaces = ["10.0.0.7"]
    service._info = service._service_info(service._announced_addrs())
    fake = _FakeZeroconf()
    await service._maybe_reannounce(fake)  # type: ignore[arg-type]
    assert fake.updates == [] and fake.interfaces == []
    listen.append(Multiaddr("/ip4/10.0.0.7/udp/4002/quic-v1"))
    await service._maybe_reannounce(fake)  # type: ignore[arg-type]
    assert fake.interfaces == []
    [text] = fake.updates
    assert text.count(b"dnsaddr=") == 2 and b"127.0.0.1" not in text
    listen[:] = [Multiaddr("/ip4/192.0.2.9/udp/4001/quic-v1")]
    await service._maybe_reannounce(fake)  # type: ignore[arg-type]
    assert fake.interfaces == [["192.0.2.9"]] and b"192.0.2.9" in fake.updates[-1]
    listen[:] = [Multiaddr(LOOPBACK)]  # nothing left to announce on: keep the last record
    await service._maybe_reannounce(fake)  # type: ignore[arg-type]
    assert len(fake.updates) == 2
