"""`overlay daemon --exit` and `--exit auto` as a person runs them."""

from __future__ import annotations

import json
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


def test_exit_flags_show_in_stats(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = short_tmp / "e"
    with DaemonProcess(home, "--dns", "off", "--no-mdns", "--exit", "--exit-ports", "443,8443",
                       "--exit-allow", "*"):
        assert main(["--home", str(home), "stats", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["exit"]["ports"] == [443, 8443]
        assert stats["exit"]["connections"] == 0 and stats["exit"]["clients"] == {}
        # The text form has the exit too, not only --json.
        assert main(["--home", str(home), "stats"]) == 0
        text = capsys.readouterr().out
        assert "exit: connections 0, active 0, failed 0" in text
        assert "ports 443,8443" in text and "  refused: none" in text


def test_exit_auto_without_exits_says_so(short_tmp: Path) -> None:
    with DaemonProcess(short_tmp / "c", "--dns", "off", "--no-mdns", "--proxy", "127.0.0.1:0",
                       "--exit", "auto") as d:
        proxy = _proxy_line(d)
        pac = subprocess.run(["curl", "--silent", "--noproxy", "", f"http://{proxy}/proxy.pac"],
                             capture_output=True, timeout=30, check=True).stdout.decode()
        assert f"SOCKS5 {proxy}" in pac and "DIRECT" not in pac
        # No DHT peers, so no exit: a readable 504, and nothing is dialed directly.
        got = subprocess.run(["curl", "--silent", "--noproxy", "", "-x", f"http://{proxy}",
                              "-w", "%{http_code}", "http://127.0.0.1:9/"],
                             capture_output=True, timeout=60)
        assert got.stdout.endswith(b"504") and b"cannot look exits up" in got.stdout, got.stdout
