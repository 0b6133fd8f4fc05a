"""A py-libp2p circuit relay v2 (hop) driven by interop/test_pylibp2p_relay.py.

Run with the python of the py-libp2p virtualenv (``interop/setup.sh``).
Starts a QUIC host on ``/ip4/127.0.0.1/udp/0/quic-v1`` serving
``/libp2p/circuit/relay/0.2.0/hop`` (py-libp2p's ``CircuitV2Protocol`` with
``allow_hop``), prints one JSON line ``{"peer_id", "addrs", ...}`` and runs
until stdin closes.  ``--data BYTES`` sets the per-circuit data limit.
"""

from __future__ import annotations

import argparse
import sys

import trio

from libp2p.relay.circuit_v2.protocol import DEFAULT_RELAY_LIMITS, CircuitV2Protocol
from libp2p.relay.circuit_v2.resources import RelayLimits
from libp2p.tools.anyio_service import background_trio_service

from pylibp2p_peer import LISTEN_ADDR, emit, fix_eof_race, host_summary, make_host, stdin_commands


async def run(data: int | None) -> int:
    host = make_host(LISTEN_ADDR)
    limits = DEFAULT_RELAY_LIMITS
    if data is not None:
        limits = RelayLimits(duration=limits.duration, data=data,
                             max_circuit_conns=limits.max_circuit_conns,
                             max_reservations=limits.max_reservations)
    relay = CircuitV2Protocol(host, limits=limits, allow_hop=True)
    import multiaddr

    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)]):
        async with background_trio_service(relay):
            await relay.event_started.wait()
            summary = host_summary(host)
            summary["limit"] = {"duration": limits.duration, "data": limits.data}
            emit(summary)
            async for _ in stdin_commands():
                emit({"error": "no commands"})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=int, default=None)
    args = parser.parse_args()
    fix_eof_race()
    return trio.run(run, args.data)


if __name__ == "__main__":
    sys.exit(main())
