"""Exits: the `overlay daemon` flags, the config keys and the metered
stream's byte budget and rate."""

from __future__ import annotations

import time

import pytest

from overlay.apps.exit_policy import ClientBook, ExitConfig
from overlay.apps.exit_server import MeteredStream
from overlay.cli import build_parser
from overlay.cli.common import ParserExit
from overlay.cli.core import _exit_flags
from overlay.daemon.config import DaemonConfig, parse_config, render_config
from overlay.errors import ConfigError, StreamReset
from overlay.wire.memory import memory_stream_pair

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def test_daemon_flags() -> None:
    parser = build_parser()
    ns = parser.parse_args(["daemon", "--exit", "--exit-ports", "443,80,8443",
                            "--exit-allow", PEER, "--exit-allow", "bob.ovl"])
    assert _exit_flags(ns) == ({"enabled": True, "ports": [80, 443, 8443],
                                "allow": [PEER, "bob.ovl"]}, None)
    for value in ("auto", PEER, "exit.ovl", "off"):
        assert _exit_flags(parser.parse_args(["daemon", "--exit", value])) == (None, value)
    assert _exit_flags(parser.parse_args(["daemon"])) == (None, None)
    for bad in (["--exit", "nowhere"], ["--exit-ports", "0"], ["--exit-ports", "http"]):
        with pytest.raises(ParserExit):
            parser.parse_args(["daemon", *bad])


def test_config_keys_round_trip() -> None:
    config = parse_config({"exit": {"enabled": True, "ports": [443], "allow": ["*"]},
                           "exit_via": "auto"})
    assert config.exit["ports"] == [443] and config.exit_via == "auto"
    assert "[exit]" in render_config(config)
    assert DaemonConfig().exit_via == "off" and dict(DaemonConfig().exit) == {}
    with pytest.raises(ConfigError, match="exit.ports"):
        parse_config({"exit": {"ports": "80"}})
    with pytest.raises(ConfigError, match="auto"):
        parse_config({"exit_via": "somewhere"})
    with pytest.raises(ConfigError, match="unknown key `colour`"):
        parse_config({"exit": {"colour": "red"}})


async def test_metered_stream_budget_and_rate() -> None:
    book = ClientBook(ExitConfig(max_bytes=250_000, rate=100_000))
    assert book.admit("c", time.monotonic()) is None
    near, far = memory_stream_pair(1 << 20)
    overs: list[str] = []
    metered = MeteredStream(near, book, "c", lambda: overs.append("over"))
    started = time.monotonic()
    for _ in range(2):  # 200 kB at 100 kB/s with 100 kB of burst: at least 1 s
        metered.write(b"x" * 100_000)
        await metered.drain()
    assert time.monotonic() - started >= 0.9
    assert len(await far.readexactly(200_000)) == 200_000
    far.write(b"y" * 60_000)
    await far.drain()
    with pytest.raises(StreamReset, match="byte limit"):
        while True:
            await metered.read(65536)
    assert overs == ["over"] and book.snapshot()["c"]["bytes"] > 250_000
