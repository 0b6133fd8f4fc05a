"""`overlay status | id | disconnect | stop | config` as a user runs them:
the CLI as a process against a daemon process (one start for all)."""

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from overlay.cli import main
from overlay.daemon.config import load_config
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.naming.names import self_certifying_name

from tests.daemon.helpers import REPO, DaemonProcess, cli_command


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cli_command("--home", str(home), *args), capture_output=True,
                          text=True, cwd=REPO, timeout=60, check=False)


def test_status_id_disconnect_and_stop_against_a_daemon(short_tmp: Path) -> None:
    home = short_tmp / "a"
    with DaemonProcess(home, "--dns", "off") as daemon:
        done = run_cli(home, "status", "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        name = self_certifying_name(PeerId.from_string(daemon.peer_id))
        assert status["peer_id"] == daemon.peer_id and status["name"] == name
        assert status["listen_addrs"] == daemon.addrs
        assert status["dht"]["mode"] == "server" and status["dht"]["table_size"] == 0
        assert status["names"] == [] and status["dns"] is None
        assert status["reachability"] == "offline" and status["pid"] == daemon.proc.pid

        text = run_cli(home, "status")
        assert text.returncode == 0, text.stderr
        assert f"name:         {name}" in text.stdout and "dns:          off" in text.stdout
        ident = run_cli(home, "id")
        assert f"name: {name}" in ident.stdout

        stranger = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
        missing = run_cli(home, "disconnect", str(stranger))
        assert missing.returncode == 4, missing.stderr
        assert "not connected" in missing.stderr and missing.stderr.count("\n") == 1

        stopped = run_cli(home, "stop")
        assert stopped.returncode == 0, stopped.stderr
        # `stop` returned only after the process exited.
        assert daemon.proc.poll() == 0
        assert f"pid {daemon.proc.pid}" in stopped.stdout
    again = run_cli(home, "stop")
    assert again.returncode == 3 and "no daemon" in again.stderr


def test_config_set_validates_writes_atomically_and_show_reads_it(
        short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = ["--home", str(short_tmp)]
    assert main([*home, "config", "set", "dht_mode", "client"]) == 0
    assert "restart the daemon" in capsys.readouterr().out
    assert main([*home, "config", "set", "listen", "/ip4/127.0.0.1/udp/0/quic-v1",
                 "/ip6/::1/udp/0/quic-v1"]) == 0
    capsys.readouterr()
    config = load_config(short_tmp / "config.toml")
    assert config.dht_mode == "client"
    assert config.listen == ("/ip4/127.0.0.1/udp/0/quic-v1", "/ip6/::1/udp/0/quic-v1")
    assert (short_tmp / "config.toml").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in short_tmp.iterdir()] == ["config.toml"]  # no temporary left

    before = (short_tmp / "config.toml").read_bytes()
    for args, fragment in ((["dht_mode", "sometimes"], "`dht_mode` must be"),
                           (["no_such_key", "1"], "unknown key `no_such_key`"),
                           (["zone", "a", "b"], "exactly one value"),
                           (["bootstrap", "/ip4/1.2.3.4/udp/1/quic-v1"], "/p2p/")):
        assert main([*home, "config", "set", *args]) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
    assert (short_tmp / "config.toml").read_bytes() == before  # a refused value changes nothing

    assert main([*home, "config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["dht_mode"] == "client" and shown["version"] == 1
    assert main([*home, "config", "show"]) == 0
    toml_text = capsys.readouterr().out
    assert tomllib.loads(toml_text)["listen"] == list(config.listen)
