"""The bootstrap says what it reached, and exactly why not: a dead
bootstrap peer is a WARNING within seconds, not silence."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

import pytest

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.service import KadService
from tests.kadnet.helpers import FAST_KAD, full_addr, kad_nodes, start_node, with_bootstrap

LOGGER = "overlay.kad.service"


async def _bootstrap_report(kad: KadService, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while kad.last_bootstrap is None:
            kad.activity.clear()
            await kad.activity.wait()


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]


async def test_a_dead_bootstrap_peer_is_a_warning_within_seconds(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    gone = await start_node()
    dead_addr = full_addr(gone.host)
    gone.host.abort_for_test()  # crashed: not even a close
    await gone.stop()
    started = time.monotonic()
    node = await start_node(with_bootstrap(FAST_KAD, dead_addr))
    try:
        await _bootstrap_report(node.kad, timeout=10)
        took = time.monotonic() - started
    finally:
        await node.stop()
    report = node.kad.last_bootstrap
    assert report is not None and not report.ok and report.reached == ()
    warnings = _warnings(caplog)
    assert any(str(gone.host.peer_id) in w and "unreachable" in w for w in warnings), warnings
    assert any("reached 0 of 1" in w and "none usable" in w for w in warnings), warnings
    print(f"\ndead bootstrap peer reported after {took:.2f} s")
    assert took < 5.0


async def test_a_wrong_peer_id_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with kad_nodes(1) as [live]:
        impostor = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
        wrong = f"{live.host.listen_addrs()[0]}/p2p/{impostor}"
        node = await start_node(with_bootstrap(FAST_KAD, wrong))
        try:
            await _bootstrap_report(node.kad, timeout=10)
        finally:
            await node.stop()
    assert any("peer ID mismatch" in w for w in _warnings(caplog)), _warnings(caplog)


async def test_a_peer_without_our_kad_protocol_is_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    other = replace(FAST_KAD, protocol_id="/elsewhere/kad/1.0.0")
    async with kad_nodes(1, other) as [foreign]:
        node = await start_node(with_bootstrap(FAST_KAD, full_addr(foreign.host)))
        try:
            await _bootstrap_report(node.kad, timeout=10)
        finally:
            await node.stop()
    assert any(f"refused the kad protocol {FAST_KAD.protocol_id}" in w for w in _warnings(caplog)), _warnings(caplog)


async def test_a_good_bootstrap_is_one_info_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    async with kad_nodes(2) as [a, b]:
        node = await start_node(with_bootstrap(FAST_KAD, full_addr(a.host)))
        try:
            await _bootstrap_report(node.kad, timeout=10)
        finally:
            await node.stop()
    infos = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == logging.INFO]
    assert any("reached 1 of 1 bootstrap peer(s), routing table has" in line for line in infos), infos
    assert _warnings(caplog) == []
