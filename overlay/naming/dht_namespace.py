"""The ``/ovl-name/`` namespace of the DHT record store (pure).

The record store calls, for every key under ``/ovl-name/``:

- ``validate(key, value, now)`` before storing or returning a value; it
  raises a ``RecordRejected`` subclass, and the store refuses the PUT;
- ``accept_replacement(key, existing, incoming, now)`` when it already holds
  a value for the key; this is where owners are pinned at storage nodes;
- ``select(key, values)`` to pick the best of several valid values (after a
  GET from several peers); it returns an index into ``values``.

The key is ``/ovl-name/<normalized name>`` as bytes.  Nothing here imports
the kad package: the store talks to any object with these methods.
"""

from __future__ import annotations

from overlay.naming.config import NamingConfig
from overlay.naming.errors import MalformedName, RecordRejected
from overlay.naming.names import normalize
from overlay.naming.policy import Decision, StoragePolicy, supersedes
from overlay.naming.record import NameRecord, decode_record
from overlay.naming.validate import validate

__all__ = ["NAMESPACE", "NameNamespace"]

NAMESPACE = "/ovl-name/"


def _key_text(key: bytes | str) -> str:
    if isinstance(key, bytes):
        try:
            return key.decode("ascii")
        except UnicodeDecodeError:
            raise MalformedName(repr(key), "key", "DHT key is not ASCII") from None
    return key


class NameNamespace:
    """Validator, selector and replacement policy for name records."""

    namespace = NAMESPACE

    def __init__(self, config: NamingConfig = NamingConfig()) -> None:
        self.config = config
        self.policy = StoragePolicy(config)

    def key_for(self, name: str) -> bytes:
        """The DHT key of ``name`` (normalized here)."""
        return (NAMESPACE + normalize(name, self.config.zone)).encode("ascii")

    def name_of(self, key: bytes | str) -> str:
        """The name a key refers to; the key must hold the normalized form."""
        text = _key_text(key)
        if not text.startswith(NAMESPACE):
            raise MalformedName(text, "key", f"DHT key is outside {NAMESPACE}")
        return text[len(NAMESPACE):]

    def validate(self, key: bytes | str, value: bytes, now: float) -> None:
        self.validated(key, value, now)

    def validated(self, key: bytes | str, value: bytes, now: float) -> NameRecord:
        """``validate`` that also returns the parsed record."""
        return validate(value, now, self.config, expected_name=self.name_of(key))

    def select(self, key: bytes | str, values: list[bytes]) -> int:
        """Index of the best value.  Values are expected to be validated
        already; any that no longer decode are never chosen."""
        if not values:
            raise ValueError("select needs at least one value")
        name = self.name_of(key)
        best: tuple[int, NameRecord] | None = None
        for index, value in enumerate(values):
            try:
                record = decode_record(value, self.config.max_record_bytes)
            except RecordRejected:
                continue
            if record.name != name:
                continue
            if best is None or supersedes(record, best[1]):
                best = (index, record)
        return 0 if best is None else best[0]

    def decide_replacement(
        self, key: bytes | str, existing: bytes, incoming: bytes, now: float
    ) -> Decision:
        """The storage policy's typed decision.  Raises the incoming record's
        validation error; a held value that no longer validates (expired)
        does not pin anything."""
        new = self.validated(key, incoming, now)
        try:
            held: NameRecord | None = self.validated(key, existing, now)
        except RecordRejected:
            held = None
        return self.policy.accept(held, new, now)

    def accept_replacement(
        self, key: bytes | str, existing: bytes, incoming: bytes, now: float
    ) -> bool:
        try:
            return self.decide_replacement(key, existing, incoming, now).accept
        except RecordRejected:
            return False
