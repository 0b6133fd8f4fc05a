"""`overlay vip status [--json]`: against an in-process daemon whose
interface is in memory, against a daemon without --tun, and its text."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys
from pathlib import Path

import pytest

from overlay.cli.vip import PEERS_SHOWN, print_status
from overlay.daemon.client import ApiClient
from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.host import Host, HostListener
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.vip import SELF_V4, vip6_of
from overlay.vip.daemon_ext import MAX_STATUS_PEERS, VipExtension
from tests.vip.test_persist import LOOPBACK, MemoryDevice, source_seen

REPO = Path(__file__).resolve().parents[2]


async def cli(home: Home, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "overlay.cli", "--home", str(home.root), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_status_shows_the_peer_its_vips_path_and_counters(short_tmp: Path) -> None:
    home = Home(short_tmp / "home")
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    ext = VipExtension(device=MemoryDevice)
    async with asyncio.timeout(60), Host(Ed25519PrivateKey.generate()) as peer, \
            Daemon(home, config, key, extensions=[ext]) as daemon:
        vip4 = await source_seen(daemon, ext, peer)
        code, out, err = await cli(home, "vip", "status", "--json")
        assert code == 0, err
        status = json.loads(out)
        assert status["interface"] == "ovl0" and status["vip4"] == str(SELF_V4)
        assert status["vip6"] == str(vip6_of(daemon.peer_id))
        assert status["peers"] == [{"peer_id": str(peer.peer_id), "vip4": vip4,
                                    "vip6": str(vip6_of(peer.peer_id)), "path": "datagram"}]
        assert status["packets"]["datagram_in"] == 1 and status["packets"]["delivered"] == 1
        assert status["bytes"]["in"] > 0 and status["drops"] == {}

        code, out, err = await cli(home, "vip", "status")
        assert code == 0, err
        assert f"interface ovl0: {SELF_V4} and {vip6_of(daemon.peer_id)}" in out
        assert any(line.split()[:2] == [str(peer.peer_id), vip4]
                   and line.split()[-1] == "datagram" for line in out.splitlines()), out

        # Gone: the peer keeps its vIPv4, with no path until it is dialled.
        gone = asyncio.Event()
        daemon.host.add_listener(HostListener(disconnected=lambda p: gone.set()))
        peer.disconnect(daemon.peer_id)
        async with asyncio.timeout(10):
            await gone.wait()
        code, out, err = await cli(home, "vip", "status", "--json")
        assert json.loads(out)["peers"][0]["path"] == "none", out


async def test_without_tun_it_says_off_and_a_bad_action_exits_2(short_tmp: Path) -> None:
    home = Home(short_tmp / "home")
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    async with asyncio.timeout(60), Daemon(home, config, key):
        code, out, err = await cli(home, "vip", "status", "--json")
        assert code == 0 and json.loads(out) == {"running": False}, (out, err)
        code, out, err = await cli(home, "vip", "status")
        assert code == 0 and "off" in out and "--tun" in out, (out, err)
    code, out, err = await cli(home, "vip", "bogus")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err


def test_text_lists_peers_up_to_a_limit_and_the_drops(
        capsys: pytest.CaptureFixture[str]) -> None:
    peers = [{"peer_id": f"12D3Koo{i}", "vip4": f"100.64.0.{i + 2}", "vip6": "fd4f::1",
              "path": "stream"} for i in range(PEERS_SHOWN + 5)]
    print_status({"running": True, "interface": "ovl0", "vip4": "100.64.0.1",
                  "vip6": "fd4f:766c:3000::1", "vip4_table": 55, "peers": peers,
                  "peers_total": PEERS_SHOWN + 5,
                  "packets": {"datagram_out": 7, "stream_out": 3, "datagram_in": 4,
                              "delivered": 4},
                  "bytes": {"out": 1000, "in": 400},
                  "drops": {"forged source": 2, "not to us": 1}})
    out = capsys.readouterr().out.splitlines()
    assert out[1] == f"{PEERS_SHOWN + 5} peers, 55 holding an IPv4 address"
    assert len([line for line in out if line.startswith("  12D3Koo")]) == PEERS_SHOWN
    assert "  … 5 more (--json lists 55)" in out
    assert "sent: 10 packets, 1000 bytes (7 as datagrams, 3 on streams)" in out
    assert "dropped: forged source 2, not to us 1" in out


async def test_status_lists_at_most_1024_peers_and_counts_all(short_tmp: Path) -> None:
    home = Home(short_tmp / "home")
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    ext = VipExtension(device=MemoryDevice, persist=False)
    async with asyncio.timeout(60), Daemon(home, config, key, extensions=[ext]) as daemon:
        assert ext.service is not None
        first = int(ipaddress.IPv4Address("100.64.0.2"))
        peers = [PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
                 for _ in range(MAX_STATUS_PEERS + 76)]
        ext.service.router.allocator.restore(
            [(peer, first + i) for i, peer in enumerate(peers)], 0.0)
        async with await ApiClient.connect(daemon.api_path) as client:
            status = await client.call("vip_status")
        assert status["peers_total"] == len(peers) and status["vip4_table"] == len(peers)
        assert len(status["peers"]) == MAX_STATUS_PEERS
        # The most recently used first; none has a connection.
        assert status["peers"][0]["peer_id"] == str(peers[-1])
        assert {p["path"] for p in status["peers"]} == {"none"}
    assert not (home.root / "vip4.json").exists()  # persist=False
