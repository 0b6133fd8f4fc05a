"""`overlay daemon` killed with SIGKILL and restarted keeps its names and
republishes them; the CLI sees it."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.daemon.helpers import REPO, DaemonProcess, cli_command


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command("--home", str(home), *args), capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_killed_daemon_keeps_and_republishes_its_names(short_tmp: Path) -> None:
    dns = ("--dns", "127.0.0.1:0")
    with DaemonProcess(short_tmp / "intro", *dns) as intro:
        boot = ("--bootstrap", intro.addrs[0])
        with DaemonProcess(short_tmp / "reader", *dns, *boot):
            owner = DaemonProcess(short_tmp / "owner", *dns, *boot).start()
            try:
                done = _cli(short_tmp / "owner", "name", "register", "kill.ovl",
                            "--txt", "before", "--json")
                assert done.returncode == 0, done.stderr
                first = json.loads(done.stdout)
                assert owner.stop(signal.SIGKILL) == -signal.SIGKILL
            finally:
                owner.kill()
            with DaemonProcess(short_tmp / "owner", *dns, *boot):
                # The restarted daemon republishes at once; wait for it by
                # asking it (bounded), never by sleeping.
                for _ in range(100):
                    listed = _cli(short_tmp / "owner", "name", "list", "--json")
                    assert listed.returncode == 0, listed.stderr
                    names = json.loads(listed.stdout)["names"]
                    assert [n["name"] for n in names] == ["kill.ovl"]
                    if names[0]["sequence"] > first["sequence"]:
                        break
                else:
                    pytest.fail("the restarted daemon never republished kill.ovl")
                got = _cli(short_tmp / "reader", "name", "resolve", "kill.ovl",
                           "--no-cache", "--json")
                assert got.returncode == 0, got.stderr
                record = json.loads(got.stdout)["record"]
                assert record["sequence"] == names[0]["sequence"]
                assert record["txt"] == ["before"]


def test_name_connect_relays_stdin_and_stdout(short_tmp: Path) -> None:
    with DaemonProcess(short_tmp / "a", "--dns", "off") as owner:
        with DaemonProcess(short_tmp / "b", "--dns", "off", "--bootstrap", owner.addrs[0]):
            done = _cli(short_tmp / "a", "name", "register", "pinger.ovl")
            assert done.returncode == 0, done.stderr
            payload = bytes(range(32))  # the ping protocol echoes 32 bytes
            relayed = subprocess.run(
                cli_command("--home", str(short_tmp / "b"), "name", "connect", "pinger.ovl",
                            "/ipfs/ping/1.0.0"),
                input=payload, capture_output=True, cwd=REPO, timeout=60)
            assert relayed.returncode == 0, relayed.stderr
            assert relayed.stdout == payload
            assert owner.peer_id in relayed.stderr.decode()
            # --json: one line on stderr, before any data; stdout stays the stream's.
            relayed = subprocess.run(
                cli_command("--home", str(short_tmp / "b"), "name", "connect", "pinger.ovl",
                            "/ipfs/ping/1.0.0", "--json"),
                input=payload, capture_output=True, cwd=REPO, timeout=60)
            assert relayed.returncode == 0, relayed.stderr
            assert relayed.stdout == payload
            line = json.loads(relayed.stderr.decode().splitlines()[0])
            assert line["event"] == "connected" and line["peer_id"] == owner.peer_id
            assert line["protocol"] == "/ipfs/ping/1.0.0" and line["name"] == "pinger.ovl"
            assert line["addr"] in owner.addrs
            # The owner's ping service resets a stream that ends mid-ping.
            # On the CLI's socket that is a bare EOF: it must not exit 0.
            cut = subprocess.run(
                cli_command("--home", str(short_tmp / "b"), "name", "connect", "pinger.ovl",
                            "/ipfs/ping/1.0.0"),
                input=payload[:10], capture_output=True, cwd=REPO, timeout=60)
            assert cut.returncode == 1, (cut.returncode, cut.stderr)
            assert b"broke" in cut.stderr, cut.stderr
