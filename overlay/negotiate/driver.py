"""The asyncio driver of multistream-select over any ``ByteStream``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from overlay.errors import LocalProtocolError, NegotiationError
from overlay.negotiate.machine import (
    DEFAULT_MAX_ATTEMPTS,
    DialerNegotiation,
    ListenerNegotiation,
    Selected,
    Send,
)
from overlay.negotiate.messages import MAX_MESSAGE_SIZE, MessageReader
from overlay.wire.stream import ByteStream

__all__ = ["select_protocol", "confirm_selection", "handle_protocol"]


async def _read_message(stream: ByteStream, reader: MessageReader) -> str:
    # Each read returns at least one byte and asks for no more than the
    # current message needs, so this ends within MAX_MESSAGE_SIZE + 2 reads
    # and never consumes application bytes pipelined after the message.
    while True:
        message = reader.next_message()
        if message is not None:
            return message
        data = await stream.read(reader.want())
        if not data:
            raise NegotiationError("stream ended during protocol negotiation")
        reader.feed(data)


async def _run_dialer(
    stream: ByteStream, machine: DialerNegotiation, reader: MessageReader
) -> str:
    while True:
        for out in machine.receive(await _read_message(stream, reader)):
            if isinstance(out, Send):
                stream.write(out.data)
                await stream.drain()
            elif isinstance(out, Selected):
                return out.protocol


async def select_protocol(
    stream: ByteStream, protocols: Sequence[str], *, lazy: bool = False
) -> str:
    """Negotiate one of ``protocols`` (in preference order) as the dialer.

    With ``lazy=True`` (one protocol only) the header and proposal are
    written and the protocol is returned at once; the caller must then call
    ``confirm_selection`` before its first read, which is where a refusal
    surfaces.  Raises ``ProtocolNotSupported`` when every proposal is refused.
    """
    machine = DialerNegotiation(protocols)
    if lazy and len(protocols) != 1:
        raise LocalProtocolError("lazy negotiation needs exactly one protocol")
    stream.write(machine.start())
    await stream.drain()
    if lazy:
        return protocols[0]
    return await _run_dialer(stream, machine, MessageReader(MAX_MESSAGE_SIZE))


async def confirm_selection(stream: ByteStream, protocol: str) -> None:
    """Read the listener's answer to a lazy ``select_protocol``."""
    machine = DialerNegotiation((protocol,))
    machine.start()  # already written by select_protocol
    await _run_dialer(stream, machine, MessageReader(MAX_MESSAGE_SIZE))


async def handle_protocol(
    stream: ByteStream,
    supported: Callable[[str], bool],
    *,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> str:
    """Negotiate as the listener; answer ``na`` until ``supported`` accepts.

    Raises ``NegotiationError`` (``TooManyAttempts`` after ``max_attempts``
    refused proposals) or ``DecodeError``/``MessageTooLarge``.
    """
    machine = ListenerNegotiation(supported, max_attempts)
    reader = MessageReader(MAX_MESSAGE_SIZE)
    stream.write(machine.start())
    while True:
        for out in machine.receive(await _read_message(stream, reader)):
            if isinstance(out, Send):
                stream.write(out.data)
                await stream.drain()
            elif isinstance(out, Selected):
                return out.protocol
