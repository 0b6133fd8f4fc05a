"""STUN in the daemon: config keys, the `nat_status` op, `overlay nat` and
`overlay daemon --stun/--introducer`."""

from __future__ import annotations

import json
import sys
import subprocess
from pathlib import Path

import pytest

from overlay.cli import EXIT_USAGE, main
from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.nat.daemon_ext import NatExtension
from tests.daemon.helpers import LOOPBACK, DaemonProcess, cli_command


async def test_nat_status_op_reports_the_mapping_an_introducer_saw(tmp_path: Path) -> None:
    intro_home, node_home = Home(tmp_path / "intro"), Home(tmp_path / "node")
    intro_config = DaemonConfig(listen=(LOOPBACK,), introducer=True)
    intro_key = init_home(intro_home, intro_config).key
    async with Daemon(intro_home, intro_config, intro_key, extensions=[NatExtension()]) as intro:
        port = intro.host.endpoints()[0].local_address[1]
        node_config = DaemonConfig(listen=(LOOPBACK,), stun=(f"127.0.0.1:{port}",))
        node_key = init_home(node_home, node_config).key
        async with Daemon(node_home, node_config, node_key, extensions=[NatExtension()]) as node:
            node_port = node.host.endpoints()[0].local_address[1]
            async with await ApiClient.connect(node.api_path) as client:
                reply = await client.call("nat_status", {"refresh": True})
                status = await client.call("status")
                with pytest.raises(Exception, match="refresh"):
                    await client.call("nat_status", {"refresh": "yes"})
            async with await ApiClient.connect(intro.api_path) as client:
                served = await client.call("nat_status")
    assert reply["nat_type"] == "no NAT"
    assert reply["stun_servers"] == [f"127.0.0.1:{port}"] and reply["introducer"] is False
    [sock] = reply["sockets"]
    [obs] = sock["observations"]
    assert obs["mapped"] == f"127.0.0.1:{node_port}" and obs["xor_mapped"] is True
    assert reply["public_addrs"][0] == {
        "addr": f"127.0.0.1:{node_port}",
        "multiaddr": f"/ip4/127.0.0.1/udp/{node_port}/quic-v1",
        "sources": [f"stun 127.0.0.1:{port}"]}
    assert status["nat"] == f"no NAT, public 127.0.0.1:{node_port}"
    assert served["introducer"] is True and served["stun_answered"] >= 1


def test_overlay_nat_and_daemon_flags_end_to_end(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "a", "--introducer") as intro:
        port = int(intro.addrs[0].split("/")[4])
        with DaemonProcess(tmp_path / "b", "--stun", f"127.0.0.1:{port}") as node:
            done = subprocess.run(
                cli_command("--home", str(node.home), "nat", "--refresh", "--json"),
                capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stderr
            reply = json.loads(done.stdout)
            text = subprocess.run(cli_command("--home", str(node.home), "nat"),
                                  capture_output=True, text=True, timeout=60, check=False)
            node.stop()
        intro.stop()
    [obs] = reply["sockets"][0]["observations"]
    assert obs["server"] == f"127.0.0.1:{port}"
    assert text.returncode == 0 and "nat type: no NAT" in text.stdout
    assert f"via stun 127.0.0.1:{port}" in text.stdout


@pytest.mark.parametrize("args, fragment", [
    (["daemon", "--stun", "nohost"], "is not HOST:PORT"),
    (["daemon", "--stun", "10.0.0.1:99999"], "port must be a number"),
    (["daemon", "--stun", "2001:db8::1:3478"], "[ADDR]:PORT"),
    (["nat", "--classic", "x:y"], "port must be a number"),
])
def test_bad_stun_server_is_a_one_line_usage_error(
        args: list[str], fragment: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), *args]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_config_set_introducer_and_stun(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(tmp_path)]
    assert main([*home, "init"]) == 0
    assert main([*home, "config", "set", "introducer", "true"]) == 0
    assert main([*home, "config", "set", "stun", "203.0.113.10:3478", "[2001:db8::1]:3478"]) == 0
    assert main([*home, "config", "set", "introducer", "maybe"]) == EXIT_USAGE
    text = (tmp_path / "config.toml").read_text()
    assert "introducer = true" in text
    assert 'stun = ["203.0.113.10:3478", "[2001:db8::1]:3478"]' in text


def test_classic_without_pystun3_says_how_to_get_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "stun", None)  # as if pystun3 were not installed
    assert main(["--home", str(tmp_path), "nat", "--classic", "127.0.0.1:3478"]) == 1
    err = capsys.readouterr().err.strip()
    assert "needs pystun3" in err and len(err.splitlines()) == 1
