from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from overlay.errors import ConfigError
from overlay.identity import Ed25519PrivateKey, PeerId, private_key_from_protobuf
from overlay.identity.errors import (
    KeyFileError,
    KeyFileExists,
    KeyFileInsecure,
    KeyFileInvalid,
    KeyFileMissing,
)
from overlay.identity.keyfile import (
    create_private_key_file,
    load_private_key,
    save_private_key,
)

from . import vectors


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_save_then_load_round_trips_with_mode_0600(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    path = tmp_path / "identity.key"
    save_private_key(path, key)
    assert _mode(path) == 0o600
    assert path.read_bytes() == key.to_protobuf()
    loaded = load_private_key(path)
    assert loaded.public_key() == key.public_key()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identity.key"]


def test_save_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    save_private_key(path, first)
    save_private_key(path, second)
    assert load_private_key(path).public_key() == second.public_key()
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_spec_vector_key_files_of_every_type_load(tmp_path: Path) -> None:
    for name, data in [
        ("ed", vectors.ED25519_PRIVATE),
        ("secp", vectors.SECP256K1_PRIVATE),
        ("ecdsa", vectors.ECDSA_PRIVATE),
        ("rsa", vectors.RSA_PRIVATE),
    ]:
        path = tmp_path / name
        save_private_key(path, private_key_from_protobuf(data))
        assert path.read_bytes() == data
        assert load_private_key(path).to_protobuf() == data


def test_create_makes_a_new_ed25519_key(tmp_path: Path) -> None:
    path = tmp_path / "home" / "identity.key"
    key = create_private_key_file(path)
    assert _mode(path) == 0o600
    assert PeerId.from_public_key(load_private_key(path).public_key()) == PeerId.from_public_key(
        key.public_key()
    )
    assert str(PeerId.from_public_key(key.public_key())).startswith("12D3KooW")
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]


def test_create_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    original = create_private_key_file(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileExists, match="refusing to overwrite"):
        create_private_key_file(path)
    with pytest.raises(KeyFileExists):
        create_private_key_file(path, Ed25519PrivateKey.generate())
    assert path.read_bytes() == before
    assert load_private_key(path).public_key() == original.public_key()
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_create_does_not_overwrite_a_dangling_symlink(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(KeyFileExists):
        create_private_key_file(path)
    assert not (tmp_path / "elsewhere").exists()


def test_missing_key_file_says_how_to_create_one(tmp_path: Path) -> None:
    with pytest.raises(KeyFileMissing, match="overlay init"):
        load_private_key(tmp_path / "nope.key")


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_readable_key_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "identity.key"
    save_private_key(path, Ed25519PrivateKey.generate())
    os.chmod(path, mode)
    with pytest.raises(KeyFileInsecure, match="chmod 600") as info:
        load_private_key(path)
    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a key", b"\x08\x01\x12\x40" + bytes(10), b"\x08\x01\x12\x20" + bytes(31)],
)
def test_bad_content_raises_key_file_invalid(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileInvalid, match="identity.key"):
        load_private_key(path)


def test_oversized_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(bytes(1 << 20))
    os.chmod(path, 0o600)
    with pytest.raises(KeyFileInvalid, match="larger than"):
        load_private_key(path)


def test_directory_and_symlink_are_not_key_files(tmp_path: Path) -> None:
    directory = tmp_path / "dir.key"
    directory.mkdir(mode=0o700)
    with pytest.raises(KeyFileInvalid):
        load_private_key(directory)
    real = tmp_path / "real.key"
    save_private_key(real, Ed25519PrivateKey.generate())
    link = tmp_path / "link.key"
    link.symlink_to(real)
    with pytest.raises(KeyFileInvalid):
        load_private_key(link)


def test_failed_save_keeps_the_old_key_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "identity.key"
    old = Ed25519PrivateKey.generate()
    save_private_key(path, old)

    def broken_replace(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(KeyFileError, match="No space left"):
        save_private_key(path, Ed25519PrivateKey.generate())
    monkeypatch.undo()
    assert load_private_key(path).public_key() == old.public_key()
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_failed_create_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "identity.key"

    def broken_link(src: object, dst: object) -> None:
        raise OSError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(KeyFileError, match="cannot create key file"):
        create_private_key_file(path)
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_create_loses_a_race_without_overwriting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "identity.key"
    winner = create_private_key_file(path)
    # Pretend the file appeared between the existence check and the link.
    monkeypatch.setattr(os.path, "lexists", lambda _p: False)
    with pytest.raises(KeyFileExists):
        create_private_key_file(path)
    monkeypatch.undo()
    assert load_private_key(path).public_key() == winner.public_key()
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]


def test_create_under_a_file_reports_a_key_file_error(tmp_path: Path) -> None:
    blocker = tmp_path / "home"
    blocker.write_bytes(b"")
    with pytest.raises(KeyFileError, match="directory") as info:
        create_private_key_file(blocker / "identity.key")
    assert not isinstance(info.value, KeyFileExists)
