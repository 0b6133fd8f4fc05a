"""When a client re-registers (pure, monotonic `now`)."""

from __future__ import annotations

import pytest

from overlay.rendezvous import RefreshConfig, RefreshPlan
from overlay.rendezvous.refresh import RefreshDue

from tests.rendezvous.helpers import peer

P = peer(1)


def test_refresh_before_the_ttl_ends() -> None:
    plan = RefreshPlan(RefreshConfig(refresh_fraction=0.75))
    plan.registered(P, "app", None, 7200, 100.0)
    assert plan.next_deadline() == 100.0 + 5400
    assert plan.due(100.0 + 5399) == []
    assert plan.due(100.0 + 5400) == [RefreshDue(P, "app", None)]
    assert plan.due(100.0 + 5401) == [] and plan.next_deadline() is None  # in flight
    assert plan.refreshed(P, "app", 3600, 6000.0)
    assert plan.next_deadline() == 6000.0 + 2700


def test_failures_retry_until_the_registration_would_have_expired() -> None:
    plan = RefreshPlan(RefreshConfig(refresh_fraction=0.5, retry_interval=30))
    plan.registered(P, "app", 120, 120, 0.0)
    assert plan.due(60.0) == [RefreshDue(P, "app", 120)]
    assert plan.failed(P, "app", 60.0) is True and plan.next_deadline() == 90.0
    assert plan.due(90.0) and plan.failed(P, "app", 90.0) is False  # 120 s would pass
    assert len(plan) == 0 and plan.next_deadline() is None


def test_a_refresh_racing_an_unregister_is_reported() -> None:
    plan = RefreshPlan()
    plan.registered(P, "app", None, 7200, 0.0)
    assert plan.due(10_000.0)
    plan.remove(P, "app")
    assert plan.refreshed(P, "app", 7200, 10_001.0) is False and len(plan) == 0


def test_entries_are_per_point_and_namespace() -> None:
    plan = RefreshPlan()
    plan.registered(P, "a", None, 100, 0.0)
    plan.registered(peer(2), "a", None, 200, 0.0)
    plan.registered(P, "b", None, 300, 0.0)
    assert [d.point for d in plan.due(150.0)] == [P, peer(2)]
    assert set(plan.entries()) == {(P, "a"), (peer(2), "a"), (P, "b")}


@pytest.mark.parametrize("kwargs", [{"refresh_fraction": 1.0}, {"refresh_fraction": 0.0},
                                    {"retry_interval": 0}])
def test_config_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RefreshConfig(**kwargs)
