"""Errors of the identity layer, placed in overlay's one error tree.

A key file problem is a local configuration problem: the node cannot start,
and the message must tell the operator what to do about it.
"""

from __future__ import annotations

from overlay.errors import ConfigError, DecodeError

__all__ = [
    "KeyFileError",
    "KeyFileMissing",
    "KeyFileExists",
    "KeyFileInvalid",
    "KeyFileInsecure",
    "PeerRecordMismatch",
]


class KeyFileError(ConfigError):
    """A host key file cannot be used."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class KeyFileMissing(KeyFileError):
    """There is no key file at the path."""


class KeyFileExists(KeyFileError):
    """Refusing to create a key where one exists; overwriting would change
    the node's identity for good."""


class KeyFileInvalid(KeyFileError):
    """The file is not a libp2p PrivateKey protobuf we can use."""


class KeyFileInsecure(KeyFileError):
    """The key file is readable by group or others."""


class PeerRecordMismatch(DecodeError):
    """A signed peer record names a peer other than the envelope's signer."""
