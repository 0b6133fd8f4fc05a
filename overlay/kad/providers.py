"""Provider records: who announces that it provides a key.

Entries are valid for 48 h (go-libp2p's ProvideValidity) unless the
provider republishes.  Keys are multihashes of at most 80 bytes.  Times are
wall-clock seconds passed in as ``now``.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    max_returned: int = 20
    """Providers returned in one GET_PROVIDERS answer."""

    def __post_init__(self) -> None:
        if self.validity <= 0:
            raise ValueError("validity must be positive")
        if min(self.max_providers_per_key, self.max_keys, self.max_keys_per_peer, self.max_returned) < 1:
            raise ValueError("provider limits must be at least 1")


def check_provider_key(key: bytes) -> None:
    if not key or len(key) > MAX_PROVIDER_KEY_BYTES:
        raise InvalidProviderKey(
            f"provider key of {len(key)} bytes is outside 1..{MAX_PROVIDER_KEY_BYTES}"
        )


class ProviderStore:
    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        # key -> provider -> (info, expires_at); dicts keep insertion order,
        # so the first entry of a key is its oldest.
        self._entries: dict[bytes, dict[PeerId, tuple[PeerInfo, float]]] = {}
        self._per_peer: dict[PeerId, int] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, key: bytes, provider: PeerInfo, now: float) -> None:
        check_provider_key(key)
        entries = self._entries.get(key)
        if entries is None:
            if len(self._entries) >= self.config.max_keys:
                self.expire(now)
                if len(self._entries) >= self.config.max_keys:
                    raise StorageQuotaExceeded(f"provider store is full ({self.config.max_keys} keys)")
            entries = self._entries[key] = {}
        peer = provider.peer_id
        if peer in entries:
            del entries[peer]  # re-insert as newest
        else:
            if self._per_peer.get(peer, 0) >= self.config.max_keys_per_peer:
                if not entries:
                    del self._entries[key]
                raise StorageQuotaExceeded(f"{peer} already provides {self.config.max_keys_per_peer} keys")
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
            if len(entries) >= self.config.max_providers_per_key:
                oldest = next(iter(entries))
                del entries[oldest]
                self._uncount(oldest)
        entries[peer] = (provider, now + self.config.validity)

    def get(self, key: bytes, now: float) -> list[PeerInfo]:
        entries = self._entries.get(key)
        if not entries:
            return []
        live = [info for info, expires in reversed(entries.values()) if expires > now]
        return live[: self.config.max_returned]

    def expire(self, now: float) -> int:
        removed = 0
        for key in list(self._entries):
            entries = self._entries[key]
            for peer in [p for p, (_, expires) in entries.items() if expires <= now]:
                del entries[peer]
                self._uncount(peer)
                removed += 1
            if not entries:
                del self._entries[key]
        return removed

    def _uncount(self, peer: PeerId) -> None:
        left = self._per_peer.get(peer, 0) - 1
        if left > 0:
            self._per_peer[peer] = left
        else:
            self._per_peer.pop(peer, None)
