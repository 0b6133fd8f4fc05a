"""`overlay dht …` against daemons running the DHT (in-process daemons, the
real CLI entry point in a worker thread)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from overlay.cli import main
from overlay.kad.records import immutable_key

from tests.kadnet.test_ops import dht_daemons, short_tmp  # noqa: F401 - fixture

TIMEOUT = 60.0


def _cli(home: Path, *args: str) -> int:
    return main(["--home", str(home), "dht", *args])


async def test_cli_dht_commands(short_tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: F811
    async with asyncio.timeout(TIMEOUT), dht_daemons(short_tmp, 3) as nodes:
        (a, _), (b, _), (c, _) = nodes
        home_a, home_c = Path(a.home.root), Path(c.home.root)

        assert await asyncio.to_thread(_cli, home_a, "put", "a value from the CLI") == 0
        key = capsys.readouterr().out.strip()
        assert key == immutable_key(b"a value from the CLI").decode()

        assert await asyncio.to_thread(_cli, home_c, "get", key) == 0
        assert capsys.readouterr().out == "a value from the CLI\n"
        assert await asyncio.to_thread(_cli, home_c, "get", key, "--json") == 0
        assert json.loads(capsys.readouterr().out)["value"] == "a value from the CLI"

        missing = immutable_key(b"never stored").decode()
        assert await asyncio.to_thread(_cli, home_c, "get", missing) == 4
        assert "not_found" in capsys.readouterr().err
        # An unknown namespace is bad input, judged by the daemon's registry.
        assert await asyncio.to_thread(_cli, home_c, "get", "/unknown/x") == 2
        assert "overlay dht get:" in capsys.readouterr().err

        assert await asyncio.to_thread(_cli, home_c, "find-peer", str(b.peer_id)) == 0
        assert str(b.listen_addrs()[0]) in capsys.readouterr().out.split()
        assert await asyncio.to_thread(_cli, home_c, "find-peer", "garbage") == 2
        capsys.readouterr()

        assert await asyncio.to_thread(_cli, home_a, "provide", "my-service") == 0
        assert "providing my-service" in capsys.readouterr().out
        assert await asyncio.to_thread(_cli, home_c, "find-providers", "my-service", "--json") == 0
        providers = json.loads(capsys.readouterr().out)["providers"]
        assert str(a.peer_id) in [p["peer_id"] for p in providers]
        assert await asyncio.to_thread(_cli, home_c, "find-providers", "nobody-has-it") == 4
        capsys.readouterr()

        assert await asyncio.to_thread(_cli, home_a, "table") == 0
        out = capsys.readouterr().out
        assert "(server mode), 2 peers" in out and "bucket" in out
        assert await asyncio.to_thread(_cli, home_a, "table", "--json") == 0
        table = json.loads(capsys.readouterr().out)
        assert table["size"] == 2 and {str(b.peer_id), str(c.peer_id)} == set(table["peers"])


def test_cli_dht_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "dht"]) == 2
    assert main(["--home", str(tmp_path), "dht", "get"]) == 2
    assert main(["--home", str(tmp_path), "dht", "frobnicate"]) == 2
    capsys.readouterr()
    # No daemon runs there.
    assert main(["--home", str(tmp_path), "dht", "table"]) == 3
