"""AutoNAT v2 on a host: the server, the client, and the node's reachability.

``AutoNATService`` serves ``/libp2p/autonat/2/dial-request`` (see
``autonat_server``), answers ``/libp2p/autonat/2/dial-back``, and runs the
client: it asks connected peers that list the dial-request protocol in
identify to dial back each candidate address (``AutoNATClientCore``
decides which, when and whom).  Confirmed addresses are advertised through
the host (``add_advertised_addrs``); an address that stops being confirmed
is withdrawn, and a refuted one is withheld even if we listen on it
(``withhold_advertised_addrs``).  Subscribers learn of changes through ``on_change``.

Serving policy (``serve``): ``auto`` serves unless this node is itself
known to be private.  A node behind a NAT is a poor server (its dial-backs
leave through the same NAT, whose filtering and port behaviour say
nothing about the client's), while refusing also when reachability is
merely unknown would leave a young network with no server at all, since
every node starts unknown and needs someone else's server to learn better.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from functools import partial
from types import TracebackType
from typing import Final, Literal, Protocol

from multiaddr import Multiaddr

from overlay.errors import LocalProtocolError, OverlayError
from overlay.host.events import HostListener
from overlay.host.peerstore import ObservedAddrs, Peerstore
from overlay.host.stream import NegotiatedStream
from overlay.identity import PeerId
from overlay.multiaddrs import multiaddr_to_bytes
from overlay.nat.autonat_client_core import AutoNATClientCore, ClientConfig, Probe
from overlay.nat.autonat_errors import (
    AutoNATFailed,
    DialBackFailed,
    DialDataRefused,
    DialRefused,
    NonceMismatch,
    RequestRejected,
    ServerInternalError,
    UnexpectedAutoNATMessage,
)
from overlay.nat.autonat_messages import (
    DIAL_BACK_PROTOCOL,
    DIAL_REQUEST_PROTOCOL,
    MAX_DATA_CHUNK,
    DialBackResponse,
    DialDataRequest,
    DialDataResponse,
    DialRequest,
    DialResponse,
    DialStatus,
    ResponseStatus,
    decode_dial_back,
    encode_dial_back_response,
    encode_message,
)
from overlay.nat.autonat_server import (
    AutoNATServer,
    DialBackConnector,
    read_message,
    write_message,
)
from overlay.nat.autonat_server_core import ServerConfig
from overlay.nat.reachability import (
    Reachability,
    ReachabilityListener,
    ReachabilityState,
    TrackerConfig,
)
from overlay.supervisor import Job, RestartPolicy, Supervisor
from overlay.wire.varint import frame, read_frame

__all__ = ["AutoNATConfig", "AutoNATHost", "AutoNATService", "lab_config"]

log = logging.getLogger(__name__)

# Dial data carries nothing; one framed full-size chunk serves every request.
_DATA_CHUNK: Final = frame(encode_message(DialDataResponse(bytes(MAX_DATA_CHUNK))))


@dataclass(frozen=True, slots=True)
class AutoNATConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    client: ClientConfig = field(default_factory=ClientConfig)
    serve: Literal["auto", "always", "never"] = "auto"
    """``auto``: serve unless this node is known to be private."""
    probe: bool = True
    """Run the client loop (tests switch it off and probe by hand)."""
    advertise: bool = True
    """Advertise confirmed addresses through the host."""
    dial_timeout: float = 10.0
    """Seconds a server gives a dial-back (connect, nonce, answer)."""
    request_timeout: float = 30.0
    """Seconds one request may take, dial data and dial-back included."""
    idle_poll: float = 30.0
    """Seconds between looks at new candidates and servers when nothing
    else wakes the client."""

    def __post_init__(self) -> None:
        if self.serve not in ("auto", "always", "never"):
            raise ValueError("serve must be auto, always or never")
        if min(self.dial_timeout, self.request_timeout, self.idle_poll) <= 0:
            raise ValueError("timeouts must be positive")


def lab_config(confirmations: int = 1, **changes: object) -> AutoNATConfig:
    """A config for labs and tests: private and loopback targets allowed,
    ``confirmations`` servers settle a verdict, every candidate source on."""
    tracker = TrackerConfig(confirmations=confirmations, refutations=confirmations)
    base = AutoNATConfig(server=ServerConfig(lab=True),
                         client=ClientConfig(tracker=tracker, lab=True, min_observers=1))
    return replace(base, **changes)  # type: ignore[arg-type]


class AutoNATHost(Protocol):
    """The slice of ``overlay.host.Host`` AutoNAT uses."""

    @property
    def peer_id(self) -> PeerId: ...

    @property
    def peerstore(self) -> Peerstore: ...

    @property
    def observed_addrs(self) -> ObservedAddrs: ...

    def listen_addrs(self) -> list[Multiaddr]: ...

    def peers(self) -> list[PeerId]: ...

    async def new_stream(self, peer_id: PeerId, protocols: list[str]) -> NegotiatedStream: ...

    def set_stream_handler(self, protocol: str,
                           handler: Callable[[NegotiatedStream], Awaitable[None]]) -> None: ...

    def remove_stream_handler(self, protocol: str) -> None: ...

    def add_listener(self, listener: HostListener) -> None: ...

    def remove_listener(self, listener: HostListener) -> None: ...

    def add_advertised_addrs(self, addrs: list[str]) -> None: ...

    def remove_advertised_addrs(self, addrs: list[str]) -> None: ...

    def withhold_advertised_addrs(self, addrs: list[str]) -> None: ...

    def release_advertised_addrs(self, addrs: list[str]) -> None: ...


class AutoNATService:
    """``async with AutoNATService(host, config):`` installs the handlers and
    runs the client until it exits."""

    def __init__(self, host: AutoNATHost, config: AutoNATConfig | None = None, *,
                 rng: random.Random | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 stun_addrs: Callable[[], Iterable[str]] | None = None,
                 upnp_addrs: Callable[[], Iterable[str]] | None = None,
                 connector: DialBackConnector | None = None) -> None:
        self.config = config or AutoNATConfig()
        self._host = host
        self._rng = rng or random.Random()
        self._clock = clock
        self._stun_addrs = stun_addrs
        self._upnp_addrs = upnp_addrs
        self.client = AutoNATClientCore(self.config.client)
        self.server = AutoNATServer(self.config.server, serving=self.serving,
                                    rng=self._rng, clock=clock, connector=connector,
                                    dial_timeout=self.config.dial_timeout,
                                    request_timeout=self.config.request_timeout)
        self._state = self.client.state(clock())
        self._listeners: list[ReachabilityListener] = []
        self._advertised: set[str] = set()
        self._withheld: set[str] = set()
        self._dialed_back: dict[int, asyncio.Event] = {}
        self._wake = asyncio.Event()
        self._host_listener = HostListener(identified=lambda *_: self._wake.set(),
                                           connected=lambda *_: self._wake.set())
        self._sup: Supervisor | None = None
        self.counters: dict[str, int] = {}

    # -- lifetime ----------------------------------------------------------------

    async def __aenter__(self) -> AutoNATService:
        if self._sup is not None:
            raise LocalProtocolError("the AutoNAT service is already running")
        self._host.set_stream_handler(DIAL_REQUEST_PROTOCOL, self.server.handle)
        self._host.set_stream_handler(DIAL_BACK_PROTOCOL, self._handle_dial_back)
        self._host.add_listener(self._host_listener)
        self._sup = await Supervisor("autonat", log).__aenter__()
        if self.config.probe:
            # A bug in one pass of the loop restarts it after back-off.
            self._sup.spawn(self._client_loop, "autonat client", restart=RestartPolicy())
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        sup, self._sup = self._sup, None
        self._host.remove_listener(self._host_listener)
        # What we advertised or withheld was our doing; the host goes back
        # to its listen addresses.
        if self._advertised:
            self._host.remove_advertised_addrs(sorted(self._advertised))
        if self._withheld:
            self._host.release_advertised_addrs(sorted(self._withheld))
        self._advertised, self._withheld = set(), set()
        self._host.remove_stream_handler(DIAL_REQUEST_PROTOCOL)
        self._host.remove_stream_handler(DIAL_BACK_PROTOCOL)
        if sup is not None:
            await sup.aclose()

    def _spawn(self, job: Job, what: str) -> None:
        if self._sup is None:
            raise LocalProtocolError("the AutoNAT service is not running")
        self._sup.spawn(job, what)

    # -- what others read ----------------------------------------------------------

    def serving(self) -> bool:
        if self.config.serve == "auto":
            return self._state.reachability is not Reachability.PRIVATE
        return self.config.serve == "always"

    @property
    def state(self) -> ReachabilityState:
        return self._state

    @property
    def reachability(self) -> Reachability:
        return self._state.reachability

    @property
    def confirmed_addrs(self) -> list[str]:
        return list(self._state.confirmed)

    def on_change(self, callback: ReachabilityListener) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)
        return unsubscribe

    def _update(self) -> None:
        new = self.client.state(self._clock())
        old, self._state = self._state, new
        if new.same_verdict(old):
            return
        log.info("reachability: %s (%s)", new.reachability.value, "; ".join(new.reasons))
        if self.config.advertise:
            self._advertise(new)
        for callback in list(self._listeners):
            callback(new)

    def _advertise(self, state: ReachabilityState) -> None:
        listen = {str(a) for a in self._host.listen_addrs()}
        wanted = {a for a in state.confirmed if a not in listen}
        gone = sorted(self._advertised - wanted)
        fresh = sorted(wanted - self._advertised)
        if gone:
            self._host.remove_advertised_addrs(gone)
        if fresh:
            self._host.add_advertised_addrs(fresh)
        self._advertised = wanted
        refuted = set(state.refuted)
        released = sorted(self._withheld - refuted)
        withheld = sorted(refuted - self._withheld)
        if released:
            self._host.release_advertised_addrs(released)
        if withheld:
            self._host.withhold_advertised_addrs(withheld)
        self._withheld = refuted

    # -- client --------------------------------------------------------------------

    def _servers(self) -> list[str]:
        store = self._host.peerstore
        return [str(p) for p in self._host.peers() if store.supports(p, DIAL_REQUEST_PROTOCOL)]

    def refresh_candidates(self) -> None:
        observed = {str(a): n for a, n in self._host.observed_addrs.addrs()}
        stun = list(self._stun_addrs()) if self._stun_addrs is not None else []
        upnp = list(self._upnp_addrs()) if self._upnp_addrs is not None else []
        listen = [str(a) for a in self._host.listen_addrs()]
        self.client.set_candidates(observed, stun, listen, upnp)

    async def _client_loop(self) -> None:
        while True:
            now = self._clock()
            self.client.on_timer(now)
            self.refresh_candidates()
            self._update()
            while (probe := self.client.next_probe(self._servers(), now, self._rng)) is not None:
                self._spawn(partial(self._run_probe, probe), f"autonat probe {probe.addr}")
            deadline = self.client.next_deadline(now)
            # Something due but not started waits for a server or a free
            # slot: identify, a new connection or a finished probe wake us.
            wait = (self.config.idle_poll if deadline is None or deadline <= now
                    else deadline - now)
            self._wake.clear()
            try:
                async with asyncio.timeout(min(wait, self.config.idle_poll)):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def check(self, server: PeerId, addr: str) -> bool | None:
        """Ask ``server`` now whether ``addr`` is reachable: True (it dialled
        back with our nonce), False (it could not connect), None (no
        evidence: refused, rejected, dial-back error).  The result counts
        towards reachability like any other."""
        probe = self.client.start_probe(addr, str(server), self._clock(), self._rng)
        return await self._run_probe(probe)

    async def _run_probe(self, probe: Probe) -> bool | None:
        try:
            reachable = await self._ask(probe)
        except (OverlayError, OSError, TimeoutError) as exc:
            self._count(type(exc).__name__)
            log.debug("autonat probe of %s via %s: %r", probe.addr, probe.server, exc)
            self.client.on_no_result(probe, self._clock(),
                                     backoff=not isinstance(exc, DialBackFailed))
            self._update()
            return None
        finally:
            self._dialed_back.pop(probe.nonce, None)
        self._count("confirmed" if reachable else "refuted")
        self.client.on_result(probe, reachable, self._clock())
        self._update()
        self._wake.set()
        return reachable

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    async def _ask(self, probe: Probe) -> bool:
        arrived = self._dialed_back.setdefault(probe.nonce, asyncio.Event())
        async with asyncio.timeout(self.config.request_timeout):
            stream = await self._host.new_stream(PeerId.from_string(probe.server),
                                                 [DIAL_REQUEST_PROTOCOL])
            try:
                await write_message(stream, DialRequest((multiaddr_to_bytes(probe.addr),),
                                                        probe.nonce))
                while True:
                    msg = await read_message(stream)
                    if isinstance(msg, DialResponse):
                        break
                    if not isinstance(msg, DialDataRequest):
                        raise UnexpectedAutoNATMessage(f"{type(msg).__name__} sent to a client")
                    await self._send_data(stream, msg)
            except BaseException:
                stream.reset()
                raise
            await stream.close()
        return self._interpret(msg, arrived.is_set())

    async def _send_data(self, stream: NegotiatedStream, request: DialDataRequest) -> None:
        if request.addr_idx != 0:
            raise UnexpectedAutoNATMessage(f"dial data for address {request.addr_idx} of 1")
        if request.num_bytes > self.config.client.max_dial_data:
            raise DialDataRefused(f"the server asked for {request.num_bytes} bytes "
                                  f"(we send at most {self.config.client.max_dial_data})")
        chunk = _DATA_CHUNK
        sent = 0
        while sent < request.num_bytes:
            stream.write(chunk)
            await stream.drain()
            sent += MAX_DATA_CHUNK
        self._count("dial_data_bytes_sent")

    @staticmethod
    def _interpret(response: DialResponse, nonce_arrived: bool) -> bool:
        if response.status is ResponseStatus.E_REQUEST_REJECTED:
            raise RequestRejected("the server rejected the request")
        if response.status is ResponseStatus.E_DIAL_REFUSED:
            raise DialRefused("the server would not dial the address")
        if response.status is not ResponseStatus.OK:
            raise ServerInternalError("the server had an internal error")
        if response.addr_idx != 0:
            raise UnexpectedAutoNATMessage(f"the server dialled address {response.addr_idx} of 1")
        if nonce_arrived:
            return True  # our nonce came back over a new connection: proof enough
        if response.dial_status is DialStatus.E_DIAL_ERROR:
            return False
        if response.dial_status is DialStatus.OK:
            raise DialBackFailed("the server claims a dial-back that never reached us")
        raise DialBackFailed(f"dial-back status {response.dial_status.name}")

    async def _handle_dial_back(self, stream: NegotiatedStream) -> None:
        async with asyncio.timeout(self.config.dial_timeout):
            data = await read_frame(stream, 64)
            if data is None:
                raise UnexpectedAutoNATMessage("the dial-back stream ended before its nonce")
            nonce = decode_dial_back(data).nonce
            arrived = self._dialed_back.get(nonce)
            if arrived is None or self.client.expects(nonce) is None:
                raise NonceMismatch("a dial-back with a nonce we are not waiting for")
            arrived.set()
            stream.write(frame(encode_dial_back_response(DialBackResponse())))
            await stream.drain()
            stream.write_eof()
            await stream.close()
