import os
import stat
from pathlib import Path

import pytest

from overlay.daemon.config import (
    DEFAULT_LISTEN,
    DaemonConfig,
    load_config,
    parse_config,
    render_config,
    save_config,
)
from overlay.daemon.home import Home, resolve_home
from overlay.errors import ConfigError

PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


def test_defaults_listen_on_both_families_port_4001() -> None:
    config = DaemonConfig()
    assert config.listen == DEFAULT_LISTEN
    assert config.listen == ("/ip4/0.0.0.0/udp/4001/quic-v1", "/ip6/::/udp/4001/quic-v1")
    assert config.bootstrap == () and config.api_socket == ""


def test_missing_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(tmp_path / "config.toml") == DaemonConfig()


def test_save_then_load_round_trips_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    config = DaemonConfig(listen=("/ip4/127.0.0.1/udp/0/quic-v1",), api_socket="x.sock",
                          bootstrap=(f"/ip4/10.0.0.1/udp/4001/quic-v1/p2p/{PEER}",))
    save_config(path, config)
    assert load_config(path) == config
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert render_config(config).splitlines()[2] == "version = 1"


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('version = 1\nlisten_addrs = ["/ip4/127.0.0.1/udp/0/quic-v1"]\n')
    with pytest.raises(ConfigError, match="unknown key `listen_addrs`"):
        load_config(path)


def test_unsupported_version() -> None:
    with pytest.raises(ConfigError, match="unsupported config version 2"):
        parse_config({"version": 2})


def test_invalid_toml_is_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("listen = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"listen": "/ip4/1.2.3.4/udp/1/quic-v1"}, "`listen` must be a list"),
        ({"listen": []}, "at least one"),
        ({"listen": ["/ip4/1.2.3.4/udp/1/quic"]}, "quic-v1"),
        ({"listen": ["/ip4/999.2.3.4/udp/1/quic-v1"]}, "listen"),
        ({"listen": [5]}, "strings"),
        ({"api_socket": 5}, "`api_socket` must be a str"),
        ({"bootstrap": ["/ip4/1.2.3.4/udp/1/quic-v1"]}, "/p2p/"),
    ],
)
def test_invalid_values_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(data, "config.toml")


def test_with_listen_replaces_addresses() -> None:
    config = DaemonConfig().with_listen(["/ip6/::1/udp/0/quic-v1"])
    assert config.listen == ("/ip6/::1/udp/0/quic-v1",)


def test_home_precedence(tmp_path: Path) -> None:
    env = {"OVERLAY_HOME": str(tmp_path / "env")}
    assert resolve_home(str(tmp_path / "cli"), env).root == tmp_path / "cli"
    assert resolve_home(None, env).root == tmp_path / "env"
    assert resolve_home(None, {}).root == Path("~/.overlay").expanduser()


def test_home_paths_and_api_socket(tmp_path: Path) -> None:
    home = Home(tmp_path)
    assert home.key_file == tmp_path / "identity.key"
    assert home.config_file == tmp_path / "config.toml"
    assert home.api_socket() == tmp_path / "api.sock"
    assert home.api_socket("other.sock") == tmp_path / "other.sock"
    assert home.api_socket("/run/x.sock") == Path("/run/x.sock")


def test_home_directory_is_private(tmp_path: Path) -> None:
    home = Home(tmp_path / "new")
    home.ensure()
    assert stat.S_IMODE(os.stat(home.root).st_mode) == 0o700
