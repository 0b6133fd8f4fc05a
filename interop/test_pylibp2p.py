"""Interop with py-libp2p (the PyPI package ``libp2p``) over QUIC-v1.

py-libp2p runs in its own virtualenv (``interop/setup.sh``) as a separate
process, ``interop/pylibp2p_peer.py``, driven over stdin/stdout JSON lines.
Both directions are covered: our host dials, pings and identifies
py-libp2p, and py-libp2p dials, pings and identifies our host.

Known py-libp2p 0.8.1 behaviour these tests allow for (see interop/README.md):
it reports the observed address of a QUIC connection as ``/ip4/…/tcp/PORT``,
signs its listen addresses with a ``/p2p/<id>`` suffix, and dials from a
fresh UDP socket rather than its listen port.  Its QUIC read/FIN race, which
would otherwise fail about one identify in seven, is patched inside the
peer process (``pylibp2p_peer.fix_eof_race``); its IPv6 QUIC does not work,
so the ``[ip6]`` cases are skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from multiaddr import Multiaddr

from overlay import AGENT_VERSION
from overlay.errors import PeerIdMismatch, ProtocolNotSupported
from overlay.host import Host, HostConfig, HostListener, IdentifyInfo
from overlay.identity import Ed25519PrivateKey, PeerId

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
PEER_SCRIPT = HERE / "pylibp2p_peer.py"
PING = "/ipfs/ping/1.0.0"
IDENTIFY = "/ipfs/id/1.0.0"
IDENTIFY_PUSH = "/ipfs/id/push/1.0.0"
# Bounds: a py-libp2p process starts in about a second; its dials wait a
# fixed 250 ms (happy eyeballs) on top of the handshake.
START_TIMEOUT = 60.0
STEP_TIMEOUT = 30.0
TEST_TIMEOUT = 120.0


@dataclass(frozen=True)
class Loopback:
    """One address family's loopback, as both sides listen on it."""

    listen: str
    prefix: str


IP4 = Loopback("/ip4/127.0.0.1/udp/0/quic-v1", "/ip4/127.0.0.1/")
IP6 = Loopback("/ip6/::1/udp/0/quic-v1", "/ip6/::1/")


def _ipv6_loopback_works() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# py-libp2p 0.8.1's QUIC does not work over IPv6, not even between two
# py-libp2p hosts: its dialer's handshake times out (aioquic is given
# ("::1", port) but sees replies from ("::1", port, 0, 0)), and its IPv6
# listener completes handshakes but never answers stream negotiation.
# Kept visible as a skip; overlay's own IPv6 is tested in tests/.
PYLIBP2P_IPV6_BROKEN = "py-libp2p 0.8.1 QUIC over IPv6 times out (see interop/README.md)"


@pytest.fixture(
    params=[IP4, pytest.param(IP6, marks=pytest.mark.skip(reason=PYLIBP2P_IPV6_BROKEN))],
    ids=["ip4", "ip6"],
)
def loopback(request: pytest.FixtureRequest) -> Loopback:
    family: Loopback = request.param
    if family is IP6 and not _ipv6_loopback_works():
        pytest.skip("this machine has no IPv6 loopback")
    return family


def _peer_env() -> dict[str, str]:
    """The environment for the py-libp2p process: nothing of ours leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LIBP2P_"))}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class PyPeer:
    """A running ``pylibp2p_peer.py listen`` process."""

    proc: asyncio.subprocess.Process
    stderr_path: Path
    info: dict[str, Any]

    @property
    def peer_id(self) -> str:
        return str(self.info["peer_id"])

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
        return reply


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None and proc.stdin is not None:
        proc.stdin.write(b"quit\n")
        proc.stdin.close()
    try:
        async with asyncio.timeout(10):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()


@asynccontextmanager
async def pylibp2p_listener(
    python: str, tmp_path: Path, family: Loopback = IP4
) -> AsyncIterator[PyPeer]:
    stderr_path = tmp_path / "pylibp2p-listen.stderr"
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            python,
            str(PEER_SCRIPT),
            "--listen",
            family.listen,
            "listen",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=_peer_env(),
        )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            first = await proc.stdout.readline()
        if not first:
            raise AssertionError(
                "py-libp2p listener exited before printing its address:\n"
                + stderr_path.read_text(errors="replace")[-4000:]
            )
        yield PyPeer(proc, stderr_path, json.loads(first))
    finally:
        await _stop(proc)


async def pylibp2p_dial(python: str, addr: str, family: Loopback = IP4) -> dict[str, Any]:
    """Run ``pylibp2p_peer.py dial ADDR`` and return its JSON line."""
    proc = await asyncio.create_subprocess_exec(
        python,
        str(PEER_SCRIPT),
        "--listen",
        family.listen,
        "dial",
        addr,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_peer_env(),
    )
    try:
        async with asyncio.timeout(START_TIMEOUT):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = out.decode(errors="replace").strip().splitlines()
    assert lines, f"py-libp2p dial printed nothing (rc={proc.returncode}):\n{err.decode()[-4000:]}"
    result: dict[str, Any] = json.loads(lines[-1])
    assert proc.returncode == 0 and "error" not in result, (
        f"py-libp2p dial failed (rc={proc.returncode}): {result.get('error')}\n"
        f"{result.get('traceback', '')}\n{err.decode(errors='replace')[-4000:]}"
    )
    return result


@asynccontextmanager
async def overlay_host(family: Loopback = IP4) -> AsyncIterator[Host]:
    async with Host(Ed25519PrivateKey.generate(), HostConfig()) as host:
        await host.listen([Multiaddr(family.listen)])
        yield host


def _full_addr(host: Host, family: Loopback = IP4) -> str:
    addrs = [a for a in host.listen_addrs() if str(a).startswith(family.prefix)]
    assert addrs, f"no loopback listen address in {host.listen_addrs()}"
    return f"{addrs[0]}/p2p/{host.peer_id}"


def _udp_port(addr: Multiaddr | str) -> int:
    parts = str(addr).split("/")
    return int(parts[parts.index("udp") + 1])


def _check_learned_about_us(
    learned: dict[str, Any], host: Host, family: Loopback = IP4
) -> None:
    """What py-libp2p printed after identifying our host."""
    ours = str(host.peer_id)
    assert learned["peer_id"] == ours
    # The key in the identify message proves the same identity.
    assert learned["public_key_peer_id"] == ours
    assert learned["agent_version"] == AGENT_VERSION
    assert learned["agent_version"].startswith("overlay/")
    assert learned["protocol_version"] == "ipfs/0.1.0"
    assert {PING, IDENTIFY, IDENTIFY_PUSH} <= set(learned["protocols"])
    our_addrs = {str(a) for a in host.listen_addrs()}
    assert our_addrs & set(learned["listen_addrs"]), (our_addrs, learned["listen_addrs"])
    # We saw py-libp2p on loopback QUIC and told it so.
    observed = learned["observed_addr"]
    assert observed is not None and observed.startswith(family.prefix + "udp/")
    assert observed.endswith("/quic-v1")


async def test_overlay_dials_pings_and_identifies_pylibp2p(
    pylibp2p_python: str, tmp_path: Path, loopback: Loopback
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        async with (
            pylibp2p_listener(pylibp2p_python, tmp_path, loopback) as peer,
            overlay_host(loopback) as host,
        ):
            remote = PeerId.from_string(peer.peer_id)
            await host.connect(Multiaddr(peer.addr))

            # More pings than py-libp2p's cap of two inbound ping streams per
            # peer: they must share one stream.
            for _ in range(5):
                rtt = await host.ping(remote)
                assert 0 < rtt < STEP_TIMEOUT

            info = await host.identify(remote)
            assert info.peer_id == remote
            assert str(info.peer_id) == peer.peer_id
            # The agent py-libp2p announces is the one its own code reports.
            assert info.agent_version == peer.info["agent_version"]
            assert info.agent_version is not None
            assert info.agent_version.startswith("py-libp2p/")
            assert info.protocol_version == "ipfs/0.1.0"
            assert {PING, IDENTIFY} <= set(info.protocols)
            assert set(info.protocols) == set(peer.info["protocols"])
            # py-libp2p signs its listen addresses with a /p2p/<id> suffix.
            listen = peer.addr.split("/p2p/")[0]
            assert listen in {str(a).split("/p2p/")[0] for a in info.listen_addrs}
            # py-libp2p labels a QUIC observation /tcp/ (a py-libp2p quirk);
            # the IP and port are still ours, since we dial from our listen
            # socket.
            assert info.observed_addr is not None
            observed = str(info.observed_addr)
            assert observed.startswith(loopback.prefix)
            our_port = _udp_port(_full_addr(host, loopback))
            assert observed.rstrip("/").split("/")[4] == str(our_port), observed

            stored = host.peerstore.get(remote)
            assert stored is not None
            assert stored.agent_version == info.agent_version
            assert {PING, IDENTIFY} <= set(stored.protocols)

            # py-libp2p saw our ping and identify streams arrive.
            inbound = (await peer.command("inbound"))["inbound"]
            assert {PING, IDENTIFY} <= set(inbound.get(str(host.peer_id), []))


async def test_pylibp2p_identifies_overlay_on_connection_we_opened(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    """Streams opened by the side that accepted the connection work too."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with pylibp2p_listener(pylibp2p_python, tmp_path) as peer, overlay_host() as host:
            await host.connect(Multiaddr(peer.addr))
            await host.ping(PeerId.from_string(peer.peer_id))
            identified = (await peer.command("identify"))["identified"]
            ours = str(host.peer_id)
            assert list(identified) == [ours], identified
            learned = identified[ours]
            assert "error" not in learned, learned
            assert learned["peer_id"] == ours
            assert learned["public_key_peer_id"] == ours
            assert learned["agent_version"] == AGENT_VERSION
            assert {PING, IDENTIFY, IDENTIFY_PUSH} <= set(learned["protocols"])
            # It connected to our listen port, so that is where it sees us.
            assert learned["observed_addr"] is not None
            assert learned["observed_addr"].startswith("/ip4/127.0.0.1/")


async def test_pylibp2p_dials_pings_and_identifies_overlay(
    pylibp2p_python: str, loopback: Loopback
) -> None:
    async with asyncio.timeout(TEST_TIMEOUT):
        async with overlay_host(loopback) as host:
            learned = await pylibp2p_dial(pylibp2p_python, _full_addr(host, loopback), loopback)
            assert learned["dialed_peer_id"] == str(host.peer_id)
            _check_learned_about_us(learned, host, loopback)
            assert len(learned["ping_rtts_ms"]) == 3
            assert all(0 < rtt < STEP_TIMEOUT * 1000 for rtt in learned["ping_rtts_ms"])


async def test_overlay_learns_pylibp2p_agent_when_dialed(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    """After py-libp2p dials us, our host identifies it on its own and keeps
    its agent version, protocols and key in the peerstore."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with pylibp2p_listener(pylibp2p_python, tmp_path) as peer, overlay_host() as host:
            remote = PeerId.from_string(peer.peer_id)
            identified = asyncio.Event()

            def on_identified(pid: PeerId, _info: IdentifyInfo) -> None:
                if pid == remote:
                    identified.set()

            host.add_listener(HostListener(identified=on_identified))
            learned = await peer.command(f"dial {_full_addr(host)}")
            assert "error" not in learned, f"{learned}\n{peer.stderr()}"
            _check_learned_about_us(learned, host)
            assert remote in host.peers()

            # Our automatic identify of the inbound connection.
            await identified.wait()
            stored = host.peerstore.get(remote)
            assert stored is not None
            assert stored.agent_version == peer.info["agent_version"]
            assert stored.agent_version is not None
            assert stored.agent_version.startswith("py-libp2p/")
            assert stored.protocol_version == "ipfs/0.1.0"
            assert {PING, IDENTIFY} <= set(stored.protocols)
            assert stored.public_key is not None
            assert PeerId.from_public_key(stored.public_key) == remote

            # An explicit identify and ping over the connection it opened.
            info = await host.identify(remote)
            assert info.agent_version == peer.info["agent_version"]
            assert 0 < await host.ping(remote) < STEP_TIMEOUT


async def test_dial_with_wrong_peer_id_fails_against_pylibp2p(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    """py-libp2p's TLS certificate proves its real ID; dialing it under
    another ID must fail the handshake, and the real ID still works."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with pylibp2p_listener(pylibp2p_python, tmp_path) as peer, overlay_host() as host:
            impostor = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
            wrong = peer.addr.split("/p2p/")[0] + f"/p2p/{impostor}"
            with pytest.raises(PeerIdMismatch):
                await host.connect(Multiaddr(wrong))
            assert impostor not in host.peers()
            await host.connect(Multiaddr(peer.addr))
            assert PeerId.from_string(peer.peer_id) in host.peers()


async def test_unsupported_protocol_is_refused_by_pylibp2p(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    """multistream-select "na" from py-libp2p surfaces as ProtocolNotSupported,
    and the connection stays usable."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with pylibp2p_listener(pylibp2p_python, tmp_path) as peer, overlay_host() as host:
            remote = PeerId.from_string(peer.peer_id)
            await host.connect(Multiaddr(peer.addr))
            with pytest.raises(ProtocolNotSupported):
                await host.new_stream(remote, ["/overlay/interop/unknown/1.0.0"])
            assert 0 < await host.ping(remote) < STEP_TIMEOUT


@asynccontextmanager
async def overlay_daemon() -> AsyncIterator[dict[str, Any]]:
    """``overlay daemon --json`` in a subprocess; yields its ready event plus
    ``home``.  Unix socket paths must stay short, hence a /tmp home."""
    home = Path(tempfile.mkdtemp(prefix="ovl-interop-", dir="/tmp"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "overlay.cli", "--home", str(home), "daemon",
        "--listen", IP4.listen, "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await proc.stdout.readline()
        if not line:
            raise AssertionError(f"daemon exited: {(await proc.stderr.read()).decode()}")
        ready: dict[str, Any] = json.loads(line)
        assert ready["event"] == "ready", ready
        ready["home"] = str(home)
        yield ready
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.communicate()
        shutil.rmtree(home, ignore_errors=True)


async def overlay_cli(home: str, *args: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "overlay.cli", "--home", home, *args, "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(STEP_TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode == 0, f"overlay {' '.join(args)}: rc={proc.returncode}\n{err.decode()}"
    reply: dict[str, Any] = json.loads(out)
    return reply


async def test_daemon_and_cli_ping_pylibp2p_and_are_identified_by_it(
    pylibp2p_python: str, tmp_path: Path
) -> None:
    """The user-facing path: `overlay ping` from a daemon to py-libp2p, the
    daemon's peer list, and py-libp2p dialing the daemon."""
    async with asyncio.timeout(TEST_TIMEOUT):
        async with pylibp2p_listener(pylibp2p_python, tmp_path) as peer, overlay_daemon() as d:
            home = d["home"]
            ping = await overlay_cli(home, "ping", peer.addr, "-n", "2", "-i", "0")
            assert ping["peer_id"] == peer.peer_id
            assert len(ping["rtts_ms"]) == 2

            # The daemon identifies py-libp2p on its own once connected; a
            # bounded number of looks, each a full CLI round trip.
            entry: dict[str, Any] = {}
            for _ in range(20):
                peers = (await overlay_cli(home, "peers"))["peers"]
                entry = next(p for p in peers if p["peer_id"] == peer.peer_id)
                if entry["agent_version"] is not None:
                    break
            assert entry["agent_version"] == peer.info["agent_version"]
            assert entry["direction"] == "outbound"
            assert {PING, IDENTIFY} <= set(entry["protocols"])

            learned = await pylibp2p_dial(pylibp2p_python, d["addrs"][0])
            assert learned["peer_id"] == d["peer_id"]
            assert learned["public_key_peer_id"] == d["peer_id"]
            assert learned["agent_version"] == AGENT_VERSION
            assert {PING, IDENTIFY, IDENTIFY_PUSH} <= set(learned["protocols"])
