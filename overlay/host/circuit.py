"""The circuit transport: ``…/p2p/<relay>/p2p-circuit/p2p/<target>`` addresses.

Dialing connects to the relay (through the host, so over any transport),
asks it for a circuit to the target (hop CONNECT, ``overlay.relay.client``),
and upgrades the circuit's raw byte stream with Noise and yamux exactly as
a TCP socket would be.  Inbound circuits come from the relay client's stop
handler through ``on_circuit``.  Listening is not this transport's job: a
reservation at a relay (the relay client's) is what makes us reachable.

The relay client is imported lazily and can be replaced (``open_circuit``),
so tests run this transport over in-memory circuits.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

from multiaddr import Multiaddr

from overlay.errors import InvalidMultiaddr, LocalProtocolError, PeerIdMismatch
from overlay.host.muxed import MuxedConnection
from overlay.host.transport_types import DIRECT, RELAYED, Connection, ConnectionLimit, Path
from overlay.identity import PeerId, PrivateKey
from overlay.multiaddrs import parse_circuit_multiaddr, split_p2p
from overlay.mux import YamuxConfig, YamuxSession
from overlay.secure.stream import SecureStream
from overlay.secure.upgrade import UpgradeConfig, upgrade_inbound, upgrade_outbound
from overlay.wire.stream import ByteStream

__all__ = ["CIRCUIT_YAMUX", "LIMITED_CIRCUIT_YAMUX", "CircuitLike", "CircuitTransport", "OpenCircuit", "circuit_multiaddr"]

log = logging.getLogger(__name__)

CIRCUIT_YAMUX = YamuxConfig(receive_window=4 * 1024 * 1024)
"""yamux over a circuit the relay lets carry data (no data limit, or one of
at least this window).  A relayed round trip crosses two QUIC hops and the
relay's splice, so the spec's 256 KiB window stalls the sender: 2 MiB (the
extra granted in the SYN/ACK update, as go/rust do) measured the relay's
CPU per MB down 19-41% and relayed throughput x1.6-1.8 on a loaded
machine (unchanged on a quiet one) in the same runs (bench/bench_relay.py).
4 MiB, once the splice read 64 KiB, cut the three processes' CPU per
relayed MB another 5-12% (8 of 8 same-run A/B runs; ratio higher in 6);
8 MiB did no better.  The cost is what a peer that never reads may make
one stream buffer here."""

LIMITED_CIRCUIT_YAMUX = YamuxConfig()
"""yamux over a circuit with a small data limit (the spec's default is
128 KiB): a bigger window buys nothing there, and the spec's window keeps
a writer blocked in ``drain()`` when the relay cuts the circuit, so the
cut reaches it as an error instead of vanishing into buffers."""


class CircuitLike(Protocol):
    """``overlay.relay.circuit.Circuit``, as this transport reads it."""

    @property
    def stream(self) -> ByteStream: ...

    @property
    def relay(self) -> PeerId: ...

    @property
    def remote(self) -> PeerId: ...

    @property
    def limit(self) -> ConnectionLimit | None: ...

    @property
    def initiator(self) -> bool: ...


class CircuitHost(Protocol):
    """The slice of ``overlay.host.Host`` the circuit transport uses."""

    @property
    def peer_id(self) -> PeerId: ...

    async def connect(self, multiaddr: str | Multiaddr) -> Connection: ...

    def best_connection(self, peer_id: PeerId) -> Connection | None: ...

    def adopt(self, conn: Connection) -> None: ...

    def spawn(self, factory: Callable[[], Coroutine[Any, Any, object]], what: str) -> None: ...


OpenCircuit = Callable[[Any, PeerId, PeerId], Awaitable[CircuitLike]]
"""``(host, relay, target) -> circuit`` (``overlay.relay.client.open_circuit``)."""


def circuit_multiaddr(relay_addr: Multiaddr | None, relay: PeerId) -> Multiaddr:
    """``<relay_addr>/p2p/<relay>/p2p-circuit`` (without the target)."""
    base = "" if relay_addr is None else str(split_p2p(relay_addr)[0])
    return Multiaddr(f"{base}/p2p/{relay}/p2p-circuit")


async def _default_open_circuit(host: Any, relay: PeerId, target: PeerId) -> CircuitLike:
    from overlay.relay.client import open_circuit

    return await open_circuit(host, relay, target)


class CircuitTransport:
    """Relayed connections, secured with Noise and multiplexed with yamux."""

    def __init__(
        self,
        host: CircuitHost,
        private_key: PrivateKey,
        *,
        open_circuit: OpenCircuit | None = None,
        upgrade: UpgradeConfig | None = None,
        yamux: YamuxConfig | None = None,
    ) -> None:
        self._host = host
        self._key = private_key
        self.open_circuit: OpenCircuit = open_circuit or _default_open_circuit
        """How a circuit is opened (the relay client; tests put in-memory ones here)."""
        self._upgrade_config = upgrade or UpgradeConfig()
        self._yamux_config = yamux
        self.circuits_accepted = 0
        self.circuits_refused = 0

    @property
    def path(self) -> Path:
        return RELAYED

    def can_dial(self, addr: Multiaddr) -> bool:
        try:
            parse_circuit_multiaddr(addr)
        except InvalidMultiaddr:
            return False
        return True

    def can_listen(self, addr: Multiaddr) -> bool:
        return False

    async def listen(self, addrs: Sequence[Multiaddr]) -> None:
        raise LocalProtocolError("circuit addresses come from reservations, not from listening")

    def listen_addrs(self) -> list[Multiaddr]:
        return []

    async def aclose(self) -> None:
        return None

    def abort_for_test(self) -> None:
        return None

    # -- dialing ---------------------------------------------------------------

    async def dial(self, addr: Multiaddr, peer: PeerId | None) -> Connection:
        circuit_addr = parse_circuit_multiaddr(addr)
        target = peer or circuit_addr.target
        if target is None:
            raise InvalidMultiaddr(f"{addr} does not name the peer behind the relay (/p2p/<id>)")
        if circuit_addr.target is not None and circuit_addr.target != target:
            raise InvalidMultiaddr(f"{addr} names {circuit_addr.target}, not {target}")
        if target == self._host.peer_id:
            raise LocalProtocolError("cannot dial ourselves")
        relay = circuit_addr.relay
        if circuit_addr.relay_has_address:
            # Reach the relay first at the address given (the host reuses a
            # live connection); without one the relay client finds it.
            await self._host.connect(circuit_addr.relay_addr)
        circuit = await self.open_circuit(self._host, relay, target)
        remote_ma = circuit_multiaddr(
            circuit_addr.relay_addr if circuit_addr.relay_has_address else None, relay
        )
        return await self._upgrade(circuit, remote_ma)

    # -- inbound ---------------------------------------------------------------

    async def on_circuit(self, circuit: CircuitLike) -> None:
        """Upgrade an inbound circuit and give the connection to the host
        (the relay client's stop handler awaits this)."""
        relay_conn = self._host.best_connection(circuit.relay)
        relay_addr = (
            relay_conn.remote_multiaddr
            if relay_conn is not None and relay_conn.path == DIRECT
            else None
        )
        try:
            conn = await self._upgrade(circuit, circuit_multiaddr(relay_addr, circuit.relay))
        except BaseException:
            self.circuits_refused += 1
            raise
        self.circuits_accepted += 1
        self._host.adopt(conn)

    # -- the upgrade -------------------------------------------------------------

    def yamux_config(self, limit: ConnectionLimit | None) -> YamuxConfig:
        """The yamux settings for a circuit under ``limit``."""
        if self._yamux_config is not None:
            return self._yamux_config
        data = None if limit is None else limit.data
        if data is None or data >= CIRCUIT_YAMUX.receive_window:
            return CIRCUIT_YAMUX
        return LIMITED_CIRCUIT_YAMUX

    async def _upgrade(self, circuit: CircuitLike, remote_ma: Multiaddr) -> MuxedConnection:
        raw = circuit.stream
        config = self.yamux_config(circuit.limit)

        def muxer(secure: SecureStream, is_client: bool) -> YamuxSession:
            return YamuxSession(secure, is_client, config)

        if circuit.initiator:
            upgraded = await upgrade_outbound(
                raw, self._key, circuit.remote, muxer, config=self._upgrade_config
            )
        else:
            upgraded = await upgrade_inbound(raw, self._key, muxer, config=self._upgrade_config)
            if upgraded.remote_peer != circuit.remote:
                # The relay named one peer and another one answered Noise:
                # believe Noise, refuse the circuit.
                raw.reset()
                raise PeerIdMismatch(str(circuit.remote), str(upgraded.remote_peer))
        conn = MuxedConnection(
            upgraded.muxer,
            raw,
            remote_peer=upgraded.remote_peer,
            remote_multiaddr=remote_ma,
            is_initiator=circuit.initiator,
            path=RELAYED,
            limit=circuit.limit,
        )
        try:
            self._host.spawn(
                conn.run, f"relayed connection {upgraded.remote_peer} via {circuit.relay}"
            )
        except LocalProtocolError:
            raw.reset()  # the host is stopping: nobody would own the session
            raise
        await conn.started()
        return conn
