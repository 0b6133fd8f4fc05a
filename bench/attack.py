#!/usr/bin/env python3
"""Hostile load from one machine against one daemon, on loopback.

    .venv/bin/python bench/attack.py            # the full attacks
    .venv/bin/python bench/attack.py --quick    # the small subset the tests run

The daemon runs in a child process (so its peak RSS is its own) with the
lab's settings: loopback peers count for the routing table's IP-prefix
limits, each loopback address as a group of its own.  For each attack the
same legitimate requests are timed without it (baseline) and while it
runs, from a loopback address other than the attacker's:

- ``kad_streams``: one peer (127.0.66.1) opens 64 kad streams and sends
  nothing; legitimate: FIND_NODE from a peer at 127.0.77.1.
- ``identities``: N identities from one address (127.0.88.1), each serving
  kad and claiming another 127/8 address in identify; legitimate:
  FIND_NODE, and how many fakes the daemon's table and answers hold.
- ``dns``: random ``.ovl`` names over UDP from 127.0.66.x at a fixed rate,
  plus 64 silent TCP clients; legitimate: queries for a registered name.
- ``api``: 256 idle local API connections; legitimate: a fresh connection
  and one ``identity`` call, as the CLI does.
- ``quic_initials``: QUIC client Initials that never complete, from 32
  loopback addresses (127.0.55.x, as a spoofing flooder would) at a fixed
  rate, in a child process; legitimate: a fresh QUIC connection (handshake
  and close) from 127.0.77.1.  The flooder counts the Retry packets and
  server Initials it gets back.
- ``quic_handshakes``: N fresh identities from one address (127.0.44.1),
  each completing a QUIC handshake and holding its connection; legitimate:
  a fresh QUIC connection.  Counts held, refused (CONNECTION_REFUSED) and
  otherwise failed handshakes.

- ``providers``: 70 identities from two addresses (127.0.33.1-2), in a
  child process, send ADD_PROVIDER as fast as they can (1025 each, 71,750
  in all, within the time bound), each claiming a loopback address it does
  not listen on; legitimate: the daemon's own ``dht provide``.  Counts
  the claimed addresses the daemon hands out in GET_PROVIDERS answers.
- ``idle_streams``: 200 connections from 200 identities on four addresses
  (127.0.22.1-4), in a child process, each opening 256 streams that send
  the multistream header and then nothing; legitimate: a fresh QUIC
  connection and a FIND_NODE.  Counts the streams the daemon reset, and
  its RSS before, during and after (polled for up to a minute).

``--phases`` picks some of them (comma-separated names).

Every attack is bounded in count and time.  One JSON object is printed
(per attack: success rate and median/p95 latency with and without it, the
goals met, the daemon's peak RSS), progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dnslib import QTYPE, RCODE, DNSRecord  # noqa: E402
from multiaddr import Multiaddr  # noqa: E402

from overlay.daemon.client import ApiClient  # noqa: E402
from overlay.errors import OverlayError  # noqa: E402
from overlay.host import Host, HostConfig, NegotiatedStream  # noqa: E402
from overlay.identity import Ed25519PrivateKey, PeerId  # noqa: E402
from overlay.kad.keyspace import Contact  # noqa: E402
from overlay.kad.messages import KadMessage, MessageType  # noqa: E402
from overlay.kad.service import KadService  # noqa: E402
from overlay.kad.records import default_registry  # noqa: E402
from overlay.kad.service_config import KadServiceConfig  # noqa: E402
from overlay.naming.config import NamingConfig  # noqa: E402
from overlay.naming.kad_client import register_name_namespace  # noqa: E402
from overlay.transport import QuicEndpoint, TransportConfig  # noqa: E402

TARGET_IP = "127.0.0.1"
LEGIT_IP = "127.0.77.1"
KAD_ATTACKER_IP = "127.0.66.1"
FAKES_IP = "127.0.88.1"
DNS_ATTACKER_PREFIX = "127.0.66."
TCP_ATTACKER_IP = "127.0.66.200"
QUIC_FLOOD_PREFIX = "127.0.55."
QUIC_FLOOD_SOURCES = 32
HANDSHAKE_ATTACKER_IP = "127.0.44.1"
PROVIDER_ATTACKER_IPS = ("127.0.33.1", "127.0.33.2")
CLAIMED_PROVIDER_PREFIX = "127.0.34."  # addresses nobody listens on
STREAM_ATTACKER_IPS = ("127.0.22.1", "127.0.22.2", "127.0.22.3", "127.0.22.4")
NAME = "bench-attack.ovl"

HOST_CONFIG = HostConfig(transport=TransportConfig(handshake_timeout=3.0, idle_timeout=30.0,
                                                   keepalive_interval=5.0),
                         dial_timeout=3.0, negotiate_timeout=5.0)
KAD_CONFIG = KadServiceConfig(request_timeout=3.0, lookup_timeout=10.0)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# -- the daemon (child process) ------------------------------------------------


def serve(home: Path) -> int:
    """Run the daemon with the lab's routing settings; prints its ready JSON."""
    from dataclasses import replace

    from overlay.daemon.config import DaemonConfig
    from overlay.daemon.home import Home
    from overlay.daemon.init import init_home, load_identity
    from overlay.daemon.node import Daemon
    from overlay.daemon.ops_name import naming_extensions
    from overlay.daemon.ops_stats import StatsExtension
    from overlay.kad.routing import RoutingConfig

    async def main() -> int:
        root = Home(home)
        config = DaemonConfig(listen=(f"/ip4/{TARGET_IP}/udp/0/quic-v1",), mdns=False,
                              autonat="off")
        key = init_home(root, config).key if not root.key_file.exists() else load_identity(root)
        kad = replace(KadServiceConfig(), routing=RoutingConfig(exempt_local=False))
        dht, names = naming_extensions(key, dns=(TARGET_IP, 0), kad=kad, dht_state_file=None)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(sys.stdin.fileno(), stop.set)  # the driver closes stdin to stop us
        async with Daemon(root, config, key, extensions=[dht, names, StatsExtension()],
                          stop=stop) as daemon:
            print(json.dumps({"peer_id": str(daemon.peer_id), "addrs": daemon.full_addrs(),
                              "api": str(daemon.api_path), "dns": list(names.dns_address or ())}),
                  flush=True)
            await stop.wait()
        loop.remove_reader(sys.stdin.fileno())
        return 0

    return asyncio.run(main())


@dataclass
class Target:
    proc: subprocess.Popen[bytes]
    peer_id: PeerId
    addr: str
    api: Path
    dns: tuple[str, int]

    def cpu_seconds(self) -> float:
        fields = open(f"/proc/{self.proc.pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_kib(self) -> int:
        return self._status("VmHWM:")

    def rss_kib(self) -> int:
        return self._status("VmRSS:")

    def _status(self, field: str) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1])
        return 0


@asynccontextmanager
async def target_daemon(home: Path) -> AsyncIterator[Target]:
    # The allocator `overlay daemon` runs under (overlay/daemon/memory.py).
    env = dict(os.environ)
    if not env.get("PYTHONMALLOC") and env.get("OVERLAY_ALLOCATOR") != "pymalloc":
        env["PYTHONMALLOC"] = "malloc"
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(home)], cwd=ROOT,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 60)
        ready = json.loads(line)
        yield Target(proc, PeerId.from_string(ready["peer_id"]), ready["addrs"][0],
                     Path(ready["api"]), (ready["dns"][0], int(ready["dns"][1])))
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- measuring -------------------------------------------------------------------


@dataclass
class Sample:
    ok: int
    total: int
    latencies: list[float]

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies) or [float("nan")]
        return {"success": round(self.ok / self.total, 4) if self.total else None,
                "requests": self.total,
                "median_ms": round(statistics.median(lat) * 1000, 2),
                "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))] * 1000, 2)}


async def measure(request: Callable[[], Awaitable[bool]], count: int, seconds: float) -> Sample:
    """``count`` legitimate requests one after another, spread over
    ``seconds`` (so they meet the attack throughout)."""
    ok, latencies, total = 0, [], 0
    begin = time.monotonic()
    deadline = begin + 2 * seconds
    while total < count and time.monotonic() < deadline:
        # Pacing the legitimate load, not synchronisation.
        await asyncio.sleep(max(0.0, begin + total * seconds / count - time.monotonic()))
        started = time.monotonic()
        try:
            async with asyncio.timeout(3.0):
                good = await request()
        except (OverlayError, OSError, TimeoutError):
            good = False
        total += 1
        if good:
            ok += 1
            latencies.append(time.monotonic() - started)
    return Sample(ok, total, latencies)


def verdict(base: Sample, attacked: Sample) -> dict[str, Any]:
    out: dict[str, Any] = {"baseline": base.as_dict(), "attacked": attacked.as_dict()}
    ratio = None
    if base.latencies and attacked.latencies:
        ratio = statistics.median(attacked.latencies) / statistics.median(base.latencies)
    out["median_ratio"] = round(ratio, 2) if ratio is not None else None
    rate = attacked.ok / attacked.total if attacked.total else 0.0
    out["goal_success"] = rate >= 0.99
    out["goal_latency"] = ratio is not None and ratio <= 3.0
    return out


# -- legitimate clients ------------------------------------------------------------


async def kad_node(stack: AsyncExitStack, ip: str) -> KadService:
    host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HOST_CONFIG))
    await host.listen([f"/ip4/{ip}/udp/0/quic-v1"])
    # The name namespace too: the legitimate peer stores the bench's name.
    registry = default_registry()
    register_name_namespace(registry, NamingConfig())
    return await stack.enter_async_context(KadService(host, KAD_CONFIG, registry=registry))


def find_node(kad: KadService, target: Target, seen: set[PeerId] | None = None
              ) -> Callable[[], Awaitable[bool]]:
    contact = Contact.of(target.peer_id)

    async def request() -> bool:
        key = os.urandom(32)
        answer = await kad.request(contact, KadMessage(MessageType.FIND_NODE, b"\x12\x20" + key))
        if seen is not None:
            seen.update(info.peer_id for info in answer.closer_peers)
        return True

    return request


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.reply.done():
            self.reply.set_result(data)


def dns_query(target: Target, name: str) -> Callable[[], Awaitable[bool]]:
    """A stub resolver's query: sent again after a second without answer
    (glibc, dig and systemd-resolved all retry), at most twice."""

    async def request() -> bool:
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(_Reply, local_addr=(LEGIT_IP, 0))
        try:
            query = DNSRecord.question(name, "A").pack()
            for attempt in range(2):
                transport.sendto(query, target.dns)
                try:
                    async with asyncio.timeout(1.0):
                        reply = DNSRecord.parse(await asyncio.shield(protocol.reply))
                    break
                except TimeoutError:
                    if attempt == 1:
                        raise
        finally:
            transport.close()
        return bool(reply.header.rcode == RCODE.NOERROR and reply.rr
                    and reply.rr[0].rtype == QTYPE.A)

    return request


def dht_provide(target: Target) -> Callable[[], Awaitable[bool]]:
    """The daemon's own ``dht provide`` of a fresh key, as the CLI does it."""

    async def request() -> bool:
        async with await ApiClient.connect(target.api) as client:
            answer = await client.call("dht_provide", {"key": os.urandom(8).hex()})
        return bool(answer["ok"])

    return request


def both(first: Callable[[], Awaitable[bool]], second: Callable[[], Awaitable[bool]]
         ) -> Callable[[], Awaitable[bool]]:
    async def request() -> bool:
        return await first() and await second()

    return request


def api_call(target: Target) -> Callable[[], Awaitable[bool]]:
    async def request() -> bool:
        async with await ApiClient.connect(target.api) as client:
            return bool((await client.call("identity"))["ok"])

    return request


async def daemon_snapshot(target: Target) -> dict[str, Any]:
    """What the daemon still holds after an attack: connections, streams,
    memory trims (the ``stats`` op)."""
    async with await ApiClient.connect(target.api) as client:
        reply = await client.call("stats")
    return {key: reply.get(key) for key in ("host", "memory", "dns", "limits")}


async def daemon_snapshot(target: Target) -> dict[str, Any]:
    """What the daemon still holds after an attack: connections, streams,
    memory trims (the ``stats`` op)."""
    async with await ApiClient.connect(target.api) as client:
        reply = await client.call("stats")
    return {key: reply.get(key) for key in ("host", "memory", "dns", "limits")}


# -- attacks -------------------------------------------------------------------------


async def attack_kad_streams(stack: AsyncExitStack, target: Target, streams: int) -> dict[str, Any]:
    host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HOST_CONFIG))
    await host.listen([f"/ip4/{KAD_ATTACKER_IP}/udp/0/quic-v1"])
    await host.connect(target.addr)
    held: list[NegotiatedStream] = []
    for _ in range(streams):
        try:
            async with asyncio.timeout(3.0):
                held.append(await host.new_stream(target.peer_id, [KAD_CONFIG.protocol_id]))
        except (OverlayError, TimeoutError):
            pass
    return {"streams_opened": len(held), "_held": held}


async def attack_identities(stack: AsyncExitStack, target: Target, count: int,
                            seconds: float) -> dict[str, Any]:
    fakes: list[KadService] = []
    deadline = time.monotonic() + seconds
    for i in range(count):
        if time.monotonic() > deadline:
            break
        kad = await kad_node(stack, FAKES_IP)
        port = kad.host.listen_addrs()[0].value_for_protocol(0x0111)
        # A different (loopback) address claimed by each: never outside 127/8.
        cast(Host, kad.host).add_advertised_addrs([f"/ip4/127.{1 + i // 250}.{1 + i % 250}.1/udp/{port}/quic-v1"])
        try:
            async with asyncio.timeout(3.0):
                await kad.host.connect(target.addr)
        except (OverlayError, OSError, TimeoutError):
            continue
        fakes.append(kad)
    return {"identities": len(fakes), "_fakes": {k.host.peer_id for k in fakes}}


def quic_dial(endpoint: QuicEndpoint, target: Target) -> Callable[[], Awaitable[bool]]:
    """A new QUIC connection to the target, authenticated, then closed."""
    address = quic_address(target)

    async def request() -> bool:
        conn = await endpoint.dial(address, target.peer_id)
        conn.close()
        return True

    return request


def quic_address(target: Target) -> tuple[str, int]:
    parts = target.addr.split("/")
    return parts[2], int(parts[4])


async def attack_handshakes(stack: AsyncExitStack, target: Target, count: int,
                            seconds: float) -> dict[str, Any]:
    """``count`` fresh identities from one address, each completing a QUIC
    handshake and holding the connection, 16 at a time."""
    address = quic_address(target)
    held: list[Any] = []
    failures = {"refused": 0, "failed": 0}
    deadline = time.monotonic() + seconds
    config = TransportConfig(handshake_timeout=3.0, idle_timeout=30.0, keepalive_interval=5.0)

    async def one() -> None:
        endpoint = await stack.enter_async_context(
            await QuicEndpoint.create(HANDSHAKE_ATTACKER_IP, 0, Ed25519PrivateKey.generate(),
                                      config))
        try:
            held.append(await endpoint.dial(address, target.peer_id))
        except OverlayError as exc:
            failures["refused" if "code 0x2)" in str(exc) else "failed"] += 1

    started = 0
    while started < count and time.monotonic() < deadline:
        batch = min(16, count - started)
        async with asyncio.TaskGroup() as group:
            for _ in range(batch):
                group.create_task(one())
        started += batch
    return {"handshakes_tried": started, "handshakes_held": len(held), **failures,
            "_held": held}


def quic_flood(host: str, port: int, rate: int, seconds: float) -> int:
    """Child process: QUIC client Initials of new connections, never
    completed, from ``QUIC_FLOOD_SOURCES`` loopback addresses at ``rate`` a
    second for ``seconds``; prints how many, and what came back."""
    from aioquic.buffer import Buffer  # type: ignore[attr-defined]  # re-exported from _buffer
    from aioquic.quic.configuration import QuicConfiguration
    from aioquic.quic.connection import QuicConnection
    from aioquic.quic.packet import QuicPacketType, pull_quic_header

    target = (host, port)
    # Building an Initial costs a TLS ClientHello (~2 ms): a pool, sent in
    # turn.  A repeat whose connection expired makes a new one; one that
    # got a Retry costs the server a Retry again, as a new one would.
    pool = []
    for _ in range(max(1, min(1000, int(rate * seconds)))):
        client = QuicConnection(configuration=QuicConfiguration(alpn_protocols=["libp2p"],
                                                                 is_client=True))
        client.connect(target, now=0.0)
        pool.append(client.datagrams_to_send(now=0.0)[0][0])
    socks = []
    for i in range(QUIC_FLOOD_SOURCES):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"{QUIC_FLOOD_PREFIX}{i + 1}", 0))
        sock.setblocking(False)
        socks.append(sock)
    answers = {"retry": 0, "initial": 0, "other": 0}
    count = 0
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    print("flooding", flush=True)
    started = time.monotonic()
    try:
        while not stopped and time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while count < due:
                try:
                    socks[count % len(socks)].sendto(pool[count % len(pool)], target)
                except BlockingIOError:
                    pass
                count += 1
            for sock in socks:  # the sockets stay open and read: no ICMP
                while True:
                    try:
                        data = sock.recv(65535)
                    except BlockingIOError:
                        break
                    try:
                        kind = pull_quic_header(Buffer(data=data), host_cid_length=8).packet_type
                    except ValueError:
                        kind = None
                    key = {QuicPacketType.RETRY: "retry",
                           QuicPacketType.INITIAL: "initial"}.get(kind, "other")  # type: ignore[arg-type]
                    answers[key] += 1
            time.sleep(0.005)  # pacing the flood, not synchronisation
    finally:
        for sock in socks:
            sock.close()
    print(json.dumps({"sent": count, **answers}), flush=True)
    return 0


def swarm(kind: str, peer: str, addr: str, count: int, per: int, seconds: float,
          sources: int) -> int:
    """Child process: ``count`` identities spread over the attack's loopback
    addresses, each connected to the target.  ``streams``: each opens
    ``per`` streams that send the multistream header and then nothing, and
    holds them.  ``providers``: each sends ``per`` ADD_PROVIDER, 200 a
    stream.  Prints ``ready`` when the attack is in place (streams: all
    opened; providers: flooding begins), then, once told to stop
    (SIGTERM), one JSON line of counts."""
    return asyncio.run(_swarm(kind, PeerId.from_string(peer), addr, count, per, seconds,
                              sources))


async def _swarm(kind: str, peer: PeerId, addr: str, count: int, per: int,
                 seconds: float, sources: int) -> int:
    from overlay.negotiate import encode_message as encode_ms
    from overlay.kad.messages import PeerInfo, encode_message
    from overlay.wire.varint import frame

    ips = (STREAM_ATTACKER_IPS if kind == "streams" else PROVIDER_ATTACKER_IPS)[:sources]
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    counts = {"identities": 0, "connect_failed": 0, "streams_opened": 0, "streams_reset": 0,
              "streams_ended": 0, "open_failed": 0, "messages_sent": 0}
    sample_keys: list[str] = []
    deadline = time.monotonic() + seconds
    async with AsyncExitStack() as stack:
        hosts: list[Host] = []

        async def make(i: int) -> None:
            host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HOST_CONFIG))
            await host.listen([f"/ip4/{ips[i % len(ips)]}/udp/0/quic-v1"])
            try:
                async with asyncio.timeout(5.0):
                    await host.connect(addr)
            except (OverlayError, OSError, TimeoutError):
                counts["connect_failed"] += 1
                return
            hosts.append(host)

        for first in range(0, count, 16):
            if time.monotonic() > deadline:
                break
            async with asyncio.TaskGroup() as group:
                for i in range(first, min(count, first + 16)):
                    group.create_task(make(i))
        counts["identities"] = len(hosts)

        async def watch(stream: Any) -> None:
            try:
                while await stream.read():
                    pass
                counts["streams_ended"] += 1
            except OverlayError:
                counts["streams_reset"] += 1

        async with asyncio.TaskGroup() as watchers:
            if kind == "streams":
                header = encode_ms("/multistream/1.0.0")
                held: list[Any] = []

                async def hold(host: Host) -> None:
                    conn = host.best_connection(peer)
                    if conn is None:
                        return
                    for _ in range(per):
                        try:
                            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                                stream = await conn.open_stream()
                            stream.write(header)
                        except (OverlayError, TimeoutError):
                            counts["open_failed"] += 1
                            return
                        held.append(stream)
                        counts["streams_opened"] += 1
                        watchers.create_task(watch(stream))

                async with asyncio.TaskGroup() as group:
                    for host in hosts:
                        group.create_task(hold(host))
                print("ready", flush=True)
                await stopped.wait()
                final = dict(counts)  # before our own resets count
                for stream in held:
                    stream.reset()
            else:
                print("ready", flush=True)

                async def announce(n: int, host: Host) -> None:
                    claimed = Multiaddr(f"/ip4/{CLAIMED_PROVIDER_PREFIX}{1 + n % 250}"
                                        f"/udp/4001/quic-v1").to_bytes()
                    me = PeerInfo(host.peer_id, (claimed,))
                    left = per
                    while left > 0 and not stopped.is_set() and time.monotonic() < deadline:
                        batch = min(200, left)
                        keys = [b"\x12\x20" + os.urandom(32) for _ in range(batch)]
                        if len(sample_keys) < 20:
                            sample_keys.append(keys[0].hex())
                        payload = b"".join(
                            frame(encode_message(KadMessage(MessageType.ADD_PROVIDER, key,
                                                            provider_peers=(me,))))
                            for key in keys)
                        try:
                            async with asyncio.timeout(10.0):
                                stream = await host.new_stream(peer, [KAD_CONFIG.protocol_id])
                                counts["streams_opened"] += 1
                                stream.write(payload)
                                await stream.drain()
                                await stream.close()
                                counts["messages_sent"] += batch
                                await watch(stream)
                        except (OverlayError, TimeoutError):
                            counts["open_failed"] += 1
                        left -= batch

                async with asyncio.TaskGroup() as group:
                    for n, host in enumerate(hosts):
                        group.create_task(announce(n, host))
                await stopped.wait()
                final = dict(counts)
    print(json.dumps({**final, "sample_keys": sample_keys}), flush=True)
    return 0


def flood(host: str, port: int, rate: int, seconds: float) -> int:
    """Child process: random ``.ovl`` names over UDP from four loopback
    addresses at ``rate`` a second for ``seconds``; prints how many."""
    rng = random.Random(7)
    socks = []
    for i in range(4):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((f"{DNS_ATTACKER_PREFIX}{i + 1}", 0))
        sock.setblocking(False)
        socks.append(sock)
    count = 0
    stopped: list[int] = []
    signal.signal(signal.SIGTERM, lambda *_: stopped.append(1))
    print("flooding", flush=True)
    started = time.monotonic()
    try:
        while not stopped and time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while count < due:
                name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(12)) + ".ovl"
                try:
                    socks[count % 4].sendto(DNSRecord.question(name).pack(), (host, port))
                except BlockingIOError:
                    pass
                count += 1
            time.sleep(0.005)  # pacing the flood, not synchronisation
    finally:
        for sock in socks:
            sock.close()
    print(count, flush=True)
    return 0


async def run_attack(name: str, target: Target, legit: Callable[[], Awaitable[bool]], count: int,
                     seconds: float, start: Callable[[], Awaitable[dict[str, Any]]],
                     stop: Callable[[dict[str, Any]], Awaitable[None]], settle: float = 0.0
                     ) -> dict[str, Any]:
    log(f"{name}: baseline")
    base = await measure(legit, count, seconds)
    log(f"{name}: attacking")
    rss_before = target.rss_kib()
    info = await start()
    cpu, began = target.cpu_seconds(), time.monotonic()
    try:
        attacked = await measure(legit, count, seconds)
    finally:
        share = (target.cpu_seconds() - cpu) / (time.monotonic() - began)
        rss_during = target.rss_kib()
        await stop(info)
    result = verdict(base, attacked)
    result["daemon_cpu_share"] = round(share, 2)
    result["daemon_peak_rss_kib"] = target.peak_rss_kib()
    # Memory returned: polled (a measurement, not synchronisation) until it
    # is back within 32 MiB of where it was, for ``settle`` seconds at most.
    stopped = time.monotonic()
    while target.rss_kib() > rss_before + 32 * 1024 and time.monotonic() - stopped < settle:
        await asyncio.sleep(1.0)
    rss_after = target.rss_kib()
    result["rss_kib"] = {"before": rss_before, "during": rss_during, "after": rss_after,
                         "returned_in_s": round(time.monotonic() - stopped, 1)
                         if rss_after <= rss_before + 32 * 1024 else None}
    result["goal_rss"] = result["daemon_peak_rss_kib"] < 300 * 1024 and (
        result["rss_kib"]["returned_in_s"] is not None or settle == 0)
    result["daemon_after"] = await daemon_snapshot(target)
    result["daemon_after"] = await daemon_snapshot(target)
    result.update({k: v for k, v in info.items() if not k.startswith("_")})
    log(f"{name}: {json.dumps(result)}")
    return result


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ovl-atk-", dir="/tmp") as tmp:
        async with target_daemon(Path(tmp) / "home") as target, AsyncExitStack() as stack:
            try:
                await _phases(args, target, stack, results)
            except BaseException as exc:
                # Said here: unwinding the attackers' services wraps it deeply.
                log(f"bench failed: {exc!r}")
                raise
            results["daemon_peak_rss_kib"] = target.peak_rss_kib()
    return results


async def _phases(args: argparse.Namespace, target: Target, stack: AsyncExitStack,
                  results: dict[str, Any]) -> None:
    if True:
        if True:
            legit = await kad_node(stack, LEGIT_IP)
            await legit.bootstrap([target.addr])
            seen: set[PeerId] = set()
            n, secs = args.requests, args.seconds

            def want(phase: str) -> bool:
                return args.phases is None or phase in args.phases

            # 1. idle kad streams from one peer
            async def stop_streams(info: dict[str, Any]) -> None:
                for stream in info["_held"]:
                    stream.reset()

            if want("kad_streams"):
                results["kad_streams"] = await run_attack(
                    "kad_streams", target, find_node(legit, target), n, secs,
                    lambda: attack_kad_streams(stack, target, 64), stop_streams)
                results["kad_streams"]["target_in_legit_table"] = target.peer_id in legit.table

            # 2. identities from one address claiming other addresses
            fakes: set[PeerId] = set()

            fake_stack = await stack.enter_async_context(AsyncExitStack())

            async def start_fakes() -> dict[str, Any]:
                info = await attack_identities(fake_stack, target, args.identities, args.seconds * 4)
                fakes.update(info["_fakes"])
                return info

            async def no_stop(_: dict[str, Any]) -> None:
                return None

            if want("identities"):
                results["identities"] = await run_attack(
                    "identities", target, find_node(legit, target, seen), n, secs, start_fakes,
                    no_stop)
                async with await ApiClient.connect(target.api) as client:
                    table = await client.call("dht_table")
                members = set(table.get("peers", []))
                results["identities"]["fakes_in_table"] = len({str(f) for f in fakes} & members)
                results["identities"]["table_size"] = table.get("size")
                results["identities"]["fakes_in_answers"] = len(fakes & seen)
            await fake_stack.aclose()  # the fakes' load must not blur the next figures

            # 3. DNS flood + silent TCP clients
            async with await ApiClient.connect(target.api) as client:
                await client.call("name_register", {"name": NAME, "ips": ["192.0.2.1"]})
            silent: list[asyncio.StreamWriter] = []
            sent: list[int] = []

            async def start_dns() -> dict[str, Any]:
                for _ in range(64):
                    try:
                        _, writer = await asyncio.open_connection(
                            *target.dns, local_addr=(TCP_ATTACKER_IP, 0))
                        silent.append(writer)
                    except OSError:
                        break
                # Its own process: the flood must not slow the measuring loop.
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--flood", target.dns[0], str(target.dns[1]),
                    str(args.dns_rate), str(secs * 3), stdout=asyncio.subprocess.PIPE)
                assert proc.stdout is not None
                await asyncio.wait_for(proc.stdout.readline(), 30)  # "flooding"
                return {"_flood": proc, "tcp_silent": len(silent)}

            async def stop_dns(info: dict[str, Any]) -> None:
                proc = info["_flood"]
                proc.terminate()
                out, _ = await proc.communicate()
                sent.append(int(out.strip() or 0))
                for writer in silent:
                    writer.close()

            if want("dns"):
                results["dns"] = await run_attack("dns", target, dns_query(target, NAME), n, secs,
                                                  start_dns, stop_dns)
                results["dns"]["udp_queries_sent"] = sent[0] if sent else None

            # 4. idle API connections
            idle: list[asyncio.StreamWriter] = []

            async def start_api() -> dict[str, Any]:
                for _ in range(256):
                    _, writer = await asyncio.open_unix_connection(str(target.api))
                    idle.append(writer)
                return {"idle_connections": len(idle)}

            async def stop_api(_: dict[str, Any]) -> None:
                for writer in idle:
                    writer.close()

            if want("api"):
                results["api"] = await run_attack("api", target, api_call(target), n, secs,
                                                  start_api, stop_api)

            # 5. QUIC Initials that never complete, from many addresses
            dialer = await stack.enter_async_context(
                await QuicEndpoint.create(LEGIT_IP, 0, Ed25519PrivateKey.generate(),
                                          HOST_CONFIG.transport))
            answers: list[dict[str, int]] = []

            async def start_initials() -> dict[str, Any]:
                host, port = quic_address(target)
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--quic-flood", host, str(port),
                    str(args.quic_rate), str(secs * 3), stdout=asyncio.subprocess.PIPE)
                assert proc.stdout is not None
                await asyncio.wait_for(proc.stdout.readline(), 60)  # "flooding"
                return {"_flood": proc}

            async def stop_initials(info: dict[str, Any]) -> None:
                proc = info["_flood"]
                proc.terminate()
                out, _ = await proc.communicate()
                lines = out.decode().strip().splitlines()
                if lines:
                    answers.append(json.loads(lines[-1]))

            if want("quic_initials"):
                results["quic_initials"] = await run_attack(
                    "quic_initials", target, quic_dial(dialer, target), n, secs,
                    start_initials, stop_initials)
                results["quic_initials"]["flood"] = answers[0] if answers else None

            # 6. complete handshakes from fresh identities on one address
            hs_stack = await stack.enter_async_context(AsyncExitStack())

            async def start_handshakes() -> dict[str, Any]:
                return await attack_handshakes(hs_stack, target, args.handshakes, secs * 4)

            async def stop_handshakes(_: dict[str, Any]) -> None:
                await hs_stack.aclose()

            if want("quic_handshakes"):
                results["quic_handshakes"] = await run_attack(
                    "quic_handshakes", target, quic_dial(dialer, target), n, secs,
                    start_handshakes, stop_handshakes)

            # 7. ADD_PROVIDER flood from many identities on two addresses
            async def start_swarm(kind: str, count: int, per: int, sources: int
                                  ) -> dict[str, Any]:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--swarm", kind, str(target.peer_id), target.addr,
                    str(count), str(per), str(secs * 6), str(sources),
                    stdout=asyncio.subprocess.PIPE)
                assert proc.stdout is not None
                await asyncio.wait_for(proc.stdout.readline(), 120)  # "ready"
                return {"_swarm": proc}

            swarm_out: list[dict[str, Any]] = []

            async def stop_swarm(info: dict[str, Any]) -> None:
                proc = info["_swarm"]
                proc.terminate()
                out, _ = await proc.communicate()
                lines = out.decode().strip().splitlines()
                swarm_out.append(json.loads(lines[-1]) if lines else {})

            if want("providers"):
                swarm_out.clear()
                results["providers"] = await run_attack(
                    "providers", target, dht_provide(target), min(n, 60), secs,
                    lambda: start_swarm("providers", args.provider_identities,
                                        args.provider_messages // args.provider_identities,
                                        len(PROVIDER_ATTACKER_IPS)),
                    stop_swarm, settle=args.settle)
                counts = swarm_out[0] if swarm_out else {}
                keys = [bytes.fromhex(k) for k in counts.pop("sample_keys", [])]
                results["providers"].update(counts)
                claimed = stored = 0
                for key in keys:
                    answer = await legit.request(Contact.of(target.peer_id),
                                                 KadMessage(MessageType.GET_PROVIDERS, key))
                    for info in answer.provider_peers:
                        stored += 1
                        claimed += sum(1 for a in info.addrs if CLAIMED_PROVIDER_PREFIX
                                       in str(Multiaddr(a)))
                results["providers"]["sampled_keys_stored"] = stored
                results["providers"]["claimed_addrs_handed_out"] = claimed
                results["providers"]["own_provide_after"] = await dht_provide(target)()

            # 8. many connections, each holding many idle streams
            if want("idle_streams"):
                swarm_out.clear()
                results["idle_streams"] = await run_attack(
                    "idle_streams", target, both(quic_dial(dialer, target),
                                                 find_node(legit, target)), n, secs,
                    lambda: start_swarm("streams", args.stream_conns, args.streams_per_conn,
                                        args.stream_sources),
                    stop_swarm, settle=args.settle)
                results["idle_streams"].update(swarm_out[0] if swarm_out else {})
                results["idle_streams"].pop("sample_keys", None)

            async with await ApiClient.connect(target.api) as client:
                stats = await client.call("stats")
            results["limits_hit"] = stats.get("limits", {})


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--serve", metavar="HOME", help=argparse.SUPPRESS)
    parser.add_argument("--flood", nargs=4, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--quic-flood", nargs=4, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="the small subset the tests run")
    parser.add_argument("--requests", type=int, default=200, help="legitimate requests per phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="time bound of each phase")
    parser.add_argument("--identities", type=int, default=300, help="fake identities")
    parser.add_argument("--dns-rate", type=int, default=3000, help="flood queries a second")
    parser.add_argument("--quic-rate", type=int, default=300, help="QUIC Initials a second")
    parser.add_argument("--handshakes", type=int, default=700,
                        help="fresh identities completing QUIC handshakes from one address")
    parser.add_argument("--swarm", nargs=7, metavar="X", help=argparse.SUPPRESS)
    parser.add_argument("--provider-identities", type=int, default=70)
    parser.add_argument("--provider-messages", type=int, default=71_750,
                        help="ADD_PROVIDER messages in all")
    parser.add_argument("--stream-conns", type=int, default=200,
                        help="connections (one identity each) holding idle streams")
    parser.add_argument("--streams-per-conn", type=int, default=256)
    parser.add_argument("--stream-sources", type=int, default=len(STREAM_ATTACKER_IPS),
                        choices=range(1, len(STREAM_ATTACKER_IPS) + 1),
                        help="loopback addresses the stream attackers spread over")
    parser.add_argument("--settle", type=float, default=60.0,
                        help="seconds to wait for the daemon's RSS to come back after an attack")
    parser.add_argument("--phases", type=lambda text: set(text.split(",")), default=None,
                        help="run only these attacks (comma-separated)")
    args = parser.parse_args()
    if args.serve:
        return serve(Path(args.serve))
    if args.quic_flood:
        host, port, rate, seconds = args.quic_flood
        return quic_flood(host, int(port), int(rate), float(seconds))
    if args.swarm:
        kind, peer, addr, count, per, seconds, sources = args.swarm
        return swarm(kind, peer, addr, int(count), int(per), float(seconds), int(sources))
    if args.flood:
        host, port, rate, seconds = args.flood
        return flood(host, int(port), int(rate), float(seconds))
    if args.quick:
        args.requests, args.seconds, args.identities, args.dns_rate = 40, 2.0, 24, 1000
        args.quic_rate, args.handshakes = 200, 96
        args.provider_identities, args.provider_messages = 8, 4000
        # One source, so that its cap is reached: 8 x 160 streams > 1024.
        args.stream_conns, args.streams_per_conn, args.stream_sources = 8, 160, 1
        args.settle = 0.0
    results = asyncio.run(bench(args))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
