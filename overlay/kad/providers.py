"""Provider records: who announces that it provides a key.

Entries are valid for 48 h (go-libp2p's ProvideValidity) unless the
provider republishes.  Keys are multihashes of at most 80 bytes.  Times are
wall-clock seconds passed in as ``now``.

Foreign entries are counted per provider and per source IP prefix (STYLE
rule 17); this node's own entries (``own=True``) live
in a budget of their own, so a flood of foreign announcements can never
make our own ``provide`` fail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from overlay.identity import PeerId
from overlay.kad.errors import InvalidProviderKey, StorageQuotaExceeded
from overlay.kad.messages import PeerInfo

__all__ = ["ProviderConfig", "ProviderStore", "MAX_PROVIDER_KEY_BYTES", "check_provider_key"]

MAX_PROVIDER_KEY_BYTES = 80


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """Limits of the provider store."""

    validity: float = 48 * 3600.0
    """Seconds a provider entry lives without being republished."""
    max_providers_per_key: int = 100
    """Entries kept per key; the oldest gives way to a new one."""
    max_keys: int = 65536
    """Distinct keys tracked."""
    max_keys_per_peer: int = 1024
    """Keys one peer may announce here."""
    max_entries_per_source: int = 4096
    """Entries announced from one source (IP /24 or /48) by all its peers."""
    max_own_keys: int = 65536
    """Keys this node provides, a budget apart from the foreign ones."""
    max_returned: int = 20
    """Providers returned in one GET_PROVIDERS answer."""

    def __post_init__(self) -> None:
        if self.validity <= 0:
            raise ValueError("validity must be positive")
        if min(self.max_providers_per_key, self.max_keys, self.max_keys_per_peer,
               self.max_returned, self.max_entries_per_source, self.max_own_keys) < 1:
            raise ValueError("provider limits must be at least 1")


def check_provider_key(key: bytes) -> None:
    if not key or len(key) > MAX_PROVIDER_KEY_BYTES:
        raise InvalidProviderKey(
            f"provider key of {len(key)} bytes is outside 1..{MAX_PROVIDER_KEY_BYTES}"
        )


class ProviderStore:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        # key -> provider -> (info, expires_at, source); dicts keep insertion
        # order, so the first entry of a key is its oldest.
        self._entries: dict[bytes, dict[PeerId, tuple[PeerInfo, float, str | None]]] = {}
        self._own: dict[bytes, tuple[PeerInfo, float]] = {}
        self._per_peer: dict[PeerId, int] = {}
        self._per_source: dict[str, int] = {}
        self.on_add: Callable[[bytes, PeerInfo, float, str | None, bool], None] | None = None
        """Called after each stored entry (the persistent adapter logs it)."""

    def __len__(self) -> int:
        return len(self._entries.keys() | self._own.keys())

    def add(self, key: bytes, provider: PeerInfo, now: float, *, source: str | None = None,
            own: bool = False, expires_at: float | None = None) -> None:
        """Store that ``provider`` provides ``key``: ``own`` for this node's
        announcements, else a remote's from ``source`` (its IP prefix)."""
        check_provider_key(key)
        expires = now + self.config.validity if expires_at is None else expires_at
        if own:
            if key not in self._own and len(self._own) >= self.config.max_own_keys:
                self._expire_own(now)
                if len(self._own) >= self.config.max_own_keys:
                    raise StorageQuotaExceeded(
                        f"own provider budget is full ({self.config.max_own_keys} keys)")
            self._own[key] = (provider, expires)
        else:
            self._add_foreign(key, provider, now, source, expires)
        if self.on_add is not None:
            self.on_add(key, provider, expires, source, own)

    def _add_foreign(self, key: bytes, provider: PeerInfo, now: float, source: str | None,
                     expires: float) -> None:
        entries = self._entries.get(key)
        if entries is None:
            if len(self._entries) >= self.config.max_keys:
                self.expire(now)
                if len(self._entries) >= self.config.max_keys:
                    raise StorageQuotaExceeded(f"provider store is full ({self.config.max_keys} keys)")
            entries = self._entries[key] = {}
        peer = provider.peer_id
        old = entries.pop(peer, None)  # re-inserted as newest
        if old is not None:
            self._uncount(peer, old[2])
        refusal = None
        if self._per_peer.get(peer, 0) >= self.config.max_keys_per_peer:
            refusal = f"{peer} already provides {self.config.max_keys_per_peer} keys"
        elif source is not None and self._per_source.get(
                source, 0) >= self.config.max_entries_per_source:
            refusal = (f"source {source} already announced "
                       f"{self.config.max_entries_per_source} provider entries")
        if refusal is not None:
            if old is not None:
                entries[peer] = old
                self._count(peer, old[2])
            elif not entries:
                del self._entries[key]
            raise StorageQuotaExceeded(refusal)
        if old is None and len(entries) >= self.config.max_providers_per_key:
            oldest = next(iter(entries))
            self._uncount(oldest, entries.pop(oldest)[2])
        entries[peer] = (provider, expires, source)
        self._count(peer, source)

    def get(self, key: bytes, now: float) -> list[PeerInfo]:
        out: list[PeerInfo] = []
        own = self._own.get(key)
        if own is not None and own[1] > now:
            out.append(own[0])
        entries = self._entries.get(key)
        if entries:
            out.extend(info for info, expires, _ in reversed(entries.values())
                       if expires > now and (own is None or info.peer_id != own[0].peer_id))
        return out[: self.config.max_returned]

    def entry_count(self) -> int:
        return len(self._own) + sum(self._per_peer.values())

    def items(self) -> list[tuple[bytes, PeerInfo, float, str | None, bool]]:
        """Every entry, own ones first (a snapshot for persistence)."""
        out: list[tuple[bytes, PeerInfo, float, str | None, bool]] = [
            (key, info, expires, None, True) for key, (info, expires) in self._own.items()]
        out.extend((key, info, expires, source, False)
                   for key, entries in self._entries.items()
                   for info, expires, source in entries.values())
        return out

    def expire(self, now: float) -> int:
        removed = self._expire_own(now)
        for key in list(self._entries):
            entries = self._entries[key]
            for peer in [p for p, (_, expires, _) in entries.items() if expires <= now]:
                self._uncount(peer, entries.pop(peer)[2])
                removed += 1
            if not entries:
                del self._entries[key]
        return removed

    def _expire_own(self, now: float) -> int:
        dead = [key for key, (_, expires) in self._own.items() if expires <= now]
        for key in dead:
            del self._own[key]
        return len(dead)

    def _count(self, peer: PeerId, source: str | None) -> None:
        self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        if source is not None:
            self._per_source[source] = self._per_source.get(source, 0) + 1

    def _uncount(self, peer: PeerId, source: str | None) -> None:
        _decrement(self._per_peer, peer)
        if source is not None:
            _decrement(self._per_source, source)


K = TypeVar("K")


def _decrement(counts: dict[K, int], key: K) -> None:
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)
