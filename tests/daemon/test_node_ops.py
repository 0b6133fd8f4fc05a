"""Every node op through the API of real in-process daemons on loopback QUIC."""

import asyncio
from pathlib import Path
from typing import Any

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.host import HostListener
from overlay.daemon.ops import NodeOpsConfig

from tests.daemon.helpers import running_daemon


async def test_identity_and_listen_addrs(short_tmp: Path) -> None:
    async with asyncio.timeout(20), running_daemon(short_tmp / "a") as daemon:
        async with await ApiClient.connect(daemon.api_path) as client:
            me = await client.call("identity")
            listen = await client.call("listen_addrs")
    assert me["peer_id"] == str(daemon.peer_id)
    assert me["agent_version"].startswith("overlay/") and me["api_version"] == 1
    assert {"/ipfs/ping/1.0.0", "/ipfs/id/1.0.0"} <= set(me["protocols"])
    assert me["addrs"] and all(a.endswith(f"/p2p/{daemon.peer_id}") for a in me["addrs"])
    assert [f"{a}/p2p/{daemon.peer_id}" for a in listen["addrs"]] == me["addrs"]
    assert all(a.startswith("/ip4/127.0.0.1/udp/") and not a.endswith("/udp/0/quic-v1")
               for a in listen["addrs"])


async def test_connect_peers_and_ping(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        identified = asyncio.Event()
        a.host.add_listener(HostListener(
            identified=lambda peer, info: identified.set() if peer == b.peer_id else None))
        target = b.full_addrs()[0]
        async with await ApiClient.connect(a.api_path) as client:
            reply = await client.call("connect", {"addr": target})
            assert reply["peer_id"] == str(b.peer_id) and reply["direction"] == "outbound"
            await identified.wait()
            peers = (await client.call("peers"))["peers"]
            assert [p["peer_id"] for p in peers] == [str(b.peer_id)]
            assert peers[0]["agent_version"].startswith("overlay/")
            assert "/ipfs/ping/1.0.0" in peers[0]["protocols"]
            assert peers[0]["direction"] == "outbound"
            assert peers[0]["connected_addrs"][0].startswith("/ip4/127.0.0.1/udp/")

            events: list[dict[str, Any]] = []
            reply = await client.call("ping", {"addr": target, "count": 3}, on_event=events.append)
            assert [e["seq"] for e in events] == [1, 2, 3]
            assert all(e["event"] == "pong" and e["rtt_ms"] > 0 for e in events)
            assert reply["rtts_ms"] == [e["rtt_ms"] for e in events]
            assert reply["min_ms"] <= reply["avg_ms"] <= reply["max_ms"]

            by_peer = await client.call("ping", {"peer": str(b.peer_id)})
            assert by_peer["count"] == 1 and by_peer["peer_id"] == str(b.peer_id)

        async with await ApiClient.connect(b.api_path) as client:
            peers = (await client.call("peers"))["peers"]
            assert [(p["peer_id"], p["direction"]) for p in peers] == [(str(a.peer_id), "inbound")]


async def test_op_errors_are_typed(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        b_port_addr = str(b.listen_addrs()[0])
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("connect", {}, "bad_request"),
            ("connect", {"addr": "/ip4/127.0.0.1/udp/1/quic"}, "invalid_multiaddr"),
            ("connect", {"addr": "not an address"}, "invalid_multiaddr"),
            ("connect", {"addr": f"{b_port_addr}/p2p/{a.peer_id}"}, "failed"),  # ourselves
            ("ping", {}, "bad_request"),
            ("ping", {"peer": "12D3KooWnotapeer"}, "invalid_peer_id"),
            ("ping", {"addr": b.full_addrs()[0], "count": 0}, "bad_request"),
            ("ping", {"addr": b.full_addrs()[0], "count": True}, "bad_request"),
            ("stream_open", {"addr": b.full_addrs()[0]}, "bad_request"),
            ("stream_open", {"addr": b.full_addrs()[0], "protocols": ["/nobody/1"]},
             "protocol_not_supported"),
            ("stream_accept", {"stream_id": 12345}, "bad_request"),
        ]
        async with await ApiClient.connect(a.api_path) as client:
            for op, args, code in cases:
                with pytest.raises(ApiError) as info:
                    await client.call(op, args)
                assert info.value.code == code, (op, args, info.value)
            # The connection and the daemon are fine afterwards.
            assert (await client.call("identity"))["peer_id"] == str(a.peer_id)


async def test_peer_id_mismatch_is_reported(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b, running_daemon(short_tmp / "c") as c:
        lying = f"{b.listen_addrs()[0]}/p2p/{c.peer_id}"
        async with await ApiClient.connect(a.api_path) as client:
            with pytest.raises(ApiError) as info:
                await client.call("connect", {"addr": lying})
        assert info.value.code == "peer_id_mismatch"
        assert str(c.peer_id) in info.value.message


async def test_stream_open_relays_both_ways_with_half_close(short_tmp: Path) -> None:
    protocol = "/test/upper/1.0.0"
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        # b serves the protocol through its API: register, then accept.
        registrant = await ApiClient.connect(b.api_path)
        await registrant.send_request("stream_handler_register", {"protocol": protocol})
        registered = await registrant.next_event()
        assert registered is not None and registered["event"] == "registered"

        async def serve_one() -> bytes:
            event = await registrant.next_event()
            assert event is not None and event["event"] == "stream"
            assert event["peer_id"] == str(a.peer_id) and event["protocol"] == protocol
            acceptor = await ApiClient.connect(b.api_path)
            reply, reader, writer = await acceptor.stream_accept(event["stream_id"])
            assert reply["peer_id"] == str(a.peer_id)
            received = await reader.read()  # until a half-closes
            writer.write(received.upper())
            writer.write_eof()
            writer.close()
            return received

        async with asyncio.TaskGroup() as group:
            server = group.create_task(serve_one())
            opener = await ApiClient.connect(a.api_path)
            reply, reader, writer = await opener.stream_open([protocol], addr=b.full_addrs()[0])
            assert reply["protocol"] == protocol and reply["peer_id"] == str(b.peer_id)
            payload = b"hello over libp2p " * 5000  # larger than one relay chunk
            writer.write(payload)
            await writer.drain()
            writer.write_eof()
            answer = await reader.read()
            writer.close()
        assert server.result() == payload
        assert answer == payload.upper()
        async with await ApiClient.connect(a.api_path) as client:
            verdict = await client.call("stream_outcome", {"pump_id": reply["pump_id"]})
        assert verdict["state"] == "ended"
        assert (verdict["up"], verdict["down"]) == (len(payload), len(payload))
        await registrant.aclose()


async def test_handler_registration_is_exclusive_and_released(short_tmp: Path) -> None:
    protocol = "/test/excl/1.0.0"
    async with asyncio.timeout(20), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        first = await ApiClient.connect(a.api_path)
        await first.send_request("stream_handler_register", {"protocol": protocol})
        assert (await first.next_event() or {}).get("event") == "registered"
        assert protocol in a.host.protocols()
        async with await ApiClient.connect(a.api_path) as second:
            with pytest.raises(ApiError, match="already has a handler"):
                await second.call("stream_handler_register", {"protocol": protocol})
            with pytest.raises(ApiError, match="served by the daemon itself"):
                await second.call("stream_handler_register", {"protocol": "/ipfs/ping/1.0.0"})
        first.half_close()
        final = await first.next_event()
        assert final is not None and final["ok"] is True and final["protocol"] == protocol
        await first.aclose()
        # The registration is over: peers proposing the protocol are refused.
        assert protocol not in a.host.protocols()
        async with await ApiClient.connect(b.api_path) as opener:
            with pytest.raises(ApiError) as info:
                await opener.stream_open([protocol], addr=a.full_addrs()[0])
        assert info.value.code == "protocol_not_supported"
        third = await ApiClient.connect(a.api_path)
        await third.send_request("stream_handler_register", {"protocol": protocol})
        event = await third.next_event()
        assert event is not None and event["event"] == "registered"
        await third.aclose()


async def test_unaccepted_inbound_stream_is_reset(short_tmp: Path) -> None:
    protocol = "/test/ignored/1.0.0"
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b", ops_config=NodeOpsConfig(accept_timeout=0.2)) as b:
        registrant = await ApiClient.connect(b.api_path)
        await registrant.send_request("stream_handler_register", {"protocol": protocol})
        assert (await registrant.next_event() or {}).get("event") == "registered"
        opener = await ApiClient.connect(a.api_path)
        reply, reader, writer = await opener.stream_open([protocol], addr=b.full_addrs()[0])
        event = await registrant.next_event()
        assert event is not None and event["event"] == "stream"
        # Nobody accepts: b resets the stream and a's relay connection ends.
        # On the socket that is only an EOF; the outcome tells it apart.
        assert await reader.read() == b""
        writer.close()
        async with await ApiClient.connect(a.api_path) as client:
            verdict = await client.call("stream_outcome", {"pump_id": reply["pump_id"]})
            assert verdict["state"] == "broken" and "reset" in verdict["error"], verdict
            with pytest.raises(ApiError, match="no relayed stream"):
                await client.call("stream_outcome", {"pump_id": "nonsense"})
        await registrant.aclose()


async def test_extensions_add_ops_and_stop_after_the_api(short_tmp: Path) -> None:
    from collections.abc import AsyncIterator, Mapping
    from contextlib import asynccontextmanager

    from overlay.daemon import ApiCall
    from overlay.daemon.config import DaemonConfig
    from overlay.daemon.home import Home
    from overlay.daemon.init import init_home
    from overlay.daemon.node import Daemon

    from tests.daemon.helpers import LOOPBACK

    log: list[str] = []

    @asynccontextmanager
    async def extension(daemon: Daemon) -> AsyncIterator[None]:
        async def hello(call: ApiCall) -> Mapping[str, Any]:
            return {"listening": len(daemon.listen_addrs())}

        daemon.api.register("ext_hello", hello)
        log.append("start")
        yield
        log.append(f"stop, api serving: {daemon.api_path.exists()}")

    home = Home(short_tmp / "x")
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    async with asyncio.timeout(20):
        async with Daemon(home, config, key, extensions=[extension]) as daemon:
            async with await ApiClient.connect(daemon.api_path) as client:
                assert (await client.call("ext_hello"))["listening"] == 1
    assert log == ["start", "stop, api serving: False"]


async def test_identity_lists_observed_addrs(short_tmp: Path) -> None:
    async with asyncio.timeout(30), running_daemon(short_tmp / "a") as a, \
            running_daemon(short_tmp / "b") as b:
        identified = asyncio.Event()
        a.host.add_listener(HostListener(
            identified=lambda peer, info: identified.set() if peer == b.peer_id else None))
        async with await ApiClient.connect(a.api_path) as client:
            assert (await client.call("identity"))["observed_addrs"] == []
            await client.call("connect", {"addr": b.full_addrs()[0]})
            await identified.wait()
            observed = (await client.call("identity"))["observed_addrs"]
        async with await ApiClient.connect(b.api_path) as client:
            peers = (await client.call("peers"))["peers"]
    # b reports the address it sees a's connection come from.
    seen_by_b = [p["connected_addrs"][0] for p in peers if p["peer_id"] == str(a.peer_id)]
    assert seen_by_b and seen_by_b[0].startswith("/ip4/127.0.0.1/udp/")
    assert observed == [{"addr": seen_by_b[0], "reporters": 1}]
