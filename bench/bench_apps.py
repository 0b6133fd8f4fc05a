"""Services, forwards and the proxy against a direct QUIC stream, measured
in the same run.

    .venv/bin/python bench/bench_apps.py --mb 50

Three daemons run in this process (an introducer, ``a`` with the proxy,
``b`` exposing a TCP source and an echo service; ``b`` owns ``bob.ovl``).
The TCP ends (the source server, the echo server and the clients that
read through the forward and the proxy) run in a child process, so the
daemons' process does what a daemon does and nothing else.

throughput
    ``direct``: ``--mb`` MB on one QUIC stream from b to a (b writes, a
    reads and discards, in this process: no TCP at either end).
    ``forward``: the child connects to a forward on a (→ bob.ovl:source)
    and reads ``--mb`` MB that its own source server sends through b's
    exposer.  ``proxy``: the same through a's SOCKS5 port
    (``bob.ovl:<source port>``).  Ratios are against ``direct``; best of
    ``--repeat``.
latency
    One request per connection, as a browser without keep-alive: connect,
    send a byte, read its echo, close; p50 over ``--rounds`` on a warm QUIC
    connection.  ``added_ms_p50`` is the proxy's (or forward's) p50 less a
    direct TCP connection's to the same echo server.  ``*_in_process``:
    the same rounds with the client and the echo server in the daemons'
    process, free of cross-process scheduling on a loaded machine.
cpu
    ``cpu_ms_per_MB_median``: the daemons' process CPU per MB of each
    transfer; ``cpu_ms_per_request``: per echo round (forward, proxy, a
    new QUIC stream).  CPU time moves far less than wall time when other
    work shares the cores, so before/after comparisons use it too.
profile
    ``--profile FILE``: cProfile of the daemons during the forward's
    latency rounds, with the time per request by layer (aioquic, asyncio,
    overlay packages, system calls) on stderr: the budget in docs/apps.md.

Output: one JSON object on stdout; a summary on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import multiprocessing.connection
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

MB = 1_000_000
CHUNK = 256 * 1024


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# -- the child: TCP servers and clients ------------------------------------------------


async def _child_main(conn: multiprocessing.connection.Connection, size: int) -> None:
    async def source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        chunk = bytes(CHUNK)
        left = size
        while left > 0:
            writer.write(chunk[:min(left, CHUNK)])
            left -= min(left, CHUNK)
            await writer.drain()
        writer.close()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    src = await asyncio.start_server(source, "127.0.0.1", 0)
    ech = await asyncio.start_server(echo, "127.0.0.1", 0)
    conn.send((src.sockets[0].getsockname()[1], ech.sockets[0].getsockname()[1]))
    loop = asyncio.get_running_loop()
    while True:
        request = await loop.run_in_executor(None, conn.recv)
        if request is None:
            break
        kind, mode, target, rounds = request
        if kind == "fetch":
            conn.send(await _fetch(mode, target))
        else:
            conn.send([await _echo_round(mode, target) for _ in range(rounds)])
    src.close()
    ech.close()


async def _open(mode: str, target: tuple[str, int, str, int],
                ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port, name, name_port = target
    reader, writer = await asyncio.open_connection(host, port)
    if mode == "proxy":
        raw = name.encode()
        writer.write(b"\x05\x01\x00\x05\x01\x00\x03" + bytes((len(raw),)) + raw
                     + name_port.to_bytes(2, "big"))
        head = await reader.readexactly(12)
        if head[3] != 0:
            raise RuntimeError(f"SOCKS5 reply {head[3]}")
    return reader, writer


async def _fetch(mode: str, target: tuple[str, int, str, int]) -> tuple[int, float]:
    started = time.perf_counter()
    reader, writer = await _open(mode, target)
    got = 0
    while data := await reader.read(1 << 20):
        got += len(data)
    elapsed = time.perf_counter() - started
    writer.close()
    return got, elapsed


async def _echo_round(mode: str, target: tuple[str, int, str, int]) -> float:
    started = time.perf_counter()
    reader, writer = await _open(mode, target)
    writer.write(b"x")
    await reader.readexactly(1)
    elapsed = time.perf_counter() - started
    writer.close()
    await writer.wait_closed()
    return elapsed


def _child(conn: multiprocessing.connection.Connection, size: int) -> None:
    asyncio.run(_child_main(conn, size))


# -- the daemons ----------------------------------------------------------------------------


async def _network(root: Path, stack: AsyncExitStack) -> tuple[Any, Any, Any, Any]:
    from overlay.apps.daemon_ext import AppsExtension
    from overlay.daemon.config import DaemonConfig
    from overlay.daemon.home import Home
    from overlay.daemon.init import init_home
    from overlay.daemon.node import Daemon
    from overlay.daemon.ops_name import naming_extensions
    from overlay.naming.config import NamingConfig
    from overlay.naming.resolver import ResolverConfig
    from overlay.naming.service import NameServiceConfig

    names = NameServiceConfig(naming=NamingConfig(pow_bits=4),
                              resolver=ResolverConfig(quorum=2), flush_delay=0.0)
    nodes: list[tuple[Any, Any]] = []
    for label, proxy in (("i", False), ("a", True), ("b", False)):
        home = Home(root / label)
        boot = (nodes[0][0].full_addrs()[0],) if nodes else ()
        config = DaemonConfig(listen=("/ip4/127.0.0.1/udp/0/quic-v1",), bootstrap=boot)
        key = init_home(home, config).key
        dht, naming = naming_extensions(key, dns=None, names=names)
        apps = AppsExtension({}, ("127.0.0.1", 0) if proxy else None, persist=False)
        daemon = await stack.enter_async_context(
            Daemon(home, config, key, extensions=[dht, naming, apps]))
        if boot:
            assert dht.kad is not None
            await dht.kad.bootstrapped.wait()
        nodes.append((daemon, apps))
    (a, a_apps), (b, _) = nodes[1], nodes[2]
    return a, a_apps, b, naming


async def _call(daemon: Any, op: str, args: dict[str, Any]) -> dict[str, Any]:
    from overlay.daemon.client import ApiClient

    async with await ApiClient.connect(daemon.api_path) as api:
        reply: dict[str, Any] = await api.call(op, args)
        return reply


async def _direct(a: Any, b: Any, size: int) -> float:
    protocol = "/bench/source/1.0.0"
    chunk = bytes(CHUNK)

    async def serve(stream: Any) -> None:
        left = size
        while left > 0:
            stream.write(chunk[:min(left, CHUNK)])
            left -= min(left, CHUNK)
            await stream.drain()
        stream.write_eof()

    b.host.set_stream_handler(protocol, serve)
    try:
        started = time.perf_counter()
        stream = await a.host.new_stream(b.peer_id, [protocol])
        got = 0
        while data := await stream.read(1 << 20):
            got += len(data)
        elapsed = time.perf_counter() - started
        assert got == size, got
        await stream.close()
        return elapsed
    finally:
        b.host.remove_stream_handler(protocol)


async def _direct_echo(a: Any, b: Any, rounds: int) -> list[float]:
    protocol = "/bench/echo/1.0.0"

    async def serve(stream: Any) -> None:
        while data := await stream.read():
            stream.write(data)
            await stream.drain()
        stream.write_eof()

    b.host.set_stream_handler(protocol, serve)
    out = []
    try:
        for _ in range(rounds):
            started = time.perf_counter()
            stream = await a.host.new_stream(b.peer_id, [protocol], lazy=True)
            stream.write(b"x")
            await stream.readexactly(1)
            out.append(time.perf_counter() - started)
            await stream.close()
    finally:
        b.host.remove_stream_handler(protocol)
    return out


async def _in_process_latency(a: Any, a_apps: Any, b: Any, rounds: int,
                              ) -> dict[str, list[float]]:
    """The same echo rounds with the client and an echo server in this
    process: no other process to wake, so a loaded machine's scheduler
    stays out of the figure (what is left is the overlay's own cost)."""
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await _call(b, "expose_add", {"service": "echo-here", "port": port})
        fwd = await _call(a, "forward_add", {"listen": "127.0.0.1:0",
                                             "target": "bob.ovl:echo-here"})
        fhost, fport = fwd["listen"].rsplit(":", 1)
        phost, pport = a_apps.proxy_address
        out: dict[str, list[float]] = {"tcp_direct": [], "forward": [], "proxy": []}
        targets = {"tcp_direct": ("tcp", ("127.0.0.1", port, "", 0)),
                   "forward": ("forward", (fhost, int(fport), "", 0)),
                   "proxy": ("proxy", (phost, pport, "bob.ovl", port))}
        for _ in range(rounds):
            for key, (mode, target) in targets.items():
                out[key].append(await _echo_round(mode, target))
        return out
    finally:
        server.close()


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    size = int(args.mb * MB)
    parent, child_end = multiprocessing.Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_child,
                                                          args=(child_end, size), daemon=True)
    child.start()
    loop = asyncio.get_running_loop()
    src_port, echo_port = await loop.run_in_executor(None, parent.recv)
    root = Path(tempfile.mkdtemp(prefix="ovl-bench-", dir="/tmp"))
    try:
        async with AsyncExitStack() as stack:
            a, a_apps, b, _ = await _network(root, stack)
            await _call(b, "name_register", {"name": "bob.ovl"})
            await _call(b, "expose_add", {"service": "source", "port": src_port})
            await _call(b, "expose_add", {"service": "echo", "port": echo_port})
            fwd = await _call(a, "forward_add", {"listen": "127.0.0.1:0",
                                                 "target": "bob.ovl:source"})
            fwd_echo = await _call(a, "forward_add", {"listen": "127.0.0.1:0",
                                                      "target": "bob.ovl:echo"})
            fhost, fport = fwd["listen"].rsplit(":", 1)
            ehost, eport = fwd_echo["listen"].rsplit(":", 1)
            phost, pport = a_apps.proxy_address

            async def ask(request: Any) -> Any:
                parent.send(request)
                return await loop.run_in_executor(None, parent.recv)

            await _direct(a, b, min(size, MB))  # warm the connection
            best: dict[str, float] = {}
            # The daemons' CPU (this process) per MB and per request: under
            # a loaded machine's scheduler it moves far less than wall time.
            cpu_mb: dict[str, list[float]] = {"direct": [], "forward": [], "proxy": []}
            for run in range(args.repeat):
                cpu = time.process_time()
                got_fwd, t_fwd = await ask(("fetch", "forward", (fhost, int(fport), "", 0), 0))
                cpu_mb["forward"].append((time.process_time() - cpu) * 1000 / (size / MB))
                cpu = time.process_time()
                got_proxy, t_proxy = await ask(("fetch", "proxy",
                                                (phost, pport, "bob.ovl", src_port), 0))
                cpu_mb["proxy"].append((time.process_time() - cpu) * 1000 / (size / MB))
                if (got_fwd, got_proxy) != (size, size):
                    raise RuntimeError(f"short transfer: forward {got_fwd}, proxy {got_proxy}")
                cpu = time.process_time()
                t_direct = await _direct(a, b, size)
                cpu_mb["direct"].append((time.process_time() - cpu) * 1000 / (size / MB))
                times = {"direct": t_direct, "forward": t_fwd, "proxy": t_proxy}
                for key, seconds in times.items():
                    best[key] = min(best.get(key, seconds), seconds)
                log(f"run {run + 1}: " + ", ".join(f"{k} {size / s / MB:.1f} MB/s"
                                                   for k, s in times.items()))
            cpu_req: dict[str, float] = {}

            async def rounds(key: str, request: Any) -> list[float]:
                cpu = time.process_time()
                samples: list[float] = await ask(request)
                cpu_req[key] = (time.process_time() - cpu) * 1000 / args.rounds
                return samples

            lat_tcp = await ask(("echo", "tcp", ("127.0.0.1", echo_port, "", 0), args.rounds))
            profiler = cProfile.Profile() if args.profile else None
            if profiler is not None:
                profiler.enable()
            lat_fwd = await rounds("forward", ("echo", "forward", (ehost, int(eport), "", 0),
                                               args.rounds))
            if profiler is not None:
                profiler.disable()
                profiler.dump_stats(args.profile)
                _print_profile(args.profile, args.rounds)
            lat_proxy = await rounds("proxy", ("echo", "proxy",
                                               (phost, pport, "bob.ovl", echo_port),
                                               args.rounds))
            lat_socks = await ask(("echo", "proxy", (phost, pport, "127.0.0.1", echo_port),
                                   args.rounds))
            cpu = time.process_time()
            lat_quic = await _direct_echo(a, b, args.rounds)
            cpu_req["quic_stream"] = (time.process_time() - cpu) * 1000 / args.rounds
            in_process = await _in_process_latency(a, a_apps, b, args.rounds)
    finally:
        parent.send(None)
        child.join(10)
        shutil.rmtree(root, ignore_errors=True)

    def p50(samples: list[float]) -> float:
        return round(statistics.median(samples) * 1000, 3)

    rates = {k: round(size / s / MB, 2) for k, s in best.items()}
    result = {
        "mb": args.mb,
        "throughput_MBps": rates,
        "ratio_forward_vs_direct": round(rates["forward"] / rates["direct"], 3),
        "ratio_proxy_vs_direct": round(rates["proxy"] / rates["direct"], 3),
        "latency_ms_p50": {"tcp_direct": p50(lat_tcp), "quic_stream": p50(lat_quic),
                           "forward": p50(lat_fwd), "proxy": p50(lat_proxy),
                           "proxy_to_loopback": p50(lat_socks)},
        "added_ms_p50": {"forward": round(p50(lat_fwd) - p50(lat_tcp), 3),
                         "proxy": round(p50(lat_proxy) - p50(lat_tcp), 3)},
        "cpu_ms_per_MB_median": {k: round(statistics.median(v), 2) for k, v in cpu_mb.items()},
        "cpu_ms_per_request": {k: round(v, 3) for k, v in cpu_req.items()},
        "latency_in_process_ms_p50": {k: p50(v) for k, v in in_process.items()},
        "added_in_process_ms_p50": {
            k: round(p50(in_process[k]) - p50(in_process["tcp_direct"]), 3)
            for k in ("forward", "proxy")},
        "rounds": args.rounds,
    }
    log(json.dumps(result, indent=2))
    return result


def _print_profile(path: str, rounds: int) -> None:
    """The daemons' profiled time per forward request, by layer."""
    groups: dict[str, float] = {}
    stats = pstats.Stats(path)
    for (filename, _, func), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if "aioquic" in filename:
            layer = "aioquic"
        elif "/asyncio/" in filename or filename.endswith("selectors.py"):
            layer = "asyncio (loop, tasks, streams)"
        elif "/overlay/" in filename:
            layer = "overlay/" + filename.split("/overlay/")[1].split("/")[0]
        elif filename == "~" and ("of '_socket.socket'" in func or "select" in func):
            layer = "system calls: " + func.split("'")[1]
        else:
            layer = "other"
        groups[layer] = groups.get(layer, 0.0) + tottime
    total = sum(groups.values())
    log(f"profile of the forward rounds ({path}), profiled ms per request "
        f"(cProfile inflates Python code more than system calls):")
    for layer, seconds in sorted(groups.items(), key=lambda kv: -kv[1])[:16]:
        log(f"  {seconds * 1000 / rounds:7.3f} ms  {100 * seconds / total:5.1f}%  {layer}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50.0, help="MB per transfer (default 50)")
    parser.add_argument("--repeat", type=int, default=3, help="throughput runs, best kept")
    parser.add_argument("--rounds", type=int, default=200, help="latency rounds per path")
    parser.add_argument("--profile", metavar="FILE",
                        help="cProfile the daemons during the forward's latency rounds, "
                             "save to FILE and print the time per request by layer "
                             "(the latency figures of that run are not comparable)")
    args = parser.parse_args()
    from overlay.daemon.run import event_loop_factory

    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        print(json.dumps(runner.run(_main(args))), flush=True)


if __name__ == "__main__":
    main()
