"""DHT records and the per-namespace validators and selectors.

A record key is ``/<namespace>/<rest>``.  Every namespace the node accepts
has a registered ``Validator``; any other namespace is rejected with
``UnknownNamespace``.  Two are built in:

- ``/v/<sha256 hex of value>``: immutable, content-addressed values.
  Nobody can overwrite one because the key is the value's hash.
- ``/pk/<peer ID multihash bytes>``: a libp2p ``PublicKey`` protobuf whose
  peer ID equals the key's suffix.

A validator may also implement ``ReplacementPolicy``: the store then asks it,
with the clock, whether an incoming value replaces the held one, instead of
asking the clock-less selector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from overlay.errors import InvalidKeyError, InvalidPeerId, RemoteProtocolError
from overlay.identity import PeerId, public_key_from_protobuf
from overlay.kad.errors import InvalidRecord, UnknownNamespace

__all__ = [
    "Record",
    "Validator",
    "ReplacementPolicy",
    "NamespaceRegistry",
    "ImmutableValidator",
    "PublicKeyValidator",
    "namespace_of",
    "immutable_key",
    "public_key_record_key",
    "default_registry",
]


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes
    value: bytes
    time_received: str = ""
    """RFC 3339 time the holder received it; set by the receiver."""


class Validator(Protocol):
    def validate(self, key: bytes, value: bytes, now: float) -> None:
        """Raise ``InvalidRecord`` unless ``value`` is valid under ``key``
        at wall-clock time ``now`` (seconds since the epoch)."""

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        """Index of the best of several valid values; must be stable."""


@runtime_checkable
class ReplacementPolicy(Protocol):
    """Optional part of a ``Validator``: replacement decided with the clock.

    ``select`` cannot tell that a held value has lapsed (a name whose
    validity ended must stop pinning its owner), so a validator that can
    tell implements this and the store uses it instead of ``select``."""

    def accept_replacement(self, key: bytes, existing: bytes, incoming: bytes, now: float) -> bool:
        """Whether ``incoming`` (already validated at ``now``) may replace
        the held value ``existing`` at wall-clock time ``now``."""
        ...


def namespace_of(key: bytes) -> str:
    """The namespace of ``/ns/...``; raises ``InvalidRecord`` if there is none."""
    if len(key) < 3 or key[0:1] != b"/":
        raise InvalidRecord("record key does not start with /<namespace>/")
    end = key.find(b"/", 1)
    if end <= 1:
        raise InvalidRecord("record key has no /<namespace>/ prefix")
    try:
        return key[1:end].decode("ascii")
    except UnicodeDecodeError:
        raise InvalidRecord("record namespace is not ASCII") from None


def immutable_key(value: bytes) -> bytes:
    return b"/v/" + hashlib.sha256(value).hexdigest().encode("ascii")


def public_key_record_key(peer: PeerId) -> bytes:
    return b"/pk/" + peer.multihash


class ImmutableValidator:
    """``/v/``: the key suffix is the lowercase hex SHA-256 of the value."""

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        if key != immutable_key(value):
            raise InvalidRecord("/v/ record key is not the SHA-256 of its value")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        # All valid values under one key are identical.
        return 0


class PublicKeyValidator:
    """``/pk/``: the value's public key must hash to the key's peer ID."""

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        try:
            peer = PeerId(key[len(b"/pk/") :])
            public_key = public_key_from_protobuf(value)
        except (InvalidPeerId, InvalidKeyError) as exc:
            raise InvalidRecord(f"/pk/ record is malformed: {exc}") from None
        if not peer.matches_public_key(public_key):
            raise InvalidRecord("/pk/ record key does not belong to the peer ID")

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        return 0


class NamespaceRegistry:
    """Validators by namespace; the naming subsystem registers its own."""

    def __init__(self) -> None:
        self._validators: dict[str, Validator] = {}

    def register(self, namespace: str, validator: Validator) -> None:
        if not namespace or "/" in namespace:
            raise ValueError(f"namespace {namespace!r} must be one non-empty path segment")
        self._validators[namespace] = validator

    def namespaces(self) -> list[str]:
        return sorted(self._validators)

    def validator_for(self, key: bytes) -> Validator:
        namespace = namespace_of(key)
        validator = self._validators.get(namespace)
        if validator is None:
            raise UnknownNamespace(namespace)
        return validator

    def validate(self, record: Record, now: float) -> None:
        self.validator_for(record.key).validate(record.key, record.value, now)

    def select(self, key: bytes, values: Sequence[bytes]) -> int:
        if not values:
            raise ValueError("select needs at least one value")
        index = self.validator_for(key).select(key, values)
        if not 0 <= index < len(values):
            raise InvalidRecord(f"selector for {key[:32]!r} returned index {index}")
        return index

    def replaces(self, key: bytes, existing: bytes, incoming: bytes, now: float) -> bool:
        """Whether the validated ``incoming`` value should take the place of
        the held ``existing`` one at ``now``.

        The namespace's ``ReplacementPolicy`` decides if it has one, else its
        selector, asked ``[incoming, existing]``.  Either way a held value
        that no longer validates (it expired, or the validator changed)
        never blocks a valid incoming one."""
        validator = self.validator_for(key)
        if isinstance(validator, ReplacementPolicy):
            accepted = validator.accept_replacement(key, existing, incoming, now)
        else:
            accepted = self.select(key, [incoming, existing]) == 0
        if accepted:
            return True
        # Only on refusal: re-validating costs a signature check per PUT.
        try:
            validator.validate(key, existing, now)
        except RemoteProtocolError:
            return True
        return False


def default_registry() -> NamespaceRegistry:
    registry = NamespaceRegistry()
    registry.register("v", ImmutableValidator())
    registry.register("pk", PublicKeyValidator())
    return registry
