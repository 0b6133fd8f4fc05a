"""`overlay daemon` as a real process: start-up output, signals, socket
permissions, and the errors a user sees."""

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.daemon.helpers import REPO, DaemonProcess, cli_command


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_identity_and_stops_cleanly_on_signal(short_tmp: Path, sig: int) -> None:
    home = short_tmp / "h"
    daemon = DaemonProcess(home).start()
    try:
        assert daemon.peer_id.startswith("12D3KooW")
        assert daemon.addrs and all(
            a.startswith("/ip4/127.0.0.1/udp/") and a.endswith(f"/quic-v1/p2p/{daemon.peer_id}")
            for a in daemon.addrs)
        sock = home / "api.sock"
        mode = os.stat(sock).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        # A fresh home was initialized on the fly, with a private key file.
        assert daemon.output.decode().startswith(f"initialized {home} with a new identity key\n")
        assert stat.S_IMODE(os.stat(home / "identity.key").st_mode) == 0o600
        assert daemon.stop(sig) == 0
        assert not sock.exists()
        assert "Traceback" not in daemon.stderr()
    finally:
        daemon.kill()


def test_two_daemons_ping_each_other_through_the_cli(short_tmp: Path) -> None:
    with DaemonProcess(short_tmp / "a") as a, DaemonProcess(short_tmp / "b") as b:
        ident = run_cli("--home", str(a.home), "id", "--json")
        assert ident.returncode == 0, ident.stderr
        data = json.loads(ident.stdout)
        assert data["peer_id"] == a.peer_id and data["addrs"] == a.addrs

        ping = run_cli("ping", b.addrs[0], "-n", "2", "-i", "0", "--json", "--home", str(a.home))
        assert ping.returncode == 0, ping.stderr
        result = json.loads(ping.stdout)
        assert result["peer_id"] == b.peer_id and len(result["rtts_ms"]) == 2

        back = run_cli("--home", str(b.home), "ping", a.addrs[0], "-n", "1")
        assert back.returncode == 0, back.stderr
        assert f"pong from {a.peer_id}: seq=1" in back.stdout

        connect = run_cli("--home", str(a.home), "connect", b.addrs[0])
        assert connect.returncode == 0 and f"connected to {b.peer_id}" in connect.stdout

        peers = run_cli("--home", str(a.home), "peers", "--json")
        assert peers.returncode == 0
        assert b.peer_id in [p["peer_id"] for p in json.loads(peers.stdout)["peers"]]
        assert a.stop() == 0 and b.stop() == 0


def test_busy_port_is_a_one_line_error(short_tmp: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        daemon = DaemonProcess(short_tmp / "h", listen=(f"/ip4/127.0.0.1/udp/{port}/quic-v1",))
        code = daemon.proc.wait(timeout=60)
        err = daemon.stderr()
        daemon.kill()
    assert code == 1
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"udp/{port}" in lines[0] and "already in use" in lines[0]
    assert not (short_tmp / "h" / "api.sock").exists()


def test_unknown_address_is_a_one_line_error(short_tmp: Path) -> None:
    result = run_cli("--home", str(short_tmp), "daemon", "--listen", "/ip4/127.0.0.1/udp/0/quic-v1",
                     "--listen", "/ip6/2001:db8::7/udp/0/quic-v1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "2001:db8::7" in result.stderr and "no such address" in result.stderr
    assert not (short_tmp / "api.sock").exists()


def test_second_daemon_on_the_same_home_is_refused(short_tmp: Path) -> None:
    with DaemonProcess(short_tmp / "h") as first:
        second = DaemonProcess(short_tmp / "h")
        code = second.proc.wait(timeout=60)
        err = second.stderr()
        second.kill()
        assert code == 1 and "already running" in err and "Traceback" not in err
        # The first daemon still answers.
        assert run_cli("--home", str(first.home), "id").returncode == 0


def test_bad_config_is_a_one_line_error(short_tmp: Path) -> None:
    home = short_tmp / "h"
    home.mkdir()
    (home / "config.toml").write_text('version = 1\nlisten_on = []\n')
    result = run_cli("--home", str(home), "daemon")
    assert result.returncode == 1
    assert "unknown key `listen_on`" in result.stderr and "Traceback" not in result.stderr


def test_launcher_script_runs_the_cli(short_tmp: Path) -> None:
    launcher = REPO / "cmd" / "overlay"
    assert os.access(launcher, os.X_OK)
    assert not (REPO / "cmd" / "__init__.py").exists()
    result = subprocess.run([cli_command()[0], str(launcher), "--home", str(short_tmp), "id"],
                            capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 3 and "no daemon is running" in result.stderr


def test_json_ready_line(short_tmp: Path) -> None:
    daemon = DaemonProcess(short_tmp / "h", "--json").start()
    try:
        ready = json.loads(daemon.output)
        assert ready["event"] == "ready" and ready["peer_id"].startswith("12D3KooW")
        assert ready["api_socket"] == str(short_tmp / "h" / "api.sock")
        assert all(a.endswith("/p2p/" + ready["peer_id"]) for a in ready["addrs"])
        assert daemon.stop() == 0
    finally:
        daemon.kill()


async def test_stream_relay_between_daemon_processes(short_tmp: Path) -> None:
    """The relay under the daemon's own event loop (uvloop when installed)."""
    from overlay.daemon.client import ApiClient

    with DaemonProcess(short_tmp / "a") as a, DaemonProcess(short_tmp / "b") as b:
        async with asyncio.timeout(30):
            registrant = await ApiClient.connect(b.home / "api.sock")
            await registrant.send_request("stream_handler_register", {"protocol": "/t/rev/1"})
            assert (await registrant.next_event() or {}).get("event") == "registered"

            async def serve() -> int:
                event = await registrant.next_event()
                assert event is not None and event["event"] == "stream"
                acceptor = await ApiClient.connect(b.home / "api.sock")
                _, reader, writer = await acceptor.stream_accept(event["stream_id"])
                data = await reader.read()
                writer.write(data[::-1])
                writer.write_eof()
                await writer.drain()
                writer.close()
                return len(data)

            payload = bytes(range(256)) * 2000
            async with asyncio.TaskGroup() as group:
                served = group.create_task(serve())
                opener = await ApiClient.connect(a.home / "api.sock")
                _, reader, writer = await opener.stream_open(["/t/rev/1"], addr=b.addrs[0])
                writer.write(payload)
                writer.write_eof()
                answer = await reader.read()
                writer.close()
            await registrant.aclose()
        assert served.result() == len(payload) and answer == payload[::-1]
        assert a.stop() == 0 and b.stop() == 0
