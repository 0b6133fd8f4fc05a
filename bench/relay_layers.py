"""CPU per MB of the layers a relayed connection adds, in one process.

    .venv/bin/python bench/relay_layers.py --mb 50            # CPU ms per MB per layer
    .venv/bin/python bench/relay_layers.py --mb 20 --profile  # plus cProfile (CPU timer)

``bench_relay.py`` measures the real thing (three processes, QUIC on
loopback) but on a loaded machine its figures move a lot.  This one runs the
upper layers alone so their cost can be compared change by change:

    sender: yamux stream -> yamux session -> Noise (SecureStream)
            -> pipe -> relay splice -> pipe ->
    target: Noise -> yamux session -> yamux stream -> sink

The pipes stand in for QUIC streams: a write is queued in chunks of
``--datagram`` bytes (QUIC hands over one STREAM frame per datagram, 16 KiB
on loopback), a read takes what is queued up to its ``max_bytes`` (as
``QuicStream`` does, through ``ChunkBuffer``), and a pipe holding more than
``--pipe-limit`` bytes makes ``drain()`` wait.

CPU time is ``time.process_time()``; ``--profile`` sorts functions by their
own CPU time (``cProfile`` with ``time.process_time`` as its timer, so a
loaded machine does not move the figures).  ``--baseline-noise`` also times
Noise alone (no yamux) and ``--raw`` the pipes alone, to see what each layer
costs on its own.

Output: one JSON object on stdout; a readable summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import sys
import time
from typing import Any

from overlay.errors import StreamReset
from overlay.identity import Ed25519PrivateKey
from overlay.mux import YamuxSession
from overlay.mux.config import YamuxConfig
from overlay.relay import server as relay_server
from overlay.secure.stream import SecureStream, secure_inbound, secure_outbound
from overlay.wire.chunks import ChunkBuffer, read_exactly
from overlay.wire.stream import ByteStream

MB = 1_000_000
CHUNK = 256 * 1024
CIRCUIT = YamuxConfig(receive_window=2 * 1024 * 1024)  # as overlay.host.circuit's


class _Pipe:
    def __init__(self, datagram: int, limit: int) -> None:
        self.received = ChunkBuffer()
        self.eof = False
        self.reset = False
        self.datagram = datagram
        self.limit = limit
        self.readable = asyncio.Event()
        self.drained = asyncio.Event()


class PipeStream:
    """One end of a chunked in-memory duplex stream (see the module doc)."""

    def __init__(self, inbound: _Pipe, outbound: _Pipe) -> None:
        self._in = inbound
        self._out = outbound

    async def read(self, max_bytes: int = 65536) -> bytes:
        pipe = self._in
        while not (pipe.received or pipe.eof or pipe.reset):
            pipe.readable.clear()
            await pipe.readable.wait()
        if pipe.reset:
            raise StreamReset("reset")
        data = pipe.received.take(max_bytes)
        if pipe.received.buffered <= pipe.limit:
            pipe.drained.set()
        return data

    async def readexactly(self, n: int) -> bytes:
        return await read_exactly(self.read, n, "pipe")

    def write(self, data: bytes) -> None:
        if data:
            pipe = self._out
            view = memoryview(data)
            for start in range(0, len(view), pipe.datagram):
                pipe.received.append(bytes(view[start : start + pipe.datagram]))
            pipe.readable.set()

    async def drain(self) -> None:
        pipe = self._out
        while pipe.received.buffered > pipe.limit and not pipe.reset:
            pipe.drained.clear()
            await pipe.drained.wait()

    def write_eof(self) -> None:
        self._out.eof = True
        self._out.readable.set()

    def reset(self) -> None:
        for pipe in (self._in, self._out):
            pipe.reset = True
            pipe.readable.set()
            pipe.drained.set()

    async def close(self) -> None:
        self.write_eof()


def pipe_pair(datagram: int, limit: int) -> tuple[PipeStream, PipeStream]:
    a_to_b, b_to_a = _Pipe(datagram, limit), _Pipe(datagram, limit)
    return PipeStream(b_to_a, a_to_b), PipeStream(a_to_b, b_to_a)


async def _send_all(stream: ByteStream, size: int) -> None:
    block = os.urandom(CHUNK)
    left = size
    while left:
        n = min(left, CHUNK)
        stream.write(block if n == CHUNK else block[:n])
        await stream.drain()
        left -= n
    stream.write_eof()


async def _sink(stream: ByteStream) -> int:
    total = 0
    while chunk := await stream.read(CHUNK):
        total += len(chunk)
    return total


async def relayed(size: int, args: argparse.Namespace) -> None:
    """The whole relayed stack over two pipes and a splice."""
    a_raw, r_in = pipe_pair(args.datagram, args.pipe_limit)
    r_out, c_raw = pipe_pair(args.datagram, args.pipe_limit)
    async with asyncio.TaskGroup() as tg:
        splice = tg.create_task(relay_server.splice(r_in, r_out, data_limit=None, duration=None))
        a_sec, c_sec = await asyncio.gather(
            secure_outbound(a_raw, Ed25519PrivateKey.generate()),
            secure_inbound(c_raw, Ed25519PrivateKey.generate()),
        )
        config = YamuxConfig(receive_window=args.window, max_frame_size=args.frame)
        await _muxed(a_sec, c_sec, size, config)
        await splice


async def _muxed(a_sec: SecureStream, c_sec: SecureStream, size: int,
                 config: YamuxConfig) -> None:
    async with YamuxSession(a_sec, True, config) as a, YamuxSession(c_sec, False, config) as c:
        out = await a.open_stream()
        out.write(b"x")  # the SYN and a byte, so accept_stream returns
        inbound = await c.accept_stream()
        assert await inbound.read(1) == b"x"
        got, _ = await asyncio.gather(_sink(inbound), _send_all(out, size))
        assert got == size, (got, size)


async def noise_only(size: int, args: argparse.Namespace) -> None:
    a_raw, c_raw = pipe_pair(args.datagram, args.pipe_limit)
    a_sec, c_sec = await asyncio.gather(
        secure_outbound(a_raw, Ed25519PrivateKey.generate()),
        secure_inbound(c_raw, Ed25519PrivateKey.generate()),
    )
    got, _ = await asyncio.gather(_sink(c_sec), _send_all(a_sec, size))
    assert got == size


async def raw_only(size: int, args: argparse.Namespace) -> None:
    a_raw, c_raw = pipe_pair(args.datagram, args.pipe_limit)
    got, _ = await asyncio.gather(_sink(c_raw), _send_all(a_raw, size))
    assert got == size


async def splice_only(size: int, args: argparse.Namespace) -> None:
    a_raw, r_in = pipe_pair(args.datagram, args.pipe_limit)
    r_out, c_raw = pipe_pair(args.datagram, args.pipe_limit)
    async with asyncio.TaskGroup() as tg:
        splice = tg.create_task(relay_server.splice(r_in, r_out, data_limit=None, duration=None))
        got, _ = await asyncio.gather(_sink(c_raw), _send_all(a_raw, size))
        c_raw.write_eof()
        await splice
    assert got == size


KINDS = {"raw": raw_only, "splice": splice_only, "noise": noise_only, "relayed": relayed}


def measure(kind: str, args: argparse.Namespace) -> float:
    """CPU ms per MB of one transfer of ``--mb`` MB: the best of
    ``--rounds`` (other processes' load only ever adds to it)."""
    samples = []
    for _ in range(args.rounds):
        start = time.process_time()
        asyncio.run(KINDS[kind](args.mb * MB, args))
        samples.append((time.process_time() - start) * 1000 / args.mb)
    return min(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--datagram", type=int, default=16384,
                        help="largest chunk one pipe read returns (default 16384)")
    parser.add_argument("--pipe-limit", type=int, default=1 << 20,
                        help="bytes a pipe holds before drain() waits (default 1 MiB)")
    parser.add_argument("--kinds", default="raw,splice,noise,relayed")
    parser.add_argument("--window", type=int, default=CIRCUIT.receive_window,
                        help="yamux receive window (default: the circuits' 2 MiB)")
    parser.add_argument("--frame", type=int, default=CIRCUIT.max_frame_size,
                        help="yamux max_frame_size (default: the circuits')")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    out: dict[str, Any] = {"mb": args.mb, "datagram": args.datagram}
    for kind in args.kinds.split(","):
        out[f"{kind}_cpu_ms_per_MB"] = round(measure(kind, args), 3)
        print(f"{kind:8} {out[f'{kind}_cpu_ms_per_MB']:7.2f} CPU ms per MB", file=sys.stderr)
    if args.profile:
        kind = args.kinds.split(",")[-1]
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        asyncio.run(KINDS[kind](args.mb * MB, args))
        profile.disable()
        stats = pstats.Stats(profile, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(args.top)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
