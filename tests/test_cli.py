"""The `overlay` command in-process (`main([...])`) and as a subprocess."""

import importlib.util
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from overlay.cli import main
from tests.daemon.helpers import REPO, DaemonProcess, cli_command


@pytest.fixture
def daemon(short_tmp: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(short_tmp / "d") as proc:
        yield proc


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_no_daemon_exits_3_and_says_how_to_start_one(
        short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["id"], ["peers", "--json"],
                    ["ping", "/ip4/127.0.0.1/udp/9/quic-v1"]):
        assert main(["--home", str(short_tmp), *command]) == 3
        line = one_line(capsys.readouterr().err)
        assert f"no daemon is running at {short_tmp}/api.sock" in line
        assert "`overlay daemon`" in line and "--home DIR" in line


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["frobnicate"], "invalid choice"),
        (["ping", "/ip4/127.0.0.1/udp/4001/quic"], "quic-v1"),
        (["connect", "garbage"], "garbage"),
        (["ping", "/ip4/127.0.0.1/udp/4001/quic-v1", "-n", "0"], "1 to 1000"),
        (["ping", "/ip4/127.0.0.1/udp/4001/quic-v1", "-n", "1001"], "1 to 1000"),
        (["demo", "--timeout", "-5"], "1 to 3600 seconds"),
        (["demo", "--timeout", "nan"], "1 to 3600 seconds"),
        (["dht", "get", "foo"], "not a record key"),
        (["dht", "find-peer", "garbage"], "not a peer ID"),
        (["name", "resolve", "a_b.ovl"], "rule: ldh"),
        (["name", "register", "a.ovl", "--addr", "/ip4/127.0.0.1/udp/1/quic-v1"], "--peer PEERID"),
        (["ping", "/ip4/127.0.0.1/udp/4001/quic-v1", "-i", "soon"], "seconds"),
        (["daemon", "--listen", "/ip4/1.2.3.4/tcp/1"], "listen"),
        (["id", "--bogus"], "unrecognized"),
    ],
)
def test_usage_errors_are_one_line_exit_2(
        argv: list[str], fragment: str, short_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(short_tmp), *argv]) == 2
    captured = capsys.readouterr()
    assert fragment in one_line(captured.err) and "Traceback" not in captured.err


def test_bare_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "init" in out and "dht" in out and "completion" in out
    assert main(["dht"]) == 2
    out = capsys.readouterr().out
    assert "find-providers" in out and "overlay dht" in out


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "daemon" in capsys.readouterr().out
    assert main(["ping", "--help"]) == 0
    assert "--count" in capsys.readouterr().out


def test_init_then_init_again_keeps_the_key(
        short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = short_tmp / "h"
    assert main(["init", "--home", str(home), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["created_key"] is True and first["peer_id"].startswith("12D3KooW")
    key = (home / "identity.key").read_bytes()
    assert main(["--home", str(home), "init"]) == 0
    out = capsys.readouterr().out
    assert "already initialized" in out and first["peer_id"] in out
    assert (home / "identity.key").read_bytes() == key


def test_init_refuses_a_broken_key_without_touching_it(
        short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (short_tmp / "identity.key").write_bytes(b"\x00junk")
    (short_tmp / "identity.key").chmod(0o600)
    assert main(["--home", str(short_tmp), "init"]) == 1
    assert "left untouched" in one_line(capsys.readouterr().err)
    assert (short_tmp / "identity.key").read_bytes() == b"\x00junk"


def test_overlay_home_environment(
        short_tmp: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OVERLAY_HOME", str(short_tmp / "env"))
    assert main(["init"]) == 0
    assert (short_tmp / "env" / "identity.key").exists()
    capsys.readouterr()
    assert main(["id"]) == 3
    assert str(short_tmp / "env" / "api.sock") in capsys.readouterr().err


def test_client_commands_against_a_daemon(
        daemon: DaemonProcess, short_tmp: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(daemon.home)]
    assert main([*home, "id", "--json"]) == 0
    ident = json.loads(capsys.readouterr().out)
    assert ident["peer_id"] == daemon.peer_id and ident["addrs"] == daemon.addrs

    assert main(["id", *home]) == 0
    out = capsys.readouterr().out
    assert f"peer id: {daemon.peer_id}" in out and daemon.addrs[0] in out

    assert main([*home, "peers"]) == 0
    assert "no connected peers" in capsys.readouterr().out

    with DaemonProcess(short_tmp / "other") as other:
        assert main([*home, "connect", other.addrs[0], "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["peer_id"] == other.peer_id
        assert main([*home, "peers", "--json"]) == 0
        peers = json.loads(capsys.readouterr().out)["peers"]
        assert [p["peer_id"] for p in peers] == [other.peer_id]
        assert main([*home, "ping", other.addrs[0], "-n", "2", "-i", "0"]) == 0
        out = capsys.readouterr().out
        assert out.count(f"pong from {other.peer_id}") == 2 and "min/avg/max" in out
        assert other.stop() == 0

    # A failed operation: exit 1 and a one-line reason with its error code.
    lying = daemon.addrs[0].rsplit("/p2p/", 1)[0] + "/p2p/" + other.peer_id
    assert main([*home, "connect", lying]) == 1
    assert "peer_id_mismatch" in one_line(capsys.readouterr().err)
    assert main([*home, "ping", lying, "-n", "1", "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and "peer_id_mismatch" in one_line(captured.err)


def test_sim_is_delegated(capsys: pytest.CaptureFixture[str]) -> None:
    if importlib.util.find_spec("overlay.sim.command") is None:
        assert main(["sim", "--nodes", "10"]) == 1
        assert "simulator is not available" in one_line(capsys.readouterr().err)
    else:
        assert main(["sim", "--help"]) == 0
        assert "--nodes" in capsys.readouterr().out


def test_subprocess_exit_codes(short_tmp: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_command(*args), capture_output=True, text=True,
                              timeout=60, cwd=REPO)

    assert run("--home", str(short_tmp), "id").returncode == 3
    bad = run("--home", str(short_tmp), "connect", "/ip4/1.2.3.4/udp/1/quic")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert run("--version").stdout.startswith("overlay/")


def test_demo_reports_every_pair(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "3", "--json", "--timeout", "60"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["error"] is None
    assert len(report["nodes"]) == 3
    pairs = {(p["src"], p["dst"]) for p in report["pairs"]}
    assert pairs == {(a, b) for a in "ABC" for b in "ABC" if a != b}
    for pair in report["pairs"]:
        assert pair["ok"] and pair["peer_id_ok"] and pair["rtt_ms"] > 0
        assert pair["agent_version"].startswith("overlay/") and pair["protocols"] >= 3


def test_demo_text_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--nodes", "2"]) == 0
    out = capsys.readouterr().out
    assert "OK: 2/2 pings and identifies succeeded" in out
    assert main(["demo", "--nodes", "1"]) == 2
