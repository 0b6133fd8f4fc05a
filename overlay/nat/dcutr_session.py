"""What both DCUtR roles share in the driver: the service's options, a
finished session as ``status()`` reports it, a session's inbox, and
``drive``, the loop that feeds a core the peer's messages, its timers and
the arrival of direct connections, and carries out what it asks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from overlay.errors import OverlayError
from overlay.host.stream import NegotiatedStream
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.nat.dcutr_core import (
    Action,
    DcutrConfig,
    DcutrInitiator,
    DcutrResponder,
    Failed,
    SendMessage,
    Succeeded,
)
from overlay.nat.dcutr_dial import DialRace
from overlay.nat.dcutr_hints import HintConfig
from overlay.nat.dcutr_messages import MAX_MESSAGE_SIZE, decode, encode
from overlay.wire.varint import frame, read_frame

__all__ = [
    "Act",
    "Core",
    "DcutrServiceConfig",
    "DirectArrived",
    "NotOpened",
    "Outcome",
    "Session",
    "TakenOver",
    "drive",
]

log = logging.getLogger(__name__)

Core = DcutrInitiator | DcutrResponder


@dataclass(frozen=True, slots=True)
class DcutrServiceConfig:
    core: DcutrConfig = DcutrConfig()
    """The protocol's timings, caps and rate limit."""
    unilateral: bool = True
    """Beside the exchange, dial the peer's advertised direct addresses
    (the spec's unilateral upgrade: it works when the peer is public)."""
    unilateral_timeout: float = 2.0
    identify_wait: float = 2.0
    """Seconds the initiator waits for identify to bring the peer's addresses."""
    relayed_grace: float = 60.0
    """Seconds a replaced relayed connection may keep open streams before
    it is closed anyway."""
    idle_check: float = 0.25
    """Seconds between checks whether a replaced relayed connection is idle."""
    confirm_wait: float = 0.5
    """Seconds the responder watches a direct connection it counted as
    success: one the peer closes within it does not count (an
    implementation that refuses QUIC dials it did not make)."""
    handover_wait: float = 30.0
    """Seconds the responder waits for birthday punching's outcome when
    the initiator stopped DCUtR for it."""
    hints: HintConfig = field(default_factory=HintConfig)
    """What a stop CONNECT's addresses (hints from our relay) buy."""

    def __post_init__(self) -> None:
        if min(self.unilateral_timeout, self.identify_wait, self.relayed_grace,
               self.idle_check, self.handover_wait) <= 0 or self.confirm_wait < 0:
            raise ValueError("DCUtR service timeouts must be positive")


@dataclass(frozen=True, slots=True)
class Outcome:
    """One finished session, as ``status()`` reports it."""

    peer: str
    role: str
    ok: bool
    how: str
    """``punched``, ``unilateral``, ``already direct``, ``birthday …`` or
    the failure reason."""
    attempts: int
    rtt: float | None
    elapsed: float
    """Seconds from the relayed connection's arrival (or the stream's) to the end."""
    exchange: float | None = None
    """Seconds from our first DCUtR message (initiator) to the end: the
    punch itself, without identify and the unilateral dial before it."""


@dataclass(frozen=True, slots=True)
class DirectArrived:
    """In a session's inbox: a direct connection to the peer was adopted."""

    conn: Connection


@dataclass(frozen=True, slots=True)
class NotOpened:
    """In a session's inbox: the lazily opened stream failed before any frame."""

    error: OverlayError


class TakenOver(Exception):
    """Inside ``drive``: the ``pre_punch`` exchange took over before SYNC."""


class Session:
    def __init__(self, peer: PeerId, role: str) -> None:
        self.peer = peer
        self.role = role
        self.task = asyncio.current_task()
        self.inbox: asyncio.Queue[object] = asyncio.Queue()
        """Frames (bytes), EOF (None), read errors, ``DirectArrived``."""
        self.unilateral = False
        """Our unilateral dial produced the direct connection."""
        self.rtt: float | None = None
        """The relayed round trip DCUtR measured."""
        self.race: DialRace | None = None
        """The responder's dials (the early one and the spec's)."""
        self.spawn: Callable[[Coroutine[Any, Any, object]], None] | None = None
        """Runs a job for as long as ``drive`` runs (set by it)."""


Act = Callable[[Action], Awaitable[list[Action]]]
"""Carries out a role's own action (punch packets, a dial): its follow-ups."""


async def drive(core: Core, stream: NegotiatedStream, session: Session, act: Act,
                has_direct: Callable[[], bool], counters: dict[str, int],
                gate: Callable[[], Awaitable[bool]] | None = None,
                ) -> Succeeded | Failed | None:
    """Feed the core messages, timers and the direct connection's
    arrival; carry out its actions until it finishes.  The first message
    is fed only once ``gate()`` answered (with its arrival time, so the
    RTT holds); True ends the exchange before the reply: None."""

    async def reader() -> None:
        first = True
        while True:
            try:
                data = await read_frame(stream, MAX_MESSAGE_SIZE)
            except OverlayError as exc:
                # Before the first frame of a lazily opened stream this
                # is the peer refusing the protocol, not a violation.
                session.inbox.put_nowait(NotOpened(exc) if first and gate else exc)
                return
            first = False
            session.inbox.put_nowait(data)
            if data is None:
                return

    pending: list[Action] = []
    if isinstance(core, DcutrInitiator):
        pending = core.start(time.monotonic())
    result: Succeeded | Failed | None = None
    jobs: list[asyncio.Task[object]] = []
    async with asyncio.TaskGroup() as tg:
        read_task = tg.create_task(reader())

        def spawn(job: Coroutine[Any, Any, object]) -> None:
            jobs.append(tg.create_task(job))

        session.spawn = spawn
        try:
            while result is None:
                while pending:
                    action = pending.pop(0)
                    if isinstance(action, (Succeeded, Failed)):
                        result = result or action
                    elif isinstance(action, SendMessage):
                        stream.write(frame(encode(action.message)))
                        await stream.drain()
                    else:
                        pending.extend(await act(action))
                if result is None:
                    pending = await _next_event(core, session, has_direct, gate)
        except TakenOver:
            try:
                stream.write_eof()
            except OverlayError:
                pass  # already gone: the other exchange goes on regardless
            return None
        except (OverlayError, OSError) as exc:
            # Writing failed: the stream or the relayed connection is gone.
            log.debug("DCUtR stream with %s failed: %r", session.peer, exc)
            result = core.outcome or Failed(f"the DCUtR stream failed: {exc}", core.attempt)
        finally:
            session.spawn = None
            for task in (read_task, *jobs):
                task.cancel()
    if isinstance(result, Failed) and result.protocol_error:
        counters["protocol_errors"] += 1
        stream.reset()
    else:
        try:
            stream.write_eof()
        except OverlayError:
            pass  # already gone: nothing left to tell the peer
    return result


async def _next_event(core: Core, session: Session, has_direct: Callable[[], bool],
                      gate: Callable[[], Awaitable[bool]] | None) -> list[Action]:
    deadline = core.next_deadline()
    delay = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        async with asyncio.timeout(delay):
            item = await session.inbox.get()
    except TimeoutError:
        return core.on_timer(time.monotonic())
    now = time.monotonic()
    if isinstance(item, DirectArrived):
        if item.conn.is_closed and not has_direct():
            return []  # the peer closed it at once: not an upgrade
        return core.on_direct_connection(now)
    if item is None:
        if isinstance(core, DcutrInitiator) and core.state in ("waiting rtt/2", "punching"):
            # The responder ends its side once its dial is through, and
            # its EOF can beat the last handshake flight to us (half a
            # round trip): wait that long for the connection.
            grace = max(0.5, 2 * (core.rtt or 0.0))
            if await _direct_within(session, has_direct, grace):
                return core.on_direct_connection(time.monotonic())
        return core.on_closed(now)
    if isinstance(item, NotOpened):
        return [Failed(f"cannot open a DCUtR stream: {item.error}", core.attempt)]
    if isinstance(item, OverlayError):
        return core.on_closed(now, f"{type(item).__name__}: {item}")
    if not isinstance(item, bytes):
        return []
    try:
        message = decode(item)
    except OverlayError as exc:
        return core.on_closed(now, f"{type(exc).__name__}: {exc}")
    if gate is not None and core.attempt == 1 and isinstance(core, DcutrInitiator):
        core.note_reply(now)
        if await gate():
            raise TakenOver
    return core.on_message(message, now)


async def _direct_within(session: Session, has_direct: Callable[[], bool],
                         grace: float) -> bool:
    """Whether a live direct connection reaches the inbox within ``grace``
    seconds (anything else there is dropped: the stream has ended)."""
    deadline = time.monotonic() + grace
    while True:
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                item = await session.inbox.get()
        except TimeoutError:
            return has_direct()
        if isinstance(item, DirectArrived) and not item.conn.is_closed:
            return True
