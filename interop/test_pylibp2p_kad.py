"""Kademlia interop with py-libp2p (the PyPI package ``libp2p``) on
``/ipfs/kad/1.0.0`` over QUIC-v1 on loopback (issue 3, part 7).

py-libp2p runs in its own virtualenv (``interop/setup.sh``) as a separate
process, ``interop/pylibp2p_kad_peer.py``, driven by JSON lines.  Both
sides validate ``/v/<sha256 hex>`` records the same way: overlay's built-in
validator, and a validator the py-libp2p script registers for ``v`` (its
default validator would accept any unknown namespace without checking).

Covered in both directions: our PUT_VALUE stored by py-libp2p and read
back by its network GET; its PUT_VALUE stored by us and read back by our
GET; FIND_NODE that finds a third peer through the other implementation;
ADD_PROVIDER / GET_PROVIDERS.

py-libp2p 0.8.1 kad behaviour these tests allow for:

- Its server resets a FIND_NODE whose key is neither a multihash nor 2-50
  bytes long, so a ``/v/<sha256 hex>`` key (67 bytes) cannot be looked up
  with FIND_NODE there.  Its own ``put_value``/``get_value`` send exactly
  that, so they only work against servers that accept any key (ours do).
  Our service finds the closest peers of a record key with a GET_VALUE
  lookup instead, which every implementation answers with closer peers.
- It adds the sender of an inbound kad request to its routing table only if
  its peerstore already holds the sender's addresses; that races with its
  identify of the new connection, so the tests hand it our address first.
- Its records carry extra signature/author fields outside the spec; we
  ignore them (protobuf skips unknown fields) and serve the plain record.
- Its default validator accepts any namespace it has no validator for, so
  the script registers a real ``v`` validator.
- QUIC over IPv6 does not work in py-libp2p at all (see interop/README.md),
  so only IPv4 loopback is used.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multiaddr import Multiaddr

from overlay.errors import StreamClosed, StreamReset
from overlay.host import Host, HostConfig
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.errors import InvalidKadMessage
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import LookupConfig
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.records import Record, immutable_key
from overlay.kad.service import KadService
from overlay.kad.service_config import IPFS_KAD_PROTOCOL, KadServiceConfig

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "pylibp2p_kad_peer.py"
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
START_TIMEOUT = 60.0
STEP_TIMEOUT = 40.0
TEST_TIMEOUT = 150.0
KAD = KadServiceConfig(
    protocol_id=IPFS_KAD_PROTOCOL,
    request_timeout=15.0,
    lookup_timeout=40.0,
    lookup=LookupConfig(peer_timeout=10.0),
)


def _peer_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LIBP2P_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class PyKad:
    """A running ``pylibp2p_kad_peer.py``."""

    proc: asyncio.subprocess.Process
    stderr_path: Path
    info: dict[str, Any]

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_string(self.info["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.info["addrs"][0])

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    async def command(self, line: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(STEP_TIMEOUT):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise AssertionError(f"py-libp2p exited on {line!r}:\n{self.stderr()}")
        reply: dict[str, Any] = json.loads(raw)
        assert "error" not in reply, f"{line!r}: {reply['error']}\n{reply.get('traceback', '')}"
        return reply


@asynccontextmanager
async def pykad(python: str, tmp_path: Path, name: str) -> AsyncIterator[PyKad]:
    stderr_path = tmp_path / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            python, str(PEER_SCRIPT), "--listen", LISTEN,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            env=_peer_env(), cwd=str(HERE),
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            first = await proc.stdout.readline()
        if not first:
            raise AssertionError("py-libp2p kad peer exited early:\n"
                                 + stderr_path.read_text(errors="replace")[-4000:])
        yield PyKad(proc, stderr_path, json.loads(first))
    finally:
        if proc.returncode is None and proc.stdin is not None:
            proc.stdin.write(b"quit\n")
            proc.stdin.close()
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


@dataclass
class Ours:
    host: Host
    kad: KadService

    @property
    def addr(self) -> str:
        return f"{self.host.listen_addrs()[0]}/p2p/{self.host.peer_id}"


@asynccontextmanager
async def our_node() -> AsyncIterator[Ours]:
    async with AsyncExitStack() as stack:
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HostConfig()))
        await host.listen([Multiaddr(LISTEN)])
        kad = await stack.enter_async_context(KadService(host, KAD))
        yield Ours(host, kad)


async def _in_table(node: Ours, peer: PeerId) -> None:
    """Wait until ``peer`` entered ``node``'s routing table: identify names
    it a DHT server, and it enters once it answered our admitting request,
    after which the service sets ``activity``."""
    while peer not in node.kad.table:
        node.kad.activity.clear()
        if peer in node.kad.table:
            break
        await node.kad.activity.wait()


async def test_overlay_puts_and_pylibp2p_gets(pylibp2p_python: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pykad(pylibp2p_python, tmp_path, "p") as py, \
            our_node() as ours:
        await ours.kad.bootstrap([py.addr])
        assert py.peer_id in ours.kad.table
        # py-libp2p adds the sender of a kad request to its table only if its
        # peerstore already has the sender's addresses, which races with its
        # identify of our connection; `connect` gives it the address first.
        added = await py.command(f"connect {ours.addr}")
        assert added["added"] is True
        assert str(ours.host.peer_id) in (await py.command("table"))["peers"]

        value = b"stored by overlay, read by py-libp2p"
        key = immutable_key(value)
        acks = await ours.kad.put_value(key, value)
        assert acks == 1  # py-libp2p validated it and echoed the record
        assert (await py.command(f"has {key.decode()}"))["has"] is True

        # py-libp2p drops its copy and asks the network, that is, us.
        served = ours.kad.stats.requests_served
        got = await py.command(f"get {key.decode()}")
        assert got["dropped_local"] is True
        assert got["value_hex"] == value.hex()
        assert ours.kad.stats.requests_served > served


async def test_pylibp2p_puts_and_overlay_gets(pylibp2p_python: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pykad(pylibp2p_python, tmp_path, "p") as py, \
            our_node() as ours:
        await ours.kad.bootstrap([py.addr])
        value = b"stored by py-libp2p, read by overlay"
        key = immutable_key(value)
        await py.command(f"put {key.decode()} {value.hex()}")
        stored = ours.kad.records.get(key, time.time())
        assert stored is not None and stored.record.value == value

        # Forget our copy: the value must come from py-libp2p's answer.
        assert ours.kad.records.remove(key)
        record = await ours.kad.get_value(key)
        assert record.value == value
        assert record.key == key

        # A forged value under a /v/ key: py-libp2p's validator refuses it
        # and resets the stream instead of echoing.
        other = immutable_key(b"other")
        forged = KadMessage(MessageType.PUT_VALUE, other, record=Record(other, b"forged"))
        with pytest.raises((StreamReset, StreamClosed, InvalidKadMessage)):
            await ours.kad.request(Contact.of(py.peer_id), forged)
        assert (await py.command(f"has {other.decode()}"))["has"] is False


async def test_overlay_finds_a_third_peer_through_pylibp2p(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pykad(pylibp2p_python, tmp_path, "p") as py, \
            our_node() as seeker, our_node() as target:
        # The target is known to py-libp2p only.
        await target.kad.bootstrap([py.addr])
        await seeker.host.connect(Multiaddr(py.addr))
        await _in_table(seeker, py.peer_id)
        assert target.host.peer_id not in seeker.host.peers()
        assert seeker.host.peerstore.addrs(target.host.peer_id) == []

        addrs = await seeker.kad.lookup_peer(target.host.peer_id)
        assert target.host.listen_addrs()[0] in addrs
        assert target.host.peer_id in seeker.host.peers()  # we dialed it


async def test_pylibp2p_finds_a_third_peer_through_overlay(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pykad(pylibp2p_python, tmp_path, "seeker") as seeker, \
            pykad(pylibp2p_python, tmp_path, "target") as target, our_node() as ours:
        # The target is known to us only.
        await target.command(f"connect {ours.addr}")
        await _in_table(ours, target.peer_id)
        assert (await seeker.command(f"knows {target.peer_id}"))["addrs"] == []
        served = ours.kad.stats.requests_served
        # (py-libp2p may already ask us for peers when it adds us.)
        await seeker.command(f"connect {ours.addr}")
        found = await seeker.command(f"find_peer {target.peer_id}")
        assert ours.kad.stats.requests_served > served  # it asked us
        target_addr = target.addr.split("/p2p/")[0]
        assert target_addr in [a.split("/p2p/")[0] for a in found["addrs"]], found


async def test_provider_records_both_ways(pylibp2p_python: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), pykad(pylibp2p_python, tmp_path, "p") as py, \
            our_node() as ours, our_node() as late:
        await ours.kad.bootstrap([py.addr])
        await py.command(f"connect {ours.addr}")

        # Our ADD_PROVIDER is stored by py-libp2p and its GET_PROVIDERS finds us.
        key = b"\x12\x20" + hashlib.sha256(b"provided by overlay").digest()
        assert await ours.kad.provide(key) == 1
        found = (await py.command(f"providers {key.hex()}"))["providers"]
        ours_entry = [p for p in found if p["peer_id"] == str(ours.host.peer_id)]
        assert ours_entry, found
        assert str(ours.host.listen_addrs()[0]) in ours_entry[0]["addrs"]

        # Its ADD_PROVIDER reaches us; a node that knows only py-libp2p finds
        # the provider with GET_PROVIDERS.
        other = b"\x12\x20" + hashlib.sha256(b"provided by py-libp2p").digest()
        assert (await py.command(f"provide {other.hex()}"))["provided"] is True
        assert py.peer_id in {info.peer_id for info in ours.kad.providers.get(other, time.time())}
        await late.kad.bootstrap([py.addr])
        providers = await late.kad.find_providers(other)
        assert py.peer_id in {info.peer_id for info in providers}
