"""``Connector``'s memory of exposers that answered OK (``Pipelining.WARM``):
a success makes a name's service warm for ``WARM_SECONDS``, a refusal
cools it at once, and the memory is bounded."""

from __future__ import annotations

from overlay.apps import connector as connector_module
from overlay.apps.connector import WARM_SECONDS, Connector


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _connector(clock: _Clock) -> Connector:
    return Connector(host=None, names=lambda: None, zone="ovl", clock=clock)  # type: ignore[arg-type]


def test_ok_warms_for_a_while_and_a_refusal_cools() -> None:
    clock = _Clock()
    c = _connector(clock)
    assert not c.is_warm("bob.ovl", "http")
    c.answered("bob.ovl", "http", True)
    assert c.is_warm("bob.ovl", "http")
    assert not c.is_warm("bob.ovl", "ssh") and not c.is_warm("alice.ovl", "http")
    clock.now += WARM_SECONDS - 0.5
    assert c.is_warm("bob.ovl", "http")
    clock.now += 1.0
    assert not c.is_warm("bob.ovl", "http")
    c.answered("bob.ovl", "http", True)
    c.answered("bob.ovl", "http", False)
    assert not c.is_warm("bob.ovl", "http")


def test_memory_is_bounded_oldest_first(monkeypatch: object) -> None:
    clock = _Clock()
    c = _connector(clock)
    limit = connector_module._MAX_WARM
    for i in range(limit + 10):
        c.answered(f"n{i}.ovl", "http", True)
    assert not c.is_warm("n0.ovl", "http") and not c.is_warm("n9.ovl", "http")
    assert c.is_warm("n10.ovl", "http") and c.is_warm(f"n{limit + 9}.ovl", "http")
    # A fresh answer moves an entry to the young end.
    c.answered("n10.ovl", "http", True)
    c.answered("late.ovl", "http", True)
    assert c.is_warm("n10.ovl", "http") and not c.is_warm("n11.ovl", "http")
