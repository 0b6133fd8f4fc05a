from __future__ import annotations

import pytest

from overlay.errors import StreamClosed
from overlay.wire.chunks import ChunkBuffer, read_exactly


def test_takes_across_chunks_through_the_head_offset() -> None:
    buf = ChunkBuffer()
    buf.append(b"abcdef")
    buf.append(b"")
    buf.append(b"gh")
    assert buf.buffered == 8
    assert buf.take(2) == b"ab"
    assert buf.take(5) == b"cdefg"
    assert buf.buffered == 1 and buf
    assert buf.take(10) == b"h"
    assert not buf and buf.take(3) == b""


def test_clear_reports_what_it_dropped() -> None:
    buf = ChunkBuffer()
    buf.append(b"abc")
    buf.take(1)
    assert buf.clear() == 2
    assert buf.buffered == 0 and not buf


async def test_read_exactly_joins_reads_and_names_an_early_eof() -> None:
    pieces = [b"ab", b"cd", b""]

    async def read(n: int) -> bytes:
        return pieces.pop(0)[:n]

    assert await read_exactly(read, 3, "s") == b"abc"
    pieces[:] = [b"x", b""]
    with pytest.raises(StreamClosed, match="EOF after 1 of 4 bytes on s"):
        await read_exactly(read, 4, "s")
