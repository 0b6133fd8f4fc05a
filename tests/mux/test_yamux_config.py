"""YamuxConfig defaults follow the spec and bad values raise ValueError."""

from __future__ import annotations

import dataclasses

import pytest

from overlay.errors import ConfigError
from overlay.mux import YamuxConfig


def test_defaults_follow_the_spec() -> None:
    config = YamuxConfig()
    assert config.receive_window == 256 * 1024
    assert config.accept_backlog == 256 and config.max_ack_backlog == 256
    assert config.keepalive_interval == 30.0


def test_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        YamuxConfig().receive_window = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    "changes",
    [
        {"receive_window": 256 * 1024 - 1},
        {"receive_window": 16 * 1024 * 1024 + 1},
        {"max_frame_size": 1023},
        {"send_buffer_limit": 0},
        {"max_inbound_streams": 0},
        {"max_outbound_streams": 0},
        {"accept_backlog": 0},
        {"max_ack_backlog": 0},
        {"max_pending_pings": 0},
        {"max_control_backlog": 1023},
        {"keepalive_interval": 0.0},
        {"ping_timeout": 0.0},
        {"close_timeout": -1.0},
    ],
    ids=lambda c: next(iter(c)),
)
def test_invalid_values(changes: dict[str, object]) -> None:
    with pytest.raises(ValueError) as info:
        YamuxConfig(**changes)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)


def test_keepalive_can_be_disabled_and_windows_raised() -> None:
    config = YamuxConfig(keepalive_interval=None, receive_window=16 * 1024 * 1024)
    assert config.keepalive_interval is None
