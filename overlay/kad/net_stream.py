"""Kad messages on byte streams: one uvarint-framed protobuf per message,
16 KiB at most, decoded only through ``decode_message``.

Only errors of the overlay tree leave these helpers, so a caller can tell
a hostile peer (``RemoteProtocolError``) from a broken transport
(``TransportError``) and a timeout.
"""

from __future__ import annotations

from overlay.errors import StreamClosed
from overlay.kad.errors import InvalidKadMessage
from overlay.kad.messages import MAX_MESSAGE_SIZE, KadMessage, MessageType, decode_message, encode_message
from overlay.wire.stream import ByteStream
from overlay.wire.varint import frame, read_frame

__all__ = ["read_kad_message", "write_kad_message", "check_response"]


async def read_kad_message(stream: ByteStream, limit: int = MAX_MESSAGE_SIZE) -> KadMessage | None:
    """The next message, or ``None`` on a clean EOF between messages.

    The length prefix is checked against ``limit`` before the body is
    read (``MessageTooLarge``); a malformed body raises an
    ``InvalidKadMessage`` subclass."""
    data = await read_frame(stream, limit)
    if data is None:
        return None
    return decode_message(data, limit)


async def write_kad_message(stream: ByteStream, message: KadMessage) -> None:
    stream.write(frame(encode_message(message)))
    await stream.drain()


def check_response(request: KadMessage, response: KadMessage | None) -> KadMessage:
    """The answer must exist and be of the request's type (and, for
    PUT_VALUE, echo the record we sent)."""
    if response is None:
        raise StreamClosed("the peer closed the stream without answering")
    if response.type is not request.type:
        raise InvalidKadMessage(
            f"answer of type {response.type.name} to a {request.type.name} request"
        )
    if request.type is MessageType.PUT_VALUE:
        sent, echoed = request.record, response.record
        if sent is None or echoed is None or (echoed.key, echoed.value) != (sent.key, sent.value):
            raise InvalidKadMessage("PUT_VALUE answer does not echo the record")
    return response
