"""Circuit relay v2 interop: a py-libp2p relay (its ``CircuitV2Protocol``
with hop enabled, over QUIC-v1, in its own virtualenv) between two
``overlay`` hosts.  A reserves on the py-libp2p relay (its voucher must
verify), B dials ``…/p2p/<relay>/p2p-circuit/p2p/<A>`` and pings A through
it: py-libp2p reads our hop CONNECT, speaks stop to A, and splices."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from overlay.host import Host
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.relay.client import RelayClient, open_circuit
from overlay.relay.errors import NoReservation
from overlay.relay.server import RelayServer

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
RELAY_SCRIPT = HERE / "pylibp2p_relay_peer.py"
LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
START_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0


@asynccontextmanager
async def pylibp2p_relay(python: str, *args: str) -> AsyncIterator[dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        python, str(RELAY_SCRIPT), *args, cwd=str(HERE),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await proc.stdout.readline()
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise AssertionError(f"py-libp2p relay did not start:\n{err.decode()[-3000:]}")
        yield json.loads(line)
    finally:
        if proc.returncode is None:
            if proc.stdin is not None:
                proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@asynccontextmanager
async def overlay_node(stack: AsyncExitStack) -> AsyncIterator[tuple[Host, RelayClient]]:
    host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate()))
    await host.listen([LOOPBACK])
    client = await stack.enter_async_context(RelayClient(host))
    yield host, client


@pytest.mark.timeout(120)
async def test_overlay_nodes_meet_through_a_pylibp2p_relay(pylibp2p_python: str) -> None:
    async with pylibp2p_relay(pylibp2p_python) as relay, AsyncExitStack() as stack:
        relay_addr = next(a for a in relay["addrs"] if a.startswith("/ip4/127.0.0.1/"))
        relay_id = PeerId.from_string(relay["peer_id"])
        async with overlay_node(stack) as (a, a_client), overlay_node(stack) as (b, _):
            async with asyncio.timeout(STEP_TIMEOUT):
                await a.connect(relay_addr)
                info = await a_client.reserve(relay_id)
            # py-libp2p signs a spec voucher; ours verified it names both.
            assert info.voucher is not None
            assert info.voucher.relay == relay_id and info.voucher.peer == a.peer_id
            assert info.addrs, info

            # py-libp2p's NO_RESERVATION arrives as our typed refusal.
            nobody = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
            async with asyncio.timeout(STEP_TIMEOUT):
                await b.connect(relay_addr)
                with pytest.raises(NoReservation):
                    await open_circuit(b, relay_id, nobody)

            circuit = f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}"
            async with asyncio.timeout(STEP_TIMEOUT):
                conn = await b.connect(circuit)
                assert conn.path == "relayed" and conn.remote_peer == a.peer_id
                assert await b.ping(a.peer_id) > 0
            assert a_client.circuits_accepted == 1


@pytest.mark.timeout(120)
async def test_pylibp2p_peer_reserves_on_an_overlay_relay_and_is_reached(
        pylibp2p_python: str) -> None:
    async with AsyncExitStack() as stack:
        key = Ed25519PrivateKey.generate()
        relay = await stack.enter_async_context(Host(key))
        await relay.listen([LOOPBACK])
        server = await stack.enter_async_context(RelayServer(relay, key))
        relay_addr = f"{relay.listen_addrs()[0]}/p2p/{relay.peer_id}"
        async with pylibp2p_relay(pylibp2p_python, "--reserve-on", relay_addr) as peer:
            rsvp = peer["reservation"]
            # py-libp2p read our STATUS and verified our voucher its own way.
            assert rsvp["status"] == 100 and rsvp["voucher_ok"] is True, rsvp
            assert rsvp["addrs"] == [relay_addr]
            assert rsvp["limit"] == {"duration": 120, "data": 131072}
            target = PeerId.from_string(peer["peer_id"])
            assert [p for p, _ in server.reservations()] == [target]

            async with overlay_node(stack) as (b, _):
                circuit = f"{relay_addr}/p2p-circuit/p2p/{target}"
                async with asyncio.timeout(STEP_TIMEOUT):
                    conn = await b.connect(circuit)
                    assert conn.path == "relayed" and conn.remote_peer == target
                    assert await b.ping(target) > 0
                assert server.stats().circuits_active == 1


@pytest.mark.timeout(120)
async def test_pylibp2p_peer_reaches_an_overlay_node_through_a_pylibp2p_relay(
        pylibp2p_python: str) -> None:
    """The spec's pairing: overlay reserves on a libp2p relay, and a libp2p
    peer (py-libp2p's circuit transport: hop CONNECT, then Noise and a
    muxer over the circuit) reaches it there."""
    async with pylibp2p_relay(pylibp2p_python) as relay, AsyncExitStack() as stack:
        relay_addr = next(a for a in relay["addrs"] if a.startswith("/ip4/127.0.0.1/"))
        relay_id = PeerId.from_string(relay["peer_id"])
        async with overlay_node(stack) as (a, a_client):
            async with asyncio.timeout(STEP_TIMEOUT):
                await a.connect(relay_addr)
                await a_client.reserve(relay_id)
            circuit = f"{relay_addr}/p2p-circuit/p2p/{a.peer_id}"
            async with pylibp2p_relay(pylibp2p_python, "--dial-circuit", circuit) as dialer:
                dialed = dialer["dialed"]
                assert "error" not in dialed, dialed
                assert dialed["peer_id"] == str(a.peer_id) and dialed["rtt_ms"] > 0
            assert a_client.circuits_accepted == 1
