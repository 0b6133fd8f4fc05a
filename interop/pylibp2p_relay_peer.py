"""py-libp2p's circuit relay v2, driven by interop/test_pylibp2p_relay.py.

Run with the python of the py-libp2p virtualenv (``interop/setup.sh``).
Starts a QUIC host on ``/ip4/127.0.0.1/udp/0/quic-v1`` running py-libp2p's
``CircuitV2Protocol`` and prints one JSON line ``{"peer_id", "addrs", ...}``,
then runs until stdin closes.

By default it is a relay (hop enabled; ``--data BYTES`` sets the
per-circuit data limit).  With ``--reserve-on ADDR`` it is a client
instead: it sends a RESERVE to the relay at ``ADDR`` with py-libp2p's own
protobuf and framing, checks the voucher with py-libp2p's envelope code,
adds ``{"reservation": {...}}`` to the JSON line, and accepts circuits
through its stop handler.  With ``--dial-circuit ADDR``
(``…/p2p/<relay>/p2p-circuit/p2p/<target>``) it dials the target through
py-libp2p's circuit transport, pings it, and adds ``{"dialed": {...}}``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import multiaddr
import trio

from libp2p.peer.envelope import unmarshal_envelope
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import Voucher as PbVoucher
from libp2p.relay.circuit_v2.protocol import (
    DEFAULT_RELAY_LIMITS,
    PROTOCOL_ID,
    CircuitV2Protocol,
)
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.resources import (
    RELAY_RSVP_DOMAIN,
    VOUCHER_PAYLOAD_TYPE,
    RelayLimits,
)
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.tools.anyio_service import background_trio_service

from pylibp2p_peer import (
    LISTEN_ADDR,
    OP_TIMEOUT,
    emit,
    fix_eof_race,
    host_summary,
    make_host,
    ping_peer,
    stdin_commands,
)


async def reserve(host: Any, relay_addr: str) -> dict[str, Any]:
    info = info_from_p2p_addr(multiaddr.Multiaddr(relay_addr))
    with trio.fail_after(OP_TIMEOUT):
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [PROTOCOL_ID])
        await write_delimited_msg(stream, HopMessage(type=HopMessage.RESERVE))
        resp = await read_delimited_msg(stream, HopMessage)
        await stream.close()
    out: dict[str, Any] = {"status": int(resp.status), "type": int(resp.type)}
    if resp.HasField("reservation"):
        rsvp = resp.reservation
        out["expire"] = int(rsvp.expire)
        out["addrs"] = [str(multiaddr.Multiaddr(a)) for a in rsvp.addrs]
        env = unmarshal_envelope(bytes(rsvp.voucher))
        env.validate(RELAY_RSVP_DOMAIN)  # raises if the signature is bad
        voucher = PbVoucher()
        voucher.ParseFromString(bytes(env.raw_payload))
        out["voucher_ok"] = (
            bytes(env.payload_type) == VOUCHER_PAYLOAD_TYPE
            and ID(voucher.relay) == info.peer_id
            and ID(voucher.peer) == host.get_id()
            and int(voucher.expiration) == int(rsvp.expire)
            and ID.from_pubkey(env.public_key) == info.peer_id)
    if resp.HasField("limit"):
        out["limit"] = {"duration": int(resp.limit.duration), "data": int(resp.limit.data)}
    return out


async def dial_circuit(host: Any, relay_proto: Any, addr: str) -> dict[str, Any]:
    maddr = multiaddr.Multiaddr(addr)
    transport = CircuitV2Transport(host, relay_proto, RelayConfig())
    relay_ma, target = transport.parse_circuit_ma(maddr)
    try:
        with trio.fail_after(OP_TIMEOUT):
            await host.connect(info_from_p2p_addr(relay_ma))
            conn = await transport.dial(maddr)
            rtt = await ping_peer(host, target)
    except Exception as exc:  # reported to the test, which asserts on it
        return {"error": repr(exc)}
    return {"peer_id": target.to_base58(), "rtt_ms": rtt, "conn": type(conn).__name__}


async def run(data: int | None, reserve_on: str | None, dial: str | None) -> int:
    host = make_host(LISTEN_ADDR)
    limits = DEFAULT_RELAY_LIMITS
    if data is not None:
        limits = RelayLimits(duration=limits.duration, data=data,
                             max_circuit_conns=limits.max_circuit_conns,
                             max_reservations=limits.max_reservations)
    relay = CircuitV2Protocol(host, limits=limits,
                              allow_hop=reserve_on is None and dial is None)

    async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN_ADDR)]):
        async with background_trio_service(relay):
            await relay.event_started.wait()
            summary = host_summary(host)
            summary["limit"] = {"duration": limits.duration, "data": limits.data}
            if reserve_on is not None:
                summary["reservation"] = await reserve(host, reserve_on)
            if dial is not None:
                summary["dialed"] = await dial_circuit(host, relay, dial)
            emit(summary)
            async for _ in stdin_commands():
                emit({"error": "no commands"})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=int, default=None)
    parser.add_argument("--reserve-on", metavar="ADDR", default=None)
    parser.add_argument("--dial-circuit", metavar="ADDR", default=None)
    args = parser.parse_args()
    fix_eof_race()
    return trio.run(run, args.data, args.reserve_on, args.dial_circuit)


if __name__ == "__main__":
    sys.exit(main())
