"""The ``stats`` op and the Prometheus endpoint read the same counters."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

from overlay.daemon.api import ApiServerConfig
from overlay.daemon.client import ApiClient
from overlay.daemon.ops_stats import StatsExtension
from overlay.limits import LimitHits
from tests.daemon.test_api_server import raw_connection, start


async def _get(address: tuple[str, int], path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_stats_op_and_metrics_agree(short_tmp: Path) -> None:
    async with asyncio.timeout(10):
        server, _ = await start(short_tmp / "api.sock", ApiServerConfig(idle_timeout=0.2))
        dns_hits = LimitHits()
        dns_hits.hit("dns.rate", 0.0)
        dns_hits.hit("dns.rate", 1.0)
        front = SimpleNamespace(hits=dns_hits, answered=7, dropped=2)
        quic_hits = [LimitHits(), LimitHits()]  # two QUIC sockets, summed
        quic_hits[0].hit("quic.retry", 0.0)
        quic_hits[1].hit("quic.retry", 0.0)
        host = SimpleNamespace(endpoints=lambda: [SimpleNamespace(limit_hits=h) for h in quic_hits])
        daemon = SimpleNamespace(api=server, host=host,
                                 extensions=[SimpleNamespace(dns_front=front)])
        extension = StatsExtension(("127.0.0.1", 0))
        try:
            async with extension(daemon):
                reader, writer = await raw_connection(server.path)
                assert await reader.read() == b""  # one idle timeout, counted
                writer.close()
                async with await ApiClient.connect(server.path) as client:
                    reply = await client.call("stats")
                assert reply["limits"] == {"api.idle_timeout": 1, "dns.rate": 2, "quic.retry": 2}
                assert reply["dns"] == {"answered": 7, "dropped": 2}
                assert "kad" not in reply  # no DHT in this daemon
                address = extension.metrics_address
                assert address is not None and address[0] == "127.0.0.1"
                status, body = await _get(address, "/metrics")
                assert status == 200
                text = body.decode()
                assert 'overlay_limit_hits_total{cause="dns.rate"} 2.0' in text
                assert 'overlay_limit_hits_total{cause="api.idle_timeout"} 1.0' in text
                assert "overlay_dns_answered_total 7.0" in text
                assert (await _get(address, "/other"))[0] == 404
            assert extension.metrics_address is None
        finally:
            await server.__aexit__(None, None, None)
