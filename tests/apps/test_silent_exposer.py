"""A peer that takes a service stream and never answers: the proxy's
pipelined HTTP request gives up after ``CONNECT_TIMEOUT`` with a readable
504 instead of holding the browser's connection for ever."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from overlay.apps import connector
from overlay.apps.service_proto import SERVICE_PROTOCOL
from overlay.errors import StreamClosed, StreamReset
from overlay.host.stream import NegotiatedStream
from tests.apps.helpers import curl, network


async def test_a_silent_exposer_is_a_504(short_tmp: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connector, "CONNECT_TIMEOUT", 1.0)
    held: list[NegotiatedStream] = []
    got_header = asyncio.Event()

    async def silent(stream: NegotiatedStream) -> None:
        await stream.readexactly(5)  # the header for "http"
        held.append(stream)
        got_header.set()
        with contextlib.suppress(StreamReset, StreamClosed):
            await stream.read()  # until the opener gives up: it resets the stream

    async with asyncio.timeout(60), network(short_tmp) as (a, b):
        await b.call("name_register", {"name": "bob.ovl"})
        b.daemon.host.set_stream_handler(SERVICE_PROTOCOL, silent)
        status, out, err = await curl("-x", f"http://{a.proxy}", "-w", "%{http_code}",
                                      "http://bob.ovl/")
        assert got_header.is_set() and held
        assert status == 0 and out.endswith(b"504"), (out, err)
        assert b"did not answer within 1 s" in out
        stats = a.apps.proxy_server
        assert stats is not None and stats.stats.errors == {"peer_offline": 1}
