"""`overlay daemon --proxy` and `overlay expose` as a person runs them:
the start-up line, the PAC file, exposures kept across a restart, a busy
proxy port."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from overlay.cli import main
from tests.daemon.helpers import DaemonProcess


def _proxy_line(daemon: DaemonProcess) -> str:
    for line in daemon.output.decode().splitlines():
        if line.startswith("proxy: "):
            return line.removeprefix("proxy: ").split(" ", 1)[0]
    raise AssertionError(f"no proxy line in {daemon.output!r}")


def test_proxy_pac_and_exposures_across_a_restart(
        short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = short_tmp / "a"
    with DaemonProcess(home, "--dns", "off", "--no-mdns", "--proxy", "127.0.0.1:0") as d:
        proxy = _proxy_line(d)
        pac = subprocess.run(["curl", "--silent", "--noproxy", "", f"http://{proxy}/proxy.pac"],
                             capture_output=True, timeout=30, check=True).stdout.decode()
        assert f"SOCKS5 {proxy}" in pac and 'return "DIRECT"' in pac
        port = proxy.rsplit(":", 1)[1]
        named = subprocess.run(["curl", "--silent", "--noproxy", "", "-H",
                                f"Host: localhost:{port}", f"http://{proxy}/proxy.pac"],
                               capture_output=True, timeout=30, check=True).stdout.decode()
        assert f"SOCKS5 localhost:{port};" in named  # as the browser reached it
        other = subprocess.run(["curl", "--silent", "--noproxy", "", "-w", "%{http_code}",
                                f"http://{proxy}/"], capture_output=True, timeout=30)
        assert other.stdout.endswith(b"404") and b"proxy.pac" in other.stdout
        assert main(["--home", str(home), "expose", "web", "--port", "8080",
                     "--allow", "bob.ovl"]) == 0
        assert "exposing web → 127.0.0.1:8080 (only bob.ovl)" in capsys.readouterr().out
        assert main(["--home", str(home), "forward", "--listen", "127.0.0.1:0",
                     "bob.ovl:web", "--json"]) == 0
        listen = json.loads(capsys.readouterr().out)["listen"]
    with DaemonProcess(home, "--dns", "off", "--no-mdns"):
        assert main(["--home", str(home), "expose", "--list", "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(s["service"], s["port"], s["allow"]) for s in listed["services"]] == [
            ("web", 8080, ["bob.ovl"])]
        assert listed["proxy"] is None
        # The forward came back on the port it had.
        assert main(["--home", str(home), "forward", "--list"]) == 0
        assert capsys.readouterr().out.startswith(f"{listen} → bob.ovl:web  0 connections")
        host, port = listen.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10):
            pass  # listening
        assert main(["--home", str(home), "expose", "--remove", "web"]) == 0
        assert main(["--home", str(home), "expose", "--remove", "web"]) == 4


def test_a_busy_proxy_port_stops_the_start(short_tmp: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        daemon = DaemonProcess(short_tmp / "b", "--dns", "off", "--no-mdns",
                               "--proxy", f"127.0.0.1:{port}")
        try:
            with pytest.raises(RuntimeError, match="cannot serve the proxy"):
                daemon.start()
            assert daemon.proc.returncode == 1
        finally:
            daemon.kill()
