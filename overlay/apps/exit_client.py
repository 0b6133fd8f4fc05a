"""The client side of exits: ``ExitDialer``, the proxy's ``Dialer`` for
hosts outside the zone when the daemon runs with ``--exit NAME|PEER|auto``
(docs/apps.md, "Exits").

``NAME`` uses the peers the name's record lists, ``PEER`` that peer, and
``auto`` the providers of the well-known exit key in the DHT, nearest
(XOR distance of the peer IDs' hashes to ours) first.  The exit that last
answered is tried first next time.  Each connection opens one
``/ovl/exit/1.0.0`` stream and waits for the exit's status byte; a client
refused by one exit (not allowed, a limit) tries the next under ``auto``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Sequence

from overlay.apps.connector import AppHost, NameLookup
from overlay.apps.errors import Reason, TargetError
from overlay.apps.exit_proto import (
    EXIT_PROTOCOL,
    ExitStatus,
    encode_request,
    exit_provider_key,
    status_text,
)
from overlay.errors import (
    LocalProtocolError,
    OverlayError,
    ProtocolNotSupported,
    RemoteProtocolError,
    StreamClosed,
    StreamReset,
    TransportError,
)
from overlay.identity import PeerId
from overlay.wire.stream import ByteStream

__all__ = ["AUTO", "ExitDialer", "check_exit_choice"]

log = logging.getLogger(__name__)

AUTO = "auto"
OPEN_TIMEOUT = 25.0
"""Seconds to find an exit, reach it and hear its answer (the exit itself
allows 10 s to resolve and 10 s to connect)."""

Candidate = tuple[PeerId, tuple[bytes, ...]]
FindProviders = Callable[[bytes], Awaitable[Sequence[Candidate]]]
DialPeer = Callable[[PeerId, tuple[bytes, ...], list[str]], Awaitable[bool]]

_REASONS = {
    ExitStatus.NOT_ALLOWED: Reason.REFUSED,
    ExitStatus.PORT_REFUSED: Reason.REFUSED,
    ExitStatus.DESTINATION_REFUSED: Reason.REFUSED,
    ExitStatus.LIMIT: Reason.REFUSED,
    ExitStatus.RESOLVE_FAILED: Reason.UNREACHABLE,
    ExitStatus.UNREACHABLE: Reason.UNREACHABLE,
    ExitStatus.BAD_REQUEST: Reason.BAD_TARGET,
}
_TRY_NEXT = frozenset({ExitStatus.NOT_ALLOWED, ExitStatus.LIMIT})


def check_exit_choice(text: str) -> str:
    """``off``, ``auto``, a peer ID or a name; ``ValueError`` otherwise."""
    from overlay.apps.config import check_allow_entry

    if text in ("off", AUTO):
        return text
    try:
        return check_allow_entry(text)
    except ValueError:
        raise ValueError(f"exit {text!r} is not `auto`, `off`, a peer ID or a name "
                         "(NAME.ovl)") from None


class _Refusal(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class ExitDialer:
    def __init__(self, host: AppHost, choice: str, zone: str, *,
                 names: Callable[[], NameLookup | None],
                 find_providers: FindProviders, dial: DialPeer) -> None:
        self._host = host
        self.choice = choice
        self._zone = zone
        self._names = names
        self.find_providers = find_providers
        self._dial = dial
        self.current: PeerId | None = None
        """The exit that answered last."""
        self.opened = 0
        self.failed = 0

    def _distance(self, peer: PeerId) -> int:
        own = hashlib.sha256(self._host.peer_id.to_bytes()).digest()
        other = hashlib.sha256(peer.to_bytes()).digest()
        return int.from_bytes(own, "big") ^ int.from_bytes(other, "big")

    async def candidates(self) -> list[Candidate]:
        """The exits to try, in order."""
        if self.choice == AUTO:
            found = [c for c in await self.find_providers(exit_provider_key(self._zone))
                     if c[0] != self._host.peer_id]
            found.sort(key=lambda c: self._distance(c[0]))
        elif "." in self.choice:
            names = self._names()
            if names is None:
                raise TargetError(Reason.RESOLVE_FAILED, "naming is not running")
            try:
                record = (await names.resolve(self.choice)).record
            except (OverlayError, TimeoutError) as exc:
                raise TargetError(Reason.RESOLVE_FAILED,
                                  f"cannot resolve the exit {self.choice}: {exc}") from None
            found = [(PeerId.from_bytes(p.peer_id), p.addrs) for p in record.peers]
        else:
            peer = PeerId.from_string(self.choice)
            addrs: tuple[bytes, ...] = ()
            if peer != self.current:
                # Not reached yet: its provider record carries its addresses.
                try:
                    providers = await self.find_providers(exit_provider_key(self._zone))
                except (OverlayError, TimeoutError) as exc:
                    log.debug("exit %s: no provider record: %s", peer, exc)
                    providers = []
                addrs = next((a for p, a in providers if p == peer), ())
            found = [(peer, addrs)]
        found = [c for c in found if c[0] != self._host.peer_id]
        if self.current is not None:
            found.sort(key=lambda c: c[0] != self.current)
        return found

    async def open(self, host: str, port: int) -> ByteStream:
        try:
            header = encode_request(host, port)
        except ValueError as exc:
            raise TargetError(Reason.BAD_TARGET, f"{host}:{port}: {exc}") from None
        try:
            async with asyncio.timeout(OPEN_TIMEOUT):
                return await self._open(header, host, port)
        except TimeoutError:
            self.failed += 1
            raise TargetError(Reason.PEER_OFFLINE, f"no exit answered for {host}:{port} "
                              f"within {OPEN_TIMEOUT:.0f} s") from None
        except TargetError:
            self.failed += 1
            raise

    def _refused(self, peer: PeerId, status: int, host: str, port: int) -> TargetError:
        reason = (_REASONS.get(ExitStatus(status), Reason.UNREACHABLE)
                  if status in ExitStatus._value2member_map_ else Reason.UNREACHABLE)
        return TargetError(reason, f"exit {str(peer)[-8:]} refused {host}:{port}: "
                           f"{status_text(status)}")

    async def _try(self, peer: PeerId, header: bytes, host: str, port: int,
                   errors: list[str]) -> ByteStream | TargetError | None:
        """The stream, a refusal worth trying the next exit for (``auto``),
        or None when the exit did not answer; other refusals raise."""
        try:
            stream = await self._exchange(peer, header)
        except _Refusal as exc:
            error = self._refused(peer, exc.status, host, port)
            if self.choice == AUTO and exc.status in _TRY_NEXT:
                return error
            raise error from None
        except (TransportError, RemoteProtocolError, LocalProtocolError, StreamClosed,
                StreamReset) as exc:
            errors.append(f"{str(peer)[-8:]}: {exc}")
            return None
        self.current = peer
        self.opened += 1
        return stream

    async def _open(self, header: bytes, host: str, port: int) -> ByteStream:
        errors: list[str] = []
        refusal: TargetError | None = None
        tried: set[PeerId] = set()
        if self.current is not None and self.choice == AUTO:
            # The exit that answered last, without asking the DHT again.
            peer, self.current = self.current, None
            tried.add(peer)
            got = await self._try(peer, header, host, port, errors)
            if isinstance(got, TargetError):
                refusal = got
            elif got is not None:
                return got
        try:
            candidates = [c for c in await self.candidates() if c[0] not in tried]
        except (OverlayError, TimeoutError) as exc:
            if isinstance(exc, TargetError):
                raise
            raise TargetError(Reason.RESOLVE_FAILED, f"cannot look exits up: {exc}") from None
        if not candidates and not tried:
            raise TargetError(Reason.PEER_OFFLINE, "no exit found: no node announces itself "
                              "as an exit in the DHT" if self.choice == AUTO
                              else f"the exit {self.choice} is this node")
        for peer, addrs in candidates:
            if addrs and not await self._dial(peer, addrs, errors):
                continue
            got = await self._try(peer, header, host, port, errors)
            if isinstance(got, TargetError):
                refusal = refusal or got
            elif got is not None:
                return got
        if refusal is not None:
            raise refusal
        raise TargetError(Reason.PEER_OFFLINE, "no exit answered (" + "; ".join(errors) + ")")

    async def _exchange(self, peer: PeerId, header: bytes) -> ByteStream:
        stream = await self._host.new_stream(peer, [EXIT_PROTOCOL], lazy=True)
        try:
            stream.write(header)
            await stream.drain()
            status = (await stream.readexactly(1))[0]
        except ProtocolNotSupported:
            stream.reset()
            raise RemoteProtocolError(f"{peer} is not an exit") from None
        except BaseException:
            stream.reset()
            raise
        if status != ExitStatus.OK:
            stream.reset()
            raise _Refusal(status)
        return stream
