"""The admin ops (status, stop, disconnect) and the "existing connection"
note of connect/ping, through the API of real in-process daemons."""

import asyncio
from pathlib import Path

import pytest
from multiaddr import Multiaddr

from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.daemon.ops_admin import reachability
from overlay.naming.names import self_certifying_name

from tests.daemon.helpers import REPO, cli_command, running_daemon


def test_reachability_is_how_peers_see_us() -> None:
    listen = [Multiaddr("/ip4/0.0.0.0/udp/4001/quic-v1")]
    seen_same_port = [(Multiaddr("/ip4/203.0.113.10/udp/4001/quic-v1"), 2)]
    seen_other_port = [(Multiaddr("/ip4/198.51.100.7/udp/61234/quic-v1"), 1)]
    assert reachability(listen, seen_same_port, connected=0) == "offline"
    assert reachability(listen, [], connected=3) == "unknown"
    assert reachability(listen, seen_same_port, connected=1) == "direct"
    assert reachability(listen, seen_other_port, connected=1) == "nat"
    specific = [Multiaddr("/ip4/10.0.0.5/udp/4001/quic-v1")]
    assert reachability(specific, seen_same_port, connected=1) == "nat"


async def test_status_reports_the_node(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        async with await ApiClient.connect(a.api_path) as client:
            alone = await client.call("status")
            await client.call("connect", {"addr": b.full_addrs()[0]})
            together = await client.call("status")
            me = await client.call("identity")
    assert alone["peer_id"] == str(a.peer_id)
    assert alone["name"] == self_certifying_name(a.peer_id) == me["name"]
    assert alone["name"].startswith("k51") and alone["name"].endswith(".ovl")
    assert alone["listen_addrs"] == a.full_addrs()
    assert alone["api_socket"] == str(a.api_path)
    assert alone["peers"] == [] and alone["reachability"] == "offline"
    assert alone["dht"] is None and alone["names"] is None  # no extensions here
    assert 0 <= alone["uptime_s"] <= together["uptime_s"]
    assert together["peers"] == [str(b.peer_id)]
    assert together["reachability"] in ("unknown", "direct")


async def test_disconnect_closes_the_connection_then_reports_not_found(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        async with await ApiClient.connect(a.api_path) as client:
            await client.call("connect", {"addr": b.full_addrs()[0]})
            reply = await client.call("disconnect", {"peer": str(b.peer_id)})
            assert reply == {"id": reply["id"], "ok": True, "peer_id": str(b.peer_id), "closed": 1}
            assert (await client.call("peers"))["peers"] == []
            with pytest.raises(ApiError) as missing:
                await client.call("disconnect", {"peer": str(b.peer_id)})
            assert missing.value.code == "not_found"
            with pytest.raises(ApiError) as bad:
                await client.call("disconnect", {"peer": "not-a-peer"})
            assert bad.value.code == "invalid_peer_id"


async def test_stop_confirms_and_the_connection_ends_with_the_api(short_tmp: Path) -> None:
    async with asyncio.timeout(30):
        async with running_daemon(short_tmp / "a") as a:
            client = await ApiClient.connect(a.api_path)
            await client.send_request("stop")
            event = await client.next_event()
            assert event is not None and event["event"] == "stopping"
            assert event["peer_id"] == str(a.peer_id) and isinstance(event["pid"], int)
            await a.stop_requested.wait()
        # Leaving the daemon closed the API: the stop request ends with EOF.
        assert await client.next_event() is None
        await client.aclose()


async def test_connect_and_ping_say_when_an_existing_connection_was_used(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        real = b.full_addrs()[0]
        port = real.split("/udp/")[1].split("/")[0]
        # Same peer, an address that was never dialed (nothing listens there).
        other = f"/ip4/127.0.0.2/udp/{port}/quic-v1/p2p/{b.peer_id}"
        async with await ApiClient.connect(a.api_path) as client:
            first = await client.call("connect", {"addr": real})
            again = await client.call("connect", {"addr": real})
            elsewhere = await client.call("connect", {"addr": other})
            ping = await client.call("ping", {"addr": other})
        # The CLI says it in words.
        proc = await asyncio.create_subprocess_exec(
            *cli_command("--home", str(a.home.root), "connect", other),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=REPO)
        out, err = await proc.communicate()
        assert proc.returncode == 0, err
    assert first["used_existing"] is False and again["used_existing"] is False
    assert elsewhere["used_existing"] is True and ping["used_existing"] is True
    expected_remote = real.split("/p2p/")[0]
    assert elsewhere["remote_addr"] == ping["remote_addr"] == expected_remote
    assert f"used the existing connection to {b.peer_id} via {expected_remote}" in out.decode()
