"""`overlay daemon` processes with the DHT: flags and config keys, and the
`overlay dht` commands against them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.daemon.helpers import REPO, DaemonProcess, cli_command

pytestmark = pytest.mark.slow


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command("--home", str(home), *args), capture_output=True,
                          text=True, timeout=60, cwd=REPO, check=False)


def test_daemons_bootstrap_and_serve_the_dht_commands(tmp_path: Path) -> None:
    with DaemonProcess(tmp_path / "a") as a:
        with DaemonProcess(tmp_path / "b", "--bootstrap", a.addrs[0], "--dht-mode", "client") as b:
            put = _cli(tmp_path / "b", "dht", "put", "from a client daemon")
            assert put.returncode == 0, put.stderr
            key = put.stdout.strip()
            assert key.startswith("/v/")

            got = _cli(tmp_path / "a", "dht", "get", key)
            assert got.returncode == 0, got.stderr
            assert got.stdout == "from a client daemon\n"

            table = _cli(tmp_path / "b", "dht", "table", "--json")
            doc = json.loads(table.stdout)
            assert doc["mode"] == "client" and doc["peers"] == [a.peer_id]
            table = json.loads(_cli(tmp_path / "a", "dht", "table", "--json").stdout)
            assert table["mode"] == "server" and b.peer_id not in table["peers"]

            # Dial by peer ID alone: the address comes from the DHT.
            found = _cli(tmp_path / "b", "dht", "find-peer", a.peer_id)
            assert found.returncode == 0 and found.stdout.split()
            connected = _cli(tmp_path / "b", "connect", f"/p2p/{a.peer_id}")
            assert connected.returncode == 0, connected.stderr
            assert a.peer_id in connected.stdout
            pinged = _cli(tmp_path / "b", "ping", f"/p2p/{a.peer_id}", "-n", "1", "--json")
            assert pinged.returncode == 0, pinged.stderr
            assert json.loads(pinged.stdout)["peer_id"] == a.peer_id
            missing = _cli(tmp_path / "b", "dht", "get", "/v/" + "0" * 64)
            assert missing.returncode == 4, missing.stderr
            # The server knows no other server (the client is not one).
            lonely = _cli(tmp_path / "a", "dht", "get", "/v/" + "0" * 64)
            assert lonely.returncode == 1 and "[no_peers]" in lonely.stderr


def test_kad_protocol_and_mode_from_config(tmp_path: Path) -> None:
    home = tmp_path / "c"
    home.mkdir(mode=0o700)
    (home / "config.toml").write_text(
        'version = 1\nlisten = ["/ip4/127.0.0.1/udp/0/quic-v1"]\n'
        'dht_mode = "client"\nkad_protocol = "/test/kad/1.0.0"\n')
    with DaemonProcess(home, listen=()):
        table = json.loads(_cli(home, "dht", "table", "--json").stdout)
        assert table["mode"] == "client" and table["protocol"] == "/test/kad/1.0.0"
    (home / "config.toml").write_text('version = 1\ndht_mode = "both"\n')
    bad = subprocess.run(cli_command("--home", str(home), "daemon"), capture_output=True,
                         text=True, timeout=60, cwd=REPO, check=False)
    assert bad.returncode == 1 and "dht_mode" in bad.stderr
