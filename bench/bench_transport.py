"""overlay's QUIC transport against raw aioquic, measured in the same run.

    .venv/bin/python bench/bench_transport.py --mb 100

The receiver runs in a child process and the sender in this one, so each
side has its own core.  Both stacks use the same TLS settings: a self-signed
P-256 certificate, ALPN ``libp2p``, no CA verification (raw aioquic uses
``aioquic.asyncio.connect/serve``; overlay adds the libp2p certificate checks
and mutual authentication on top).

setup
    Handshake plus the first stream round trip (1 byte echoed back), on a
    fresh connection each round; median of ``--setup-rounds``.
throughput_1
    ``--mb`` MB (10**6 bytes) on one stream; the clock stops when the
    receiver reports the byte count.
throughput_10
    The same total over 10 concurrent streams of one connection.

The stacks alternate round by round (setup) and run by run (throughput,
best of ``--repeat``), so load from other processes hits both alike.

Output: one JSON object on stdout (figures and ratios ours/raw); a readable
summary goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import socket
import ssl
import statistics
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic.configuration import QuicConfiguration

from overlay.errors import TransportError
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.transport import QuicEndpoint, QuicStream, TransportConfig, generate_credentials

HOST = "127.0.0.1"
MB = 1_000_000
CHUNK = 256 * 1024
STREAMS = 10
SOCKET_BUFFER = 4 << 20  # what overlay's endpoint requests
ECHO, SINK = b"E", b"S"


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``, from
    /proc (Linux; 0.0 elsewhere); clock ticks are 10 ms."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(main: Callable[[], Coroutine[Any, Any, Any]], loop_kind: str) -> Any:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(main())
    return asyncio.run(main())


def transport_config(args: argparse.Namespace) -> TransportConfig:
    if args.datagram_size is None:
        return TransportConfig()
    return TransportConfig(max_datagram_size=args.datagram_size)


def raw_configuration(is_client: bool, args: argparse.Namespace) -> QuicConfiguration:
    creds = generate_credentials(Ed25519PrivateKey.generate(), datetime.datetime.now(datetime.UTC))
    return QuicConfiguration(
        is_client=is_client,
        alpn_protocols=["libp2p"],
        verify_mode=ssl.CERT_NONE,
        certificate=creds.certificate,
        private_key=creds.private_key,
        max_datagram_size=args.datagram_size,
    )


def _grow_buffers(transport: asyncio.BaseTransport | None, args: argparse.Namespace) -> None:
    """Give raw aioquic's socket the buffers overlay's endpoint asks for,
    so the comparison is between the QUIC drivers, not socket settings."""
    if args.raw_default_buffers or transport is None:
        return
    sock = transport.get_extra_info("socket")
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER)


# --- receiver (child process) -----------------------------------------------


async def _wait_stop(pipe: multiprocessing.connection.Connection) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(pipe.fileno(), stop.set)
    try:
        await stop.wait()
    finally:
        loop.remove_reader(pipe.fileno())


async def _ours_stream(stream: QuicStream) -> None:
    kind = await stream.readexactly(1)
    if kind == ECHO:
        stream.write(await stream.readexactly(1))
        await stream.close()
        return
    total = 0
    while chunk := await stream.read(CHUNK):
        total += len(chunk)
    stream.write(struct.pack(">Q", total))
    await stream.close()


async def _ours_server(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    key = Ed25519PrivateKey.generate()
    async with await QuicEndpoint.create(HOST, 0, key, transport_config(args)) as endpoint:
        pipe.send((endpoint.local_address[1], str(PeerId.from_public_key(key.public_key()))))

        async def serve_conn(tg: asyncio.TaskGroup) -> None:
            conn = await endpoint.accept()

            async def streams() -> None:
                try:
                    while True:
                        tg.create_task(_guard(_ours_stream(await conn.accept_stream())))
                except TransportError:
                    pass

            tg.create_task(streams())

        async def accept_loop(tg: asyncio.TaskGroup) -> None:
            try:
                while True:
                    await serve_conn(tg)
            except TransportError:
                pass

        async with asyncio.TaskGroup() as tg:
            acceptor = tg.create_task(accept_loop(tg))
            await _wait_stop(pipe)
            await endpoint.aclose()
            acceptor.cancel()


async def _guard(coro: Awaitable[None]) -> None:
    try:
        await coro
    except TransportError:
        pass  # a benchmark peer closing mid-stream is not the receiver's problem


async def _raw_server(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        kind = await reader.readexactly(1)
        if kind == ECHO:
            writer.write(await reader.readexactly(1))
            writer.write_eof()
            return
        total = 0
        while chunk := await reader.read(CHUNK):
            total += len(chunk)
        writer.write(struct.pack(">Q", total))
        writer.write_eof()

    tasks: set[asyncio.Task[None]] = set()

    def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # aioquic's stream handler is synchronous; keep the tasks referenced.
        task = asyncio.ensure_future(handle(reader, writer))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    server = await serve(HOST, 0, configuration=raw_configuration(False, args), stream_handler=on_stream)
    assert server._transport is not None
    _grow_buffers(server._transport, args)
    port = server._transport.get_extra_info("sockname")[1]
    pipe.send((port, None))
    await _wait_stop(pipe)
    server.close()
    for task in tasks:
        task.cancel()


ECHO_PROTOCOL = "/bench/echo/1.0.0"


async def _host_server(pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    """A whole overlay Host (identify, ping, supervisor) with an echo protocol."""
    from overlay.host import Host, HostConfig

    host = Host(Ed25519PrivateKey.generate(), HostConfig(transport=transport_config(args)))
    async with host:
        async def echo(stream: Any) -> None:
            stream.write(await stream.readexactly(1))
            await stream.close()

        host.set_stream_handler(ECHO_PROTOCOL, echo)
        await host.listen([f"/ip4/{HOST}/udp/0/quic-v1"])
        pipe.send((str(host.listen_addrs()[0]), str(host.peer_id)))
        await _wait_stop(pipe)


def receiver_main(kind: str, pipe: multiprocessing.connection.Connection, args: argparse.Namespace) -> None:
    server = {"ours": _ours_server, "raw": _raw_server, "host": _host_server}[kind]
    run(lambda: server(pipe, args), args.loop)


# --- sender (this process) --------------------------------------------------


async def ours_setup(port: int, peer: str, args: argparse.Namespace, rounds: int) -> list[float]:
    samples = []
    key = Ed25519PrivateKey.generate()
    expected = PeerId.from_string(peer)
    async with await QuicEndpoint.create(HOST, 0, key, transport_config(args)) as endpoint:
        for _ in range(rounds):
            start = time.perf_counter()
            conn = await endpoint.dial((HOST, port), expected)
            stream = await conn.open_stream()
            stream.write(ECHO + b"x")
            await stream.close()
            assert await stream.readexactly(1) == b"x"
            samples.append(time.perf_counter() - start)
            conn.close()
    return samples


async def host_setup(addr: str, peer: str, args: argparse.Namespace, rounds: int) -> list[float]:
    """A fresh Host per round, as a new peer would be: its dial endpoint and
    certificate are made on the first dial; connect, then one negotiated
    stream (multistream-select) with a 1-byte echo."""
    from overlay.host import Host, HostConfig

    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        host = Host(Ed25519PrivateKey.generate(), HostConfig(transport=transport_config(args)))
        async with host:
            await host.connect(f"{addr}/p2p/{peer}")
            stream = await host.new_stream(PeerId.from_string(peer), [ECHO_PROTOCOL])
            stream.write(b"x")
            assert await stream.readexactly(1) == b"x"
            samples.append(time.perf_counter() - start)
    return samples


async def raw_setup(port: int, args: argparse.Namespace, rounds: int) -> list[float]:
    samples = []
    config = raw_configuration(True, args)
    for _ in range(rounds):
        start = time.perf_counter()
        async with connect(HOST, port, configuration=config) as client:
            _grow_buffers(client._transport, args)
            reader, writer = await client.create_stream()
            writer.write(ECHO + b"x")
            writer.write_eof()
            assert await reader.readexactly(1) == b"x"
            samples.append(time.perf_counter() - start)
            client.close()
    return samples


async def _ours_sink(conn: Any, size: int) -> None:
    stream = await conn.open_stream()
    stream.write(SINK)
    block = os.urandom(CHUNK)
    left = size
    while left:
        n = min(left, CHUNK)
        stream.write(block if n == CHUNK else block[:n])
        await stream.drain()
        left -= n
    await stream.close()
    (got,) = struct.unpack(">Q", await stream.readexactly(8))
    assert got == size, (got, size)


async def ours_throughput(port: int, peer: str, args: argparse.Namespace, streams: int) -> float:
    key = Ed25519PrivateKey.generate()
    async with await QuicEndpoint.create(HOST, 0, key, transport_config(args)) as endpoint:
        conn = await endpoint.dial((HOST, port), PeerId.from_string(peer))
        size = args.mb * MB // streams
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(streams):
                tg.create_task(_ours_sink(conn, size))
        elapsed = time.perf_counter() - start
        conn.close()
    return elapsed


# The same send-buffer bound as overlay's default drain() limit, so both
# stacks hold the same amount of unacknowledged data per stream.
RAW_SEND_LIMIT = 1 << 20


class _RawDrain:
    """A drain() for raw aioquic, which has none: without it a sender hands
    the whole transfer to aioquic at once, and aioquic's stream buffer then
    costs O(n^2) to trim, which would make the baseline unfairly slow."""

    def __init__(self, client: QuicConnectionProtocol) -> None:
        self._client = client
        self._sent = asyncio.Event()
        original = client.transmit

        def transmit() -> None:
            original()
            self._sent.set()

        client.transmit = transmit  # type: ignore[method-assign]

    def buffered(self, stream_id: int) -> int:
        sender = self._client._quic._streams[stream_id].sender
        return int(sender._buffer_stop - sender._buffer_start)

    async def drain(self, stream_id: int) -> None:
        while self.buffered(stream_id) > RAW_SEND_LIMIT:
            self._sent.clear()
            await self._sent.wait()


async def _raw_sink(client: QuicConnectionProtocol, drain: _RawDrain, size: int) -> None:
    reader, writer = await client.create_stream()
    stream_id = writer.get_extra_info("stream_id")
    writer.write(SINK)
    block = os.urandom(CHUNK)
    left = size
    while left:
        n = min(left, CHUNK)
        writer.write(block if n == CHUNK else block[:n])
        await drain.drain(stream_id)
        left -= n
    writer.write_eof()
    (got,) = struct.unpack(">Q", await reader.readexactly(8))
    assert got == size, (got, size)


async def raw_throughput(port: int, args: argparse.Namespace, streams: int) -> float:
    async with connect(HOST, port, configuration=raw_configuration(True, args)) as client:
        _grow_buffers(client._transport, args)
        drain = _RawDrain(client)
        size = args.mb * MB // streams
        start = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for _ in range(streams):
                tg.create_task(_raw_sink(client, drain, size))
        elapsed = time.perf_counter() - start
        client.close()
    return elapsed


class Receiver:
    """A receiver child process for one stack."""

    def __init__(self, kind: str, args: argparse.Namespace) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self._proc = ctx.Process(target=receiver_main, args=(kind, child, args), daemon=True)
        self._proc.start()
        self.port, self.peer = self._pipe.recv()
        assert self._proc.pid is not None
        self.pid: int = self._proc.pid

    def stop(self) -> None:
        self._pipe.send("stop")
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join()


async def sender(ours: Receiver, raw: Receiver, host: Receiver,
                 args: argparse.Namespace) -> dict[str, Any]:
    """Alternate the two stacks round by round, so that load from other
    processes on a shared machine hits both alike."""
    setup: dict[str, list[float]] = {"ours": [], "raw": []}
    host_samples: list[float] = []
    # The first host in a process pays one-off costs (imports, first TLS
    # and certificate code paths); that is reported on its own.
    first_host = (await host_setup(host.port, host.peer, args, 1))[0]
    one: dict[str, list[float]] = {"ours": [], "raw": []}
    ten: dict[str, list[float]] = {"ours": [], "raw": []}
    for _ in range(args.setup_rounds):
        setup["ours"] += await ours_setup(ours.port, ours.peer, args, 1)
        setup["raw"] += await raw_setup(raw.port, args, 1)
        host_samples += await host_setup(host.port, host.peer, args, 1)
    # CPU ms per MB of each transfer: this process's time.process_time()
    # for the sender (its connect included, a few ms), /proc for the
    # receiver, which idles between transfers.
    cpu: dict[str, dict[str, list[float]]] = {
        kind: {"send_1": [], "recv_1": [], "send_10": [], "recv_10": []} for kind in ("ours", "raw")
    }

    async def timed(kind: str, streams: int) -> float:
        receiver = ours if kind == "ours" else raw
        before_send, before_recv = time.process_time(), process_cpu(receiver.pid)
        if kind == "ours":
            seconds = await ours_throughput(ours.port, ours.peer, args, streams)
        else:
            seconds = await raw_throughput(raw.port, args, streams)
        cpu[kind][f"send_{streams}"].append((time.process_time() - before_send) * 1000 / args.mb)
        cpu[kind][f"recv_{streams}"].append((process_cpu(receiver.pid) - before_recv) * 1000 / args.mb)
        return seconds

    for _ in range(args.repeat):
        one["ours"].append(await timed("ours", 1))
        one["raw"].append(await timed("raw", 1))
        ten["ours"].append(await timed("ours", STREAMS))
        ten["raw"].append(await timed("raw", STREAMS))
    out: dict[str, Any] = {}
    for kind in ("ours", "raw"):
        # Best of the repeats: the run least disturbed by other processes.
        t1, t10 = min(one[kind]), min(ten[kind])
        out[kind] = {
            "setup_ms_median": round(statistics.median(setup[kind]) * 1000, 3),
            "setup_ms_samples": [round(x * 1000, 3) for x in setup[kind]],
            "throughput_1_seconds": [round(x, 4) for x in one[kind]],
            "throughput_10_seconds": [round(x, 4) for x in ten[kind]],
            "throughput_1_MBps": round(args.mb / t1, 2),
            "throughput_10_MBps": round(args.mb / t10, 2),
            **{f"cpu_ms_per_mb_{key}": round(statistics.median(v), 2) for key, v in cpu[kind].items()},
            **{f"cpu_ms_per_mb_{key}_samples": [round(x, 2) for x in v] for key, v in cpu[kind].items()},
        }
    out["ours"]["host_setup_ms_median"] = round(statistics.median(host_samples) * 1000, 3)
    out["ours"]["host_setup_ms_samples"] = [round(x * 1000, 3) for x in host_samples]
    out["ours"]["host_setup_first_ms"] = round(first_host * 1000, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="MB (10**6 bytes) per transfer (default 100)")
    parser.add_argument("--setup-rounds", type=int, default=30)
    parser.add_argument("--raw-default-buffers", action="store_true",
                        help="leave raw aioquic's sockets at the OS default buffer sizes")
    parser.add_argument("--repeat", type=int, default=2, help="throughput runs per stack; best is kept")
    parser.add_argument("--datagram-size", type=int, default=1200, help="max QUIC datagram size, both stacks")
    try:
        import uvloop  # noqa: F401

        default_loop = "uvloop"
    except ImportError:
        default_loop = "asyncio"
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default=default_loop)
    args = parser.parse_args()

    log(f"loop={args.loop} mb={args.mb} datagram_size={args.datagram_size}")
    results: dict[str, Any] = {"loop": args.loop, "mb": args.mb, "datagram_size": args.datagram_size,
                               "repeat": args.repeat, "raw_default_buffers": args.raw_default_buffers}
    receivers = {kind: Receiver(kind, args) for kind in ("ours", "raw", "host")}
    try:
        results.update(run(lambda: sender(receivers["ours"], receivers["raw"], receivers["host"], args),
                           args.loop))
    finally:
        for receiver in receivers.values():
            receiver.stop()
    ours, raw = results["ours"], results["raw"]
    results["ratios_ours_over_raw"] = {
        "setup_time": round(ours["setup_ms_median"] / raw["setup_ms_median"], 3),
        "throughput_1": round(ours["throughput_1_MBps"] / raw["throughput_1_MBps"], 3),
        "throughput_10": round(ours["throughput_10_MBps"] / raw["throughput_10_MBps"], 3),
        "host_setup_time": round(ours["host_setup_ms_median"] / raw["setup_ms_median"], 3),
    }
    log(f"{'host connect + 1st negotiated stream':36} ours {ours['host_setup_ms_median']:8.2f} ms    "
        f"raw aioquic {raw['setup_ms_median']:8.2f} ms    ratio "
        f"{ours['host_setup_ms_median'] / raw['setup_ms_median']:.2f}  "
        f"(first in process {ours['host_setup_first_ms']:.1f} ms)")
    for label, key, unit in (
        ("setup (handshake + 1st stream RTT)", "setup_ms_median", "ms"),
        ("1 stream", "throughput_1_MBps", "MB/s"),
        (f"{STREAMS} streams", "throughput_10_MBps", "MB/s"),
    ):
        log(f"{label:36} ours {ours[key]:8.2f} {unit:5} raw aioquic {raw[key]:8.2f} {unit:5} "
            f"ratio {ours[key] / raw[key]:.2f}")
    for streams in (1, STREAMS):
        log(f"{'CPU ms/MB, ' + str(streams) + ' stream(s), median':36} ours sender "
            f"{ours[f'cpu_ms_per_mb_send_{streams}']:5.1f} receiver {ours[f'cpu_ms_per_mb_recv_{streams}']:5.1f}"
            f"   raw aioquic sender {raw[f'cpu_ms_per_mb_send_{streams}']:5.1f} "
            f"receiver {raw[f'cpu_ms_per_mb_recv_{streams}']:5.1f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
