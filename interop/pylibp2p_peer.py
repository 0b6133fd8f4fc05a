"""A py-libp2p peer driven by the interop tests.

Run it with the python of the py-libp2p virtualenv (``interop/setup.sh``
prints it), never with the project's own: py-libp2p (trio, its own aioquic
pin, its own multiaddr) must not share an environment with overlay.

Modes
-----
``listen``
    Start a host listening on ``/ip4/127.0.0.1/udp/0/quic-v1`` and print one
    JSON line ``{"peer_id", "addrs", "agent_version", "protocols"}``.  Then
    read commands from stdin, one per line, each answered by one JSON line:

    ``peers``      peers currently connected
    ``identify``   run identify against every connected peer and report what
                   each one said (see ``dial`` for the fields)
    ``inbound``    peers that ran identify and ping against us
    ``dial ADDR``  as the ``dial`` mode below, keeping the connection open
    ``quit``       stop (closing stdin does the same)

``dial ADDR``
    Connect to ``ADDR`` (``/ip4/…/udp/N/quic-v1/p2p/ID``), ping it, identify
    it, print one JSON line and exit 0; on failure print
    ``{"error": ...}`` and exit 1.

Options (before the mode): ``--listen MULTIADDR`` picks the listen address
(default ``/ip4/127.0.0.1/udp/0/quic-v1``); ``--stock`` leaves py-libp2p's
read/FIN race unpatched (see ``fix_eof_race``).

Every network operation is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.serialization import deserialize_public_key
from libp2p.custom_types import TProtocol
from libp2p.host.ping import ID as PING_ID
from libp2p.host.ping import PING_LENGTH
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify.identify import identify_handler_for
from libp2p.identity.identify.identify import parse_identify_response
from libp2p.io.utils import read_exactly
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.utils import get_agent_version

LISTEN_ADDR = "/ip4/127.0.0.1/udp/0/quic-v1"
# Identify responses are small; a hostile or buggy peer must not make us
# buffer without limit.
MAX_IDENTIFY_BYTES = 64 * 1024
OP_TIMEOUT = 15.0


def fix_eof_race() -> None:
    """Work around a read/FIN race in py-libp2p 0.8.1's ``QUICStream.read``.

    ``read`` checks the receive buffer, releases its lock, then checks the
    read-closed flag under another lock.  If data and FIN arrive together in
    that gap (typical for a reply written and closed at once, such as an
    identify response), ``read`` raises EOF although the data sits in the
    buffer, and the bytes are lost.  This wrapper looks at the buffer once
    more before letting EOF through.  ``--stock`` runs without it.
    """
    from libp2p.transport.quic import stream as quic_stream

    original = quic_stream.QUICStream.read
    eof = quic_stream._QUICStreamEOF

    async def read(self: Any, n: int | None = None) -> bytes:
        try:
            return await original(self, n)
        except eof:
            async with self._receive_buffer_lock:
                if self._receive_buffer:
                    data: bytes = self._extract_data_from_buffer(-1 if n is None else n)
                    return data
            raise

    quic_stream.QUICStream.read = read  # type: ignore[method-assign]


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
    sys.stdout.flush()


def _maddr_text(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception as exc:  # report undecodable addresses instead of dying
        return f"<undecodable {raw.hex()}: {exc}>"


async def ping_peer(host: Any, peer_id: ID) -> float:
    """One ping round trip; returns the RTT in milliseconds (float)."""
    stream = await host.new_stream(peer_id, [PING_ID])
    try:
        payload = os.urandom(PING_LENGTH)
        start = time.perf_counter()
        await stream.write(payload)
        echo = await read_exactly(stream, PING_LENGTH)
        rtt = (time.perf_counter() - start) * 1000.0
        if echo != payload:
            raise RuntimeError("ping payload mismatch")
        return rtt
    finally:
        await stream.close()


async def identify_peer(host: Any, peer_id: ID) -> dict[str, Any]:
    """Run /ipfs/id/1.0.0 against ``peer_id`` and decode the answer ourselves,
    because py-libp2p's peerstore drops agent and protocol version."""
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    chunks: list[bytes] = []
    total = 0
    try:
        while True:
            chunk = await stream.read(MAX_IDENTIFY_BYTES)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > MAX_IDENTIFY_BYTES:
                raise RuntimeError("identify response too large")
    except Exception as exc:
        # py-libp2p raises StreamEOF / StreamClosed at the end of the
        # stream instead of returning b""; anything read so far is the message.
        if not chunks:
            raise RuntimeError(f"identify read failed: {exc!r}") from exc
    finally:
        await stream.close()
    msg = parse_identify_response(b"".join(chunks))
    key_peer = ""
    if msg.HasField("public_key"):
        key_peer = ID.from_pubkey(deserialize_public_key(msg.public_key)).to_base58()
    return {
        "peer_id": peer_id.to_base58(),
        "public_key_peer_id": key_peer,
        "agent_version": msg.agent_version,
        "protocol_version": msg.protocol_version,
        "protocols": list(msg.protocols),
        "listen_addrs": [_maddr_text(a) for a in msg.listen_addrs],
        "observed_addr": _maddr_text(msg.observed_addr) if msg.observed_addr else None,
        "has_signed_peer_record": msg.HasField("signedPeerRecord"),
    }


def make_host(listen: str) -> Any:
    return new_host(
        key_pair=create_new_key_pair(),
        listen_addrs=[multiaddr.Multiaddr(listen)],
        enable_quic=True,
        enable_tcp=False,
    )


def host_summary(host: Any) -> dict[str, Any]:
    pid = host.get_id().to_base58()
    addrs = []
    for a in host.get_addrs():
        text = str(a)
        if "/p2p/" not in text:
            text = f"{text}/p2p/{pid}"
        addrs.append(text)
    return {
        "peer_id": pid,
        "addrs": addrs,
        "agent_version": get_agent_version(),
        "protocols": sorted(str(p) for p in host.get_mux().get_protocols() if p),
    }


async def run_listen(listen: str) -> int:
    host = make_host(listen)
    inbound: dict[str, list[str]] = {}

    # Wrap the stock handlers only to record who used them; the responses
    # are still py-libp2p's own.
    stock_identify = identify_handler_for(host, use_varint_format=True)
    stock_ping = host.get_mux().handlers[PING_ID]

    def recorder(proto: TProtocol, inner: Any) -> Any:
        async def handler(stream: Any) -> None:
            who = stream.muxed_conn.peer_id.to_base58()
            inbound.setdefault(who, [])
            if proto not in inbound[who]:
                inbound[who].append(str(proto))
            await inner(stream)

        return handler

    host.set_stream_handler(IDENTIFY_ID, recorder(IDENTIFY_ID, stock_identify))
    host.set_stream_handler(PING_ID, recorder(PING_ID, stock_ping))

    async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
        emit(host_summary(host))
        async for cmd in stdin_commands():
            if cmd == "peers":
                emit({"peers": [p.to_base58() for p in host.get_connected_peers()]})
            elif cmd == "inbound":
                emit({"inbound": inbound})
            elif cmd.startswith("dial "):
                emit(await dial_ping_identify(host, cmd[5:].strip(), 3))
            elif cmd == "identify":
                result: dict[str, Any] = {}
                for peer in host.get_connected_peers():
                    try:
                        with trio.fail_after(OP_TIMEOUT):
                            result[peer.to_base58()] = await identify_peer(host, peer)
                    except Exception as exc:
                        result[peer.to_base58()] = {"error": repr(exc)}
                emit({"identified": result})
            else:
                emit({"error": f"unknown command {cmd!r}"})
    return 0


async def stdin_commands() -> AsyncIterator[str]:
    """Non-empty command lines from stdin, until EOF or quit/exit."""
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    buf = b""
    async with stdin:
        while True:
            while b"\n" not in buf:
                data = await stdin.receive_some(4096)
                if not data:
                    return
                buf += data
            line, buf = buf.split(b"\n", 1)
            cmd = line.decode().strip()
            if cmd in ("quit", "exit"):
                return
            if cmd:
                yield cmd


async def dial_ping_identify(host: Any, addr: str, pings: int) -> dict[str, Any]:
    """Connect, ping ``pings`` times, identify; the JSON-ready result, or
    ``{"error": ...}`` if any step fails."""
    try:
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        t0 = time.perf_counter()
        with trio.fail_after(OP_TIMEOUT):
            await host.connect(info)
        connect_ms = (time.perf_counter() - t0) * 1000.0
        rtts = []
        for _ in range(pings):
            with trio.fail_after(OP_TIMEOUT):
                rtts.append(await ping_peer(host, info.peer_id))
        with trio.fail_after(OP_TIMEOUT):
            learned = await identify_peer(host, info.peer_id)
    except Exception as exc:
        return {
            "error": repr(exc),
            "traceback": traceback.format_exc(),
            "local_peer_id": host.get_id().to_base58(),
        }
    learned.update(
        {
            "dialed_peer_id": info.peer_id.to_base58(),
            "local_peer_id": host.get_id().to_base58(),
            "local_agent_version": get_agent_version(),
            "connect_ms": connect_ms,
            "ping_rtts_ms": rtts,
        }
    )
    return learned


async def run_dial(addr: str, pings: int, listen: str) -> int:
    host = make_host(listen)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
        result = await dial_ping_identify(host, addr, pings)
        emit(result)
        return 1 if "error" in result else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    sub.add_parser("listen", help="listen on QUIC-v1 and serve ping/identify")
    dial = sub.add_parser("dial", help="dial, ping and identify a peer")
    dial.add_argument("addr", help="/ip4/127.0.0.1/udp/N/quic-v1/p2p/ID")
    dial.add_argument("--pings", type=int, default=3)
    parser.add_argument(
        "--listen",
        default=LISTEN_ADDR,
        help=f"QUIC-v1 listen multiaddr (default {LISTEN_ADDR})",
    )
    parser.add_argument(
        "--stock",
        action="store_true",
        help="do not apply the read/FIN race fix (see fix_eof_race)",
    )
    args = parser.parse_args()
    if not args.stock:
        fix_eof_race()
    if args.mode == "listen":
        code = trio.run(run_listen, args.listen)
    else:
        code = trio.run(run_dial, args.addr, max(1, args.pings), args.listen)
    sys.stdout.flush()
    # py-libp2p can leave non-daemon threads (logging listener, aioquic
    # helpers) behind; the answer is already printed, so leave at once.
    os._exit(code)


if __name__ == "__main__":
    main()
