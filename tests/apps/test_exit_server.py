"""The exit's stream handler over an in-memory stream, with a fake
resolver: which resolved addresses it dials, what it answers and counts.
The only TCP connections go to a listener on 127.0.0.1 (exempted as a lab
destination); refused addresses are never dialed."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from overlay.apps.exit_policy import ExitConfig, IPAddress
from overlay.apps.exit_proto import ExitStatus, encode_request
from overlay.apps.exit_server import ExitServer, Resolve
from overlay.wire.memory import MemoryStream, memory_stream_pair

CLIENT = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"


class _Inbound(MemoryStream):
    remote_peer = CLIENT


def _pair() -> tuple[_Inbound, MemoryStream]:
    near, far = memory_stream_pair()
    inbound = _Inbound.__new__(_Inbound)
    inbound.__dict__.update(near.__dict__)
    return inbound, far


@asynccontextmanager
async def _echo_server() -> AsyncIterator[tuple[int, list[str]]]:
    """A TCP server on 127.0.0.1 that answers b"hello" and records who came."""
    seen: list[str] = []

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(writer.get_extra_info("peername")[0])
        writer.write(b"hello")
        writer.write_eof()
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


async def _no_names(name: str) -> tuple[str, ...]:
    return ()


def _resolver(answers: dict[str, list[str]], asked: list[str]) -> Resolve:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        asked.append(host)
        return [ipaddress.ip_address(a) for a in answers.get(host, [])]
    return resolve


async def _ask(server: ExitServer, host: str, port: int) -> tuple[int, bytes]:
    inbound, client = _pair()
    client.write(encode_request(host, port))
    client.write_eof()
    async with asyncio.timeout(10):
        await server.handle(inbound)  # type: ignore[arg-type]
        status = (await client.readexactly(1))[0]
        rest = bytearray()
        while chunk := await client.read():
            rest += chunk
    return status, bytes(rest)


async def test_only_allowed_addresses_are_dialed() -> None:
    async with _echo_server() as (port, seen):
        asked: list[str] = []
        answers = {"mixed.example": ["10.0.0.7", "127.0.0.1"],
                   "lan.example": ["192.168.1.1", "127.0.0.2"],
                   "empty.example": []}
        config = ExitConfig(enabled=True, ports=(port,), allow=(CLIENT,),
                            unsafe_lab_destinations=("127.0.0.1/32",))
        server = ExitServer(config, _no_names, _resolver(answers, asked))

        # The private address is dropped; the exempted one is dialed.
        assert await _ask(server, "mixed.example", port) == (ExitStatus.OK, b"hello")
        assert seen == ["127.0.0.1"]
        # Only refused addresses: refused without a dial.
        assert await _ask(server, "lan.example", port) == (ExitStatus.DESTINATION_REFUSED, b"")
        assert await _ask(server, "empty.example", port) == (ExitStatus.RESOLVE_FAILED, b"")
        # The port is checked before anything is resolved.
        assert await _ask(server, "mixed.example", port + 1 if port < 65535 else 1) == \
            (ExitStatus.PORT_REFUSED, b"")
        assert asked == ["mixed.example", "lan.example", "empty.example"]
        assert seen == ["127.0.0.1"]
        assert server.limit_hits.snapshot() == {"exit.destination_refused": 1,
                                                "exit.port_refused": 1,
                                                "exit.resolve_failed": 1}
        # Admitted three times (two then refused by the destination rule or resolver).
        assert server.stats()["clients"][CLIENT] == {"open": 0, "connections": 3,
                                                     "bytes": len(b"hello")}


async def test_nobody_is_allowed_by_default_and_bad_headers_are_answered() -> None:
    asked: list[str] = []
    server = ExitServer(ExitConfig(enabled=True), _no_names, _resolver({}, asked))
    assert await _ask(server, "example.com", 443) == (ExitStatus.NOT_ALLOWED, b"")
    inbound, client = _pair()
    client.write(b"\x01\xbb\x00")  # host length 0
    await server.handle(inbound)  # type: ignore[arg-type]
    assert (await client.readexactly(1))[0] == ExitStatus.BAD_REQUEST
    assert asked == []
    assert server.limit_hits.snapshot() == {"exit.bad_request": 1,
                                            "exit.client_not_allowed": 1}
    assert server.refused == {"not_allowed": 1, "bad_request": 1}
