"""Configuration of the naming subsystem (one frozen dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from overlay.naming.errors import InvalidName
from overlay.naming.names import DEFAULT_ZONE, normalize_hostname
from overlay.naming.pow import DEFAULT_POW_BITS

__all__ = ["MAX_RECORD_BYTES", "NamingConfig"]

# The IPNS cap, which the DHT record store also enforces per value.
MAX_RECORD_BYTES = 10 * 1024


@dataclass(frozen=True, slots=True)
class NamingConfig:
    zone: str = DEFAULT_ZONE
    """Zone suffix every human-readable name must end with (normalized)."""
    pow_bits: int = DEFAULT_POW_BITS
    """Leading zero bits the proof of work over (name, owner) must reach;
    every node of a network must use the same value."""
    max_record_bytes: int = MAX_RECORD_BYTES
    """Serialized records above this size are refused before parsing."""
    max_validity: float = 7 * 24 * 3600.0
    """Longest validity a record may claim beyond ``now``, in seconds;
    bounds how long an unrenewed owner stays pinned."""
    clock_skew: float = 300.0
    """Tolerance for peers' clocks when checking ``max_validity``."""

    def __post_init__(self) -> None:
        try:
            zone = normalize_hostname(self.zone)
        except InvalidName as exc:
            raise ValueError(f"zone: {exc}") from None
        if zone != self.zone:
            raise ValueError(f"zone must be given normalized, as {zone!r}")
        if not 0 <= self.pow_bits <= 64:
            raise ValueError("pow_bits must be within 0..64")
        if not 512 <= self.max_record_bytes <= 64 * 1024:
            raise ValueError("max_record_bytes must be within 512..65536")
        if self.max_validity <= 0:
            raise ValueError("max_validity must be positive")
        if self.clock_skew < 0:
            raise ValueError("clock_skew must not be negative")
