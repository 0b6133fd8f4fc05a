from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.errors import DecodeError, LocalProtocolError, MessageTooLarge
from overlay.negotiate import MAX_MESSAGE_SIZE, MessageReader, encode_message
from overlay.wire import encode_uvarint


def test_encode_matches_spec_example() -> None:
    # 19 = len("/multistream/1.0.0\n")
    assert encode_message("/multistream/1.0.0") == b"\x13/multistream/1.0.0\n"
    assert encode_message("na") == b"\x03na\n"


def test_encode_rejects_newline_and_oversize() -> None:
    with pytest.raises(LocalProtocolError):
        encode_message("a\nb")
    with pytest.raises(LocalProtocolError):
        encode_message("x" * MAX_MESSAGE_SIZE)


def test_reader_decodes_two_messages_and_keeps_trailing_bytes() -> None:
    reader = MessageReader()
    reader.feed(encode_message("/a") + encode_message("/b") + b"APP")
    assert reader.next_message() == "/a"
    assert reader.next_message() == "/b"
    assert reader.next_message() is None
    assert reader.buffered == 3


def test_want_never_exceeds_current_message() -> None:
    data = encode_message("/ipfs/ping/1.0.0")
    reader = MessageReader()
    assert reader.want() == 1
    reader.feed(data[:1])
    assert reader.want() == len(data) - 1
    reader.feed(data[1:5])
    assert reader.want() == len(data) - 5
    reader.feed(data[5:])
    assert reader.next_message() == "/ipfs/ping/1.0.0"
    assert reader.want() == 1


def test_oversize_length_rejected_before_body() -> None:
    reader = MessageReader()
    reader.feed(encode_uvarint(MAX_MESSAGE_SIZE + 1))
    with pytest.raises(MessageTooLarge):
        reader.want()


def test_endless_varint_rejected_after_two_bytes() -> None:
    reader = MessageReader()
    reader.feed(b"\xff\xff")
    with pytest.raises(MessageTooLarge):
        reader.next_message()


@pytest.mark.parametrize(
    "raw",
    [b"\x00", b"\x02ab", b"\x03\xff\xfe\n", b"\x04a\nb\n", b"\x80\x00"],
    ids=["empty", "no-newline", "bad-utf8", "inner-newline", "non-minimal"],
)
def test_malformed_messages(raw: bytes) -> None:
    reader = MessageReader()
    reader.feed(raw)
    with pytest.raises(DecodeError):
        reader.next_message()


@given(st.binary(max_size=3000), st.lists(st.integers(1, 64), max_size=50))
def test_fuzz_reader_is_chunking_invariant(data: bytes, cuts: list[int]) -> None:
    def run(chunks: list[bytes]) -> tuple[list[str], type[Exception] | None]:
        reader = MessageReader()
        out: list[str] = []
        try:
            for chunk in chunks:
                reader.feed(chunk)
                while (msg := reader.next_message()) is not None:
                    out.append(msg)
                    assert len(msg.encode()) < MAX_MESSAGE_SIZE
        except DecodeError as exc:
            return out, type(exc)
        return out, None

    chunks = []
    pos = 0
    for cut in cuts:
        chunks.append(data[pos : pos + cut])
        pos += cut
    chunks.append(data[pos:])
    assert run(chunks) == run([data])


@given(st.lists(st.text(min_size=1, max_size=100).filter(lambda s: "\n" not in s), max_size=10))
def test_roundtrip(texts: list[str]) -> None:
    reader = MessageReader()
    reader.feed(b"".join(encode_message(t) for t in texts))
    assert [reader.next_message() for _ in texts] == texts
    assert reader.next_message() is None
