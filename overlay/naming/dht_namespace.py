"""The ``/ovl-name/`` namespace of the DHT record store (pure).

The record store calls, for every key under ``/ovl-name/``:

- ``validate(key, value, now)`` before storing or returning a value; it
  raises a ``RecordRejected`` subclass, and the store refuses the PUT;
- ``accept_replacement(key, existing, incoming, now)`` when it already holds
  a value for the key; this is where owners are pinned at storage nodes;
- ``select(key, values)`` to pick the best of several valid values (after a
  GET from several peers, or ``[incoming, held]`` on a PUT); it returns an
  index into ``values``.  Without a clock it cannot tell that a held record
  expired, which is why a store should prefer ``accept_replacement``.

The key is ``/ovl-name/<normalized name>`` as bytes.  Nothing here imports
the kad package: the store talks to any object with these methods.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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

    def __init__(
        self,
        config: NamingConfig = NamingConfig(),
        wrap_error: Callable[[RecordRejected], Exception] | None = None,
    ) -> None:
        """``wrap_error`` lets a record store that catches its own error type
        receive one (the naming error is chained as its cause)."""
        self.config = config
        self.policy = StoragePolicy(config)
        self._wrap = wrap_error

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
        try:
            self.validated(key, value, now)
        except RecordRejected as exc:
            if self._wrap is None:
                raise
            raise self._wrap(exc) from exc

    def validated(self, key: bytes | str, value: bytes, now: float) -> NameRecord:
        """The parsed record if ``value`` is valid under ``key`` at ``now``."""
        return validate(value, now, self.config, expected_name=self.name_of(key))

    def select(self, key: bytes | str, values: Sequence[bytes]) -> int:
        """Index of the value that supersedes the others.

        When two values are unrelated (different owners, no transfer or
        release between them) the later one in the list is kept: the record
        store asks ``select(key, [incoming, held])``, so the held owner stays
        pinned.  Values that no longer decode are never chosen."""
        if not values:
            raise ValueError("select needs at least one value")
        name = self.name_of(key)
        best: tuple[int, NameRecord] | None = None
        for index in range(len(values) - 1, -1, -1):
            try:
                record = decode_record(values[index], self.config.max_record_bytes)
            except RecordRejected:
                continue
            if record.name != name:
                continue
            if best is None or supersedes(record, best[1]):
                best = (index, record)
        return len(values) - 1 if best is None else best[0]

    def decide_replacement(
        self, key: bytes | str, existing: bytes, incoming: bytes, now: float
    ) -> Decision:
        """The storage policy's typed decision; raises the incoming record's
        validation error.  A held value that no longer validates (expired)
        does not pin anything."""
        return self.policy.decide_bytes(existing, incoming, now, expected_name=self.name_of(key))

    def accept_replacement(
        self, key: bytes | str, existing: bytes, incoming: bytes, now: float
    ) -> bool:
        try:
            return self.decide_replacement(key, existing, incoming, now).accept
        except RecordRejected:
            return False
