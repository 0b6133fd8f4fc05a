"""``overlay forward --listen HOST:PORT NAME:SERVICE``: local TCP
listeners whose connections become ``/ovl/tcp/1.0.0`` streams to a named
peer's service (kubo's ``p2p forward``, by name).  A connection whose
target cannot be reached is reset, and the reason is logged and counted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from overlay.apps.connector import Connector, StatusGate
from overlay.apps.errors import TargetError
from overlay.apps.pump import Counters, pump_socket, release
from overlay.apps.tcp import Accepted, ConnectionGroup, Listener
from overlay.errors import StreamClosed, StreamReset, TransportError

__all__ = ["Forward", "Forwards"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Forward:
    listener: Listener
    name: str
    service: str
    counters: Counters = field(default_factory=Counters)
    last_error: str | None = None

    @property
    def listen(self) -> str:
        return self.listener.text


class Forwards:
    def __init__(self, group: ConnectionGroup, connector: Connector) -> None:
        self._group = group
        self._connector = connector
        self._forwards: dict[str, Forward] = {}

    def list(self) -> list[Forward]:
        return list(self._forwards.values())

    def find(self, listen: str) -> Forward | None:
        return self._forwards.get(listen)

    async def add(self, host: str, port: int, name: str, service: str) -> Forward:
        """Raises ``OSError`` when the address cannot be bound."""
        holder: list[Forward] = []

        async def handle(conn: Accepted) -> None:
            await self._connection(holder[0], conn)

        listener = await self._group.listen(host, port, handle, f"forward to {name}:{service}")
        forward = Forward(listener, name, service)
        holder.append(forward)
        self._forwards[forward.listen] = forward
        return forward

    async def close(self, listen: str) -> Forward | None:
        forward = self._forwards.pop(listen, None)
        if forward is not None:
            await self._group.close_listener(forward.listener)
        return forward

    async def _connection(self, forward: Forward, conn: Accepted) -> None:
        try:
            stream = await self._connector.open_service(forward.name, forward.service,
                                                        pipelined=True)
        except TargetError as exc:
            forward.last_error = str(exc)
            forward.counters.failed += 1
            log.info("forward %s → %s:%s: %s", forward.listen, forward.name, forward.service,
                     exc)
            conn.abort()  # the client sees a reset, not an empty answer
            return
        try:
            # Whatever the client sent meanwhile (a request, usually) leaves
            # with the stream's header, in the same packet.
            first = conn.take_sent()
            if first:
                stream.write(first)
                forward.counters.up += len(first)
            sock = conn.detach()
        except (ConnectionError, StreamClosed, StreamReset, TransportError) as exc:
            log.debug("forward %s: the first bytes failed: %s", forward.listen, exc)
            forward.counters.failed += 1
            stream.reset()
            conn.abort()
            await release(stream)
            return
        try:
            await pump_socket(sock, stream, forward.counters)
        finally:
            await release(stream)
        if isinstance(stream, StatusGate) and stream.error is not None:
            # Refused after the client's bytes went out: the pump reset both.
            forward.last_error = str(stream.error)
            log.info("forward %s → %s:%s: %s", forward.listen, forward.name, forward.service,
                     stream.error)
