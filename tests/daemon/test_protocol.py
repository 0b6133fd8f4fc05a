import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.daemon.errors import BadRequest, MalformedMessage
from overlay.daemon.protocol import (
    decode_message,
    encode_message,
    error_reply,
    event_message,
    ok_reply,
    parse_request,
)
from overlay.errors import MessageTooLarge
from overlay.wire.varint import decode_uvarint


def test_encode_is_uvarint_length_then_json() -> None:
    data = encode_message({"id": 1, "op": "identity"})
    length, offset = decode_uvarint(data)
    assert length == len(data) - offset
    assert json.loads(data[offset:]) == {"id": 1, "op": "identity"}


def test_encode_refuses_oversized_message() -> None:
    with pytest.raises(MessageTooLarge):
        encode_message({"blob": "x" * 200}, limit=100)


def test_encode_keeps_unicode_as_utf8() -> None:
    data = encode_message({"name": "café"})
    assert "café".encode() in data


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"{not json", b"[1,2]", b"42", b'"text"', b"[" * 100000,
     b'{"id": ' + b"7" * 5000 + b"}", b'{"a": NaN}', b'{"a": -Infinity}'],
)
def test_decode_rejects_non_objects(payload: bytes) -> None:
    with pytest.raises(MalformedMessage):
        decode_message(payload)


@given(st.binary(max_size=200))
def test_decode_arbitrary_bytes_raises_only_malformed(payload: bytes) -> None:
    try:
        value = decode_message(payload)
    except MalformedMessage:
        return
    assert isinstance(value, dict)


def test_parse_request_splits_args() -> None:
    request = parse_request({"id": 7, "op": "ping", "addr": "/x", "count": 2})
    assert (request.id, request.op, dict(request.args)) == (7, "ping", {"addr": "/x", "count": 2})


@pytest.mark.parametrize(
    "message",
    [{"op": "identity"}, {"id": "1", "op": "identity"}, {"id": True, "op": "identity"},
     {"id": -1, "op": "identity"}, {"id": 2**60, "op": "x"}, {"id": 1}, {"id": 1, "op": ""},
     {"id": 1, "op": 5}, {"id": 1, "op": "x" * 65}],
)
def test_parse_request_rejects_bad_envelopes(message: dict[str, object]) -> None:
    with pytest.raises(BadRequest) as info:
        parse_request(message)
    assert info.value.code == "bad_request"


def test_reply_shapes() -> None:
    assert ok_reply(3, {"peer_id": "p", "id": 99, "ok": False}) == {"peer_id": "p", "id": 3, "ok": True}
    assert error_reply(None, "unknown_op", "no") == {
        "id": None, "ok": False, "error": {"code": "unknown_op", "message": "no"}}
    assert event_message(4, "pong", {"rtt_ms": 1.5}) == {"id": 4, "event": "pong", "rtt_ms": 1.5}
