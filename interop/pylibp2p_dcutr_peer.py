"""py-libp2p's DCUtR (``/libp2p/dcutr``), driven by interop/test_dcutr_interop.py.

Run with the python of the py-libp2p virtualenv (``interop/setup.sh``),
inside a lab namespace.  Starts a QUIC-only host on ``--listen`` running
py-libp2p's ``CircuitV2Protocol`` (no hop) and its ``DCUtRProtocol``,
connects to the relay at ``--relay``, and then either

- ``--reserve``: reserves a slot there and waits to be dialled through
  the circuit; py-libp2p's DCUtR auto-drive loop (every 2 s it looks for
  relayed connections) then starts DCUtR as the initiator (the spec's B);
- ``--dial-circuit ADDR``: dials ``…/p2p-circuit/p2p/<target>`` with
  py-libp2p's circuit transport and pings through it; the target, dialled
  through the relay, starts DCUtR and py-libp2p answers (the spec's A).
  Its auto-drive loop is switched off (``--no-auto``, implied), or both
  sides would start at once and the roles would be a race.

``--predict-quic`` makes py-libp2p's CONNECT carry, for its QUIC listener,
the prediction it already makes for TCP: the external IP that identify
observed (from ``--wan-ip`` when nothing was observed) with the listen
port.  Stock 0.8.1 predicts only TCP addresses; a QUIC-only host falls
back to its listen addresses, here a 10.x LAN address that nobody outside
can use.  Identify still advertises the listen address, as stock.

stdout is JSON lines, one per event, for the test to wait on:
``{"event": "ready", "peer_id", "addrs"}``, ``reserved``, ``dialed``,
``sent`` / ``recv`` (every DCUtR message on the wire: ``type``,
``addrs``), ``dial`` (every direct dial py-libp2p's DCUtR makes:
``addr``, ``as_responder``, ``ok`` or ``error``), ``conns`` (whenever the
set of connections to a peer changes: the transport address of each),
``ping`` (after a direct connection appears, one ping over it).  It runs
until SIGTERM or SIGINT and then exits 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

import multiaddr
import trio

from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2 import dcutr as dcutr_module
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from pylibp2p_peer import OP_TIMEOUT, emit, fix_eof_race, ping_peer
from pylibp2p_relay_peer import reserve

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair

CONN_POLL = 0.1
"""Seconds between looks at the swarm's connections (a report, not a
synchronisation: the test waits on the lines this produces)."""

_TYPES = {HolePunch.CONNECT: "CONNECT", HolePunch.SYNC: "SYNC"}


def _addr_text(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception as exc:  # report what a peer sent, even undecodable
        return f"<undecodable {raw.hex()}: {exc}>"


def _message(direction: str, msg: Any) -> None:
    emit({"event": direction, "type": _TYPES.get(msg.type, str(msg.type)),
          "addrs": [_addr_text(bytes(a)) for a in msg.ObsAddrs]})


def observe_wire() -> None:
    """Report every DCUtR message py-libp2p reads or writes.  The module's
    own functions are wrapped, so what is reported is exactly what its
    protocol code handled; nothing about the protocol changes."""
    read_orig = dcutr_module.read_dcutr_msg
    write_orig = dcutr_module.write_delimited_msg

    async def read(stream: Any, cls: Any) -> Any:
        msg = await read_orig(stream, cls)
        _message("recv", msg)
        return msg

    async def write(stream: Any, msg: Any) -> None:
        await write_orig(stream, msg)
        if isinstance(msg, HolePunch):
            _message("sent", msg)

    dcutr_module.read_dcutr_msg = read  # type: ignore[assignment]
    dcutr_module.write_delimited_msg = write  # type: ignore[assignment]


def observe_dials(network: Any) -> None:
    """Report each direct dial DCUtR makes and how it ended (py-libp2p logs
    them only at debug level and swallows the errors)."""
    for name, as_responder in (("dial_addr", False), ("dial_addr_as_responder", True)):
        original = getattr(network, name)

        def wrapped(addr: Any, peer_id: Any, source: Any = None, *,
                    _orig: Any = original, _resp: bool = as_responder) -> Any:
            async def run() -> Any:
                try:
                    conn = await _orig(addr, peer_id, source)
                except BaseException as exc:
                    if isinstance(exc, trio.Cancelled):
                        emit({"event": "dial", "addr": str(addr), "as_responder": _resp,
                              "ok": False, "error": "cancelled"})
                        raise
                    emit({"event": "dial", "addr": str(addr), "as_responder": _resp,
                          "ok": False, "error": f"{type(exc).__name__}: {exc}"})
                    raise
                emit({"event": "dial", "addr": str(addr), "as_responder": _resp, "ok": True})
                return conn
            return run()

        setattr(network, name, wrapped)


def predict_quic(dcutr: DCUtRProtocol, host: Any, wan_ip: str | None) -> None:
    """Replace ``DCUtRProtocol._get_observed_addrs`` with its own TCP rule
    (observed external IP, listen port) applied to the QUIC listener."""
    async def observed_addrs() -> list[bytes]:
        ips: list[str] = []
        manager = getattr(host, "_observed_addr_manager", None)
        if manager is not None:
            for addr in manager.addrs(min_observers=1):
                ip = _ip4(addr)
                if ip is not None and "/p2p-circuit" not in str(addr) and ip not in ips:
                    ips.append(ip)
        source = "observed" if ips else "given"
        if not ips and wan_ip is not None:
            ips.append(wan_ip)
        out = []
        for listen in host.get_transport_addrs():
            if _ip4(listen) is not None and "/quic-v1" in str(listen):
                port = listen.value_for_protocol("udp")
                out.extend(multiaddr.Multiaddr(f"/ip4/{ip}/udp/{port}/quic-v1") for ip in ips)
        emit({"event": "predicted", "source": source, "addrs": [str(a) for a in out]})
        return [a.to_bytes() for a in out]

    dcutr._get_observed_addrs = observed_addrs  # type: ignore[method-assign]


def _ip4(addr: Any) -> str | None:
    try:
        ip = addr.value_for_protocol("ip4")
    except Exception:  # py-libp2p's multiaddr raises its own lookup errors
        return None
    return str(ip) if ip else None


def _conn_addrs(network: Any, peer: ID) -> list[str]:
    conns = network.connections.get(peer) or []
    if not isinstance(conns, list):
        conns = [conns]
    out = []
    for conn in conns:
        try:
            out.extend(str(a) for a in conn.get_transport_addresses())
        except Exception as exc:  # one odd connection must not stop the report
            out.append(f"<{type(exc).__name__}>")
    return sorted(out)


async def watch_conns(host: Any, relay: ID) -> None:
    """Emit ``conns`` on every change; ping once over the first direct
    connection to a peer other than the relay."""
    network = host.get_network()
    last: dict[str, list[str]] = {}
    pinged: set[str] = set()
    while True:
        for peer in list(network.connections):
            if peer == relay:
                continue
            addrs = _conn_addrs(network, peer)
            key = peer.to_base58()
            if last.get(key) != addrs:
                last[key] = addrs
                emit({"event": "conns", "peer": key, "addrs": addrs})
            direct = [a for a in addrs if "/p2p-circuit" not in a]
            if direct and key not in pinged:
                pinged.add(key)
                try:
                    with trio.fail_after(OP_TIMEOUT):
                        rtt = await ping_peer(host, peer)
                    emit({"event": "ping", "peer": key, "rtt_ms": rtt,
                          "addrs": _conn_addrs(network, peer)})
                except Exception as exc:  # reported; the test asserts on it
                    emit({"event": "ping", "peer": key, "error": repr(exc)})
        for key in [k for k in last if ID.from_base58(k) not in network.connections]:
            del last[key]
            emit({"event": "conns", "peer": key, "addrs": []})
        await trio.sleep(CONN_POLL)


async def dial_circuit(host: Any, relay_proto: Any, addr: str) -> dict[str, Any]:
    maddr = multiaddr.Multiaddr(addr)
    transport = CircuitV2Transport(host, relay_proto, RelayConfig())
    _, target = transport.parse_circuit_ma(maddr)
    try:
        with trio.fail_after(OP_TIMEOUT):
            await transport.dial(maddr)
            rtt = await ping_peer(host, target)
    except Exception as exc:  # reported to the test, which asserts on it
        return {"event": "dialed", "error": repr(exc)}
    return {"event": "dialed", "peer_id": target.to_base58(), "rtt_ms": rtt}


async def run(args: argparse.Namespace) -> int:
    listen = multiaddr.Multiaddr(args.listen)
    host = new_host(key_pair=create_new_key_pair(), listen_addrs=[listen],
                    enable_quic=True, enable_tcp=False)
    relay_proto = CircuitV2Protocol(host, allow_hop=False)
    dcutr = DCUtRProtocol(host)
    if args.predict_quic:
        predict_quic(dcutr, host, args.wan_ip)
    if args.no_auto or args.dial_circuit:
        async def idle() -> None:
            await trio.sleep_forever()
        dcutr._auto_drive_loop = idle  # type: ignore[method-assign]
    observe_wire()
    observe_dials(host.get_network())
    relay_info = info_from_p2p_addr(multiaddr.Multiaddr(args.relay))

    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with host.run(listen_addrs=[listen]), \
                background_trio_service(relay_proto), background_trio_service(dcutr):
            await relay_proto.event_started.wait()
            await dcutr.event_started.wait()
            emit({"event": "ready", "peer_id": host.get_id().to_base58(),
                  "addrs": [str(a) for a in host.get_addrs()]})
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_conns, host, relay_info.peer_id)
                with trio.fail_after(OP_TIMEOUT):
                    await host.connect(relay_info)
                if args.reserve:
                    emit({"event": "reserved", **await reserve(host, args.relay)})
                if args.dial_circuit:
                    emit(await dial_circuit(host, relay_proto, args.dial_circuit))
                async for _ in signals:
                    break
                nursery.cancel_scope.cancel()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--listen", required=True, help="a /ip4/…/udp/0/quic-v1 address")
    parser.add_argument("--relay", required=True, help="the relay's multiaddr with /p2p/")
    parser.add_argument("--predict-quic", action="store_true")
    parser.add_argument("--wan-ip", metavar="IP", default=None)
    parser.add_argument("--reserve", action="store_true")
    parser.add_argument("--dial-circuit", metavar="ADDR", default=None)
    parser.add_argument("--no-auto", action="store_true")
    args = parser.parse_args()
    fix_eof_race()
    return trio.run(run, args)


if __name__ == "__main__":
    sys.exit(main())
