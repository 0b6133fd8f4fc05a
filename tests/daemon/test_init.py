import os
import stat
from pathlib import Path

import pytest

from overlay.daemon.errors import IdentityError
from overlay.daemon.home import Home
from overlay.daemon.init import init_home, load_identity
from overlay.identity import PeerId
from overlay.identity.keyfile import load_private_key


def test_init_creates_private_key_and_config(tmp_path: Path) -> None:
    home = Home(tmp_path / "h")
    result = init_home(home)
    assert result.created_key and result.created_config
    assert stat.S_IMODE(os.stat(home.key_file).st_mode) == 0o600
    key = load_private_key(home.key_file)
    assert PeerId.from_public_key(key.public_key()) == result.peer_id
    assert "version = 1" in home.config_file.read_text()


def test_second_init_keeps_the_key(tmp_path: Path) -> None:
    home = Home(tmp_path)
    first = init_home(home)
    before = home.key_file.read_bytes()
    second = init_home(home)
    assert not second.created_key and not second.created_config
    assert second.peer_id == first.peer_id
    assert home.key_file.read_bytes() == before


def test_init_keeps_an_edited_config(tmp_path: Path) -> None:
    home = Home(tmp_path)
    init_home(home)
    home.config_file.write_text('version = 1\nlisten = ["/ip4/127.0.0.1/udp/0/quic-v1"]\n')
    init_home(home)
    assert "127.0.0.1" in home.config_file.read_text()


def test_corrupt_key_is_reported_and_left_alone(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ensure()
    home.key_file.write_bytes(b"garbage")
    os.chmod(home.key_file, 0o600)
    with pytest.raises(IdentityError, match="left untouched"):
        init_home(home)
    assert home.key_file.read_bytes() == b"garbage"


def test_missing_key_says_run_init(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="overlay init"):
        load_identity(Home(tmp_path))
