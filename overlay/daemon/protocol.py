"""The stream API's message layer, without I/O (see docs/api.md).

Each message is ``uvarint(len) ‖ UTF-8 JSON object``.  A request is
``{"id": n, "op": "...", ...args}``; replies are ``{"id": n, "ok": true, ...}``
or ``{"id": n, "ok": false, "error": {"code": ..., "message": ...}}``, and a
streaming op sends ``{"id": n, "event": ...}`` messages before its final reply.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from overlay.daemon.errors import BadRequest, MalformedMessage
from overlay.errors import MessageTooLarge
from overlay.wire.varint import frame

__all__ = [
    "MAX_MESSAGE_SIZE",
    "API_VERSION",
    "ErrorCode",
    "Request",
    "encode_message",
    "decode_message",
    "parse_request",
    "request_id_of",
    "ok_reply",
    "error_reply",
    "event_message",
]

MAX_MESSAGE_SIZE = 1 << 20
"""Largest JSON body, in bytes, either side accepts or sends."""

API_VERSION = 1
"""Reported by the ``identity`` op so clients can detect incompatible daemons."""

_RESERVED_KEYS = frozenset({"id", "op"})
_MAX_REQUEST_ID = (1 << 53) - 1  # exact in every JSON implementation
_MAX_OP_LENGTH = 64


class ErrorCode:
    """The ``error.code`` strings; clients branch on these, never on messages."""

    MALFORMED_MESSAGE = "malformed_message"
    MESSAGE_TOO_LARGE = "message_too_large"
    BAD_REQUEST = "bad_request"
    UNKNOWN_OP = "unknown_op"
    INVALID_MULTIADDR = "invalid_multiaddr"
    INVALID_PEER_ID = "invalid_peer_id"
    DIAL_FAILED = "dial_failed"
    PEER_ID_MISMATCH = "peer_id_mismatch"
    HANDSHAKE_FAILED = "handshake_failed"
    PROTOCOL_NOT_SUPPORTED = "protocol_not_supported"
    CONNECTION_CLOSED = "connection_closed"
    STREAM_FAILED = "stream_failed"
    LIMIT_EXCEEDED = "limit_exceeded"
    TIMEOUT = "timeout"
    CANCELLED = "cancelled"
    FAILED = "failed"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request: its id, op name, and the remaining fields."""

    id: int
    op: str
    args: Mapping[str, Any]


def encode_message(message: Mapping[str, Any], limit: int = MAX_MESSAGE_SIZE) -> bytes:
    """Serialize one message with its length prefix.

    Raises ``MessageTooLarge`` rather than send what the peer must refuse.
    """
    body = json.dumps(message, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")
    if len(body) > limit:
        raise MessageTooLarge(len(body), limit)
    return frame(body)


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; other implementations reject them.
    raise ValueError(f"{name} is not valid JSON")


def decode_message(payload: bytes) -> dict[str, Any]:
    """Parse one frame body into a JSON object."""
    try:
        value = json.loads(payload.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"message is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise MalformedMessage(f"message is not JSON: {exc.msg} at byte {exc.pos}") from exc
    except RecursionError as exc:
        raise MalformedMessage("message nests too deeply") from exc
    except ValueError as exc:  # e.g. an integer beyond Python's digit limit
        raise MalformedMessage(f"message has an unusable value: {exc}"[:200]) from exc
    if not isinstance(value, dict):
        raise MalformedMessage(f"message must be a JSON object, not {type(value).__name__}")
    return value


def request_id_of(message: Mapping[str, Any]) -> int | None:
    """The request's id if it is usable, so an error reply can still name it."""
    rid = message.get("id")
    if isinstance(rid, int) and not isinstance(rid, bool) and 0 <= rid <= _MAX_REQUEST_ID:
        return rid
    return None


def parse_request(message: Mapping[str, Any]) -> Request:
    """Validate the envelope of a request; args are checked by each op."""
    rid = request_id_of(message)
    if rid is None:
        raise BadRequest(f"`id` must be an integer from 0 to {_MAX_REQUEST_ID}")
    op = message.get("op")
    if not isinstance(op, str) or not 0 < len(op) <= _MAX_OP_LENGTH:
        raise BadRequest(f"`op` must be a string of 1 to {_MAX_OP_LENGTH} characters")
    args = {k: v for k, v in message.items() if k not in _RESERVED_KEYS}
    return Request(rid, op, args)


def ok_reply(request_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    reply: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("id", "ok")}
    reply["id"] = request_id
    reply["ok"] = True
    return reply


def error_reply(request_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": request_id, "ok": False, "error": {"code": code, "message": message}}


def event_message(request_id: int, event: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {k: v for k, v in fields.items() if k not in ("id", "event")}
    message["id"] = request_id
    message["event"] = event
    return message
