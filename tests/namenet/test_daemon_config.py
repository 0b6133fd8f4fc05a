"""The daemon's naming settings: `dns` and `zone` in config.toml, --dns."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlay.cli import main
from overlay.daemon.config import DaemonConfig, load_config, parse_config, render_config
from overlay.errors import ConfigError


def test_dns_and_zone_keys(tmp_path: Path) -> None:
    config = parse_config({"dns": "[::1]:53", "zone": "example"})
    assert (config.dns, config.zone) == ("[::1]:53", "example")
    assert DaemonConfig().dns == "127.0.0.1:5335" and DaemonConfig().zone == "ovl"
    assert parse_config({"dns": "off"}).dns == "off"
    path = tmp_path / "config.toml"
    path.write_text(render_config(config))
    assert load_config(path) == config
    for bad in ({"dns": "localhost:53"}, {"dns": "1.2.3.4"}, {"zone": "Bad_Zone"},
                {"zone": "OVL"}):
        with pytest.raises(ConfigError):
            parse_config(bad)


def test_dns_option_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["daemon", "--dns", "nowhere"]) == 2
    assert "HOST:PORT" in capsys.readouterr().err
