"""The daemon config's ``relay_limits`` table → ``RelayLimits``.

Keys (all optional): ``duration`` and ``data`` per relayed connection
(0 means unlimited), ``reservation_ttl`` (seconds), ``reservations``
(total), ``reservations_per_ip``, ``circuits_per_peer``, ``circuits``
(total) and ``allowlist`` (peer IDs whose circuits with each other run
unlimited).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from overlay.errors import ConfigError, InvalidPeerId
from overlay.identity import PeerId
from overlay.relay.server_core import RelayLimits

__all__ = ["RELAY_LIMIT_KEYS", "relay_limits_from_table"]

_INT_KEYS = {
    "reservations": "max_reservations",
    "reservations_per_ip": "max_reservations_per_prefix",
    "circuits_per_peer": "max_circuits_per_peer",
    "circuits": "max_circuits",
}
RELAY_LIMIT_KEYS = ("duration", "data", "reservation_ttl", *_INT_KEYS, "allowlist")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ConfigError(f"`relay_limits.{key}` must be a non-negative number")
    return float(value)


def relay_limits_from_table(table: Mapping[str, Any]) -> RelayLimits:
    """Raises ``ConfigError`` naming the key for anything unknown or invalid."""
    if not isinstance(table, Mapping):
        raise ConfigError("`relay_limits` must be a table")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "duration":
            seconds = _number(key, value)
            kwargs["circuit_duration"] = seconds or None
        elif key == "data":
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError("`relay_limits.data` must be a non-negative integer (bytes)")
            kwargs["circuit_data"] = value or None
        elif key == "reservation_ttl":
            kwargs["reservation_ttl"] = _number(key, value)
        elif key in _INT_KEYS:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"`relay_limits.{key}` must be an integer")
            kwargs[_INT_KEYS[key]] = value
        elif key == "allowlist":
            if not isinstance(value, list | tuple):
                raise ConfigError("`relay_limits.allowlist` must be a list of peer IDs")
            try:
                kwargs["allowlist"] = frozenset(PeerId.from_string(str(v)) for v in value)
            except InvalidPeerId as exc:
                raise ConfigError(f"`relay_limits.allowlist`: {exc}") from None
        else:
            raise ConfigError(f"unknown key `relay_limits.{key}` "
                              f"(known: {', '.join(RELAY_LIMIT_KEYS)})")
    try:
        return RelayLimits(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"`relay_limits`: {exc}") from None
