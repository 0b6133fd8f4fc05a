"""The ``stats`` op and the Prometheus endpoint: every limit a remote or a
local client can hit, counted by cause, with the counters around them.

``StatsExtension`` (a ``DaemonExtension``) registers ``stats`` and, given
``metrics=(host, port)``, serves ``/metrics`` in the Prometheus text format
on the daemon's own loop, bound to that address only.  Scrapes read the
same snapshot the op returns (``collect_stats``), so the two never differ.
The HTTP side is minimal on purpose: one GET per connection, an 8 KiB
request head read within 5 s, at most 16 scrapers at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from overlay.daemon.api import ApiCall
from overlay.supervisor import run_supervised

__all__ = ["StatsExtension", "collect_stats", "metrics_text"]

log = logging.getLogger(__name__)

_MAX_HEAD = 8192
_HEAD_TIMEOUT = 5.0
_MAX_SCRAPERS = 16


def _extension_attr(daemon: Any, name: str) -> Any:
    for extension in getattr(daemon, "extensions", ()):
        value = getattr(extension, name, None)
        if value is not None:
            return value
    return None


def collect_stats(daemon: Any) -> dict[str, Any]:
    """Limit hits by cause (the host's inbound stream caps, QUIC admission,
    the API, kad, the DNS front) and the counters around them (a subsystem
    that does not run is absent)."""
    limits: dict[str, int] = {}
    out: dict[str, Any] = {"limits": limits}
    api = daemon.api
    limits.update(api.limit_hits.snapshot())
    host = getattr(daemon, "host", None)
    for endpoint in host.endpoints() if host is not None else ():  # QUIC admission
        for cause, count in endpoint.limit_hits.snapshot().items():
            limits[cause] = limits.get(cause, 0) + count
    host_hits = getattr(host, "limit_hits", None)
    if host is not None and host_hits is not None:  # the host's inbound stream caps
        for cause, count in host_hits.snapshot().items():
            limits[cause] = limits.get(cause, 0) + count
        out["host"] = {"inbound_streams": host.inbound_streams,
                       "connections": len(host.connections())}
    out["api"] = {"clients": api.client_count}
    memory = getattr(daemon, "memory", None)
    if memory is not None:
        out["memory"] = memory.stats()
    kad = _extension_attr(daemon, "kad")
    if kad is not None:
        limits.update(kad.limit_hits.snapshot())
        stats = kad.stats
        out["kad"] = {
            "table_size": len(kad.table),
            "inbound_streams": kad.inbound_streams,
            "requests_served": stats.requests_served,
            "requests_sent": stats.requests_sent,
            "requests_failed": stats.requests_failed,
            "inbound_rejected": stats.inbound_rejected,
            "evictions": kad.policy.evictions,
        }
    front = _extension_attr(daemon, "dns_front")
    if front is not None:
        limits.update(front.hits.snapshot())
        out["dns"] = {"answered": front.answered, "dropped": front.dropped}
    repunch = _extension_attr(daemon, "repunch")  # docs/nat.md, "Keep-alive, re-punch"
    if repunch is not None:
        out["repunch"] = repunch.counters()
    exit_server = _extension_attr(daemon, "exit_server")  # docs/apps.md, "Exits"
    if exit_server is not None:
        limits.update(exit_server.limit_hits.snapshot())
        out["exit"] = exit_server.stats()
    out["limits"] = dict(sorted(limits.items()))
    return out


class _Collector(Collector):
    def __init__(self, daemon: Any) -> None:
        self._daemon = daemon

    def collect(self) -> Iterator[Metric]:
        snapshot = collect_stats(self._daemon)
        hits = CounterMetricFamily("overlay_limit_hits", "Requests, streams or clients refused "
                                   "or closed by a limit", labels=["cause"])
        for cause, count in snapshot["limits"].items():
            hits.add_metric([cause], count)
        yield hits
        for section in ("host", "api", "kad", "dns", "memory", "repunch"):
            for name, value in snapshot.get(section, {}).items():
                if name in ("clients", "table_size", "inbound_streams", "connections",
                            "rss_bytes", "watching", "busy"):
                    yield GaugeMetricFamily(f"overlay_{section}_{name}", f"{section} {name}",
                                            value=value)
                else:
                    yield CounterMetricFamily(f"overlay_{section}_{name}", f"{section} {name}",
                                              value=value)


def metrics_text(daemon: Any) -> bytes:
    """The Prometheus text exposition of ``collect_stats``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(daemon))
    return generate_latest(registry)


class StatsExtension:
    """Registers ``stats``; serves ``/metrics`` when ``metrics`` is given."""

    def __init__(self, metrics: tuple[str, int] | None = None) -> None:
        self.metrics = metrics
        self.metrics_address: tuple[str, int] | None = None
        """Where ``/metrics`` is served (the real port), while it runs."""
        self._scrapers = 0

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[object]:
        return self._run(daemon)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[object]:
        async def stats(call: ApiCall) -> Mapping[str, Any]:
            return collect_stats(daemon)

        daemon.api.register("stats", stats)
        if self.metrics is None:
            yield self
            return
        async with asyncio.TaskGroup() as group:
            server = await asyncio.start_server(
                lambda r, w: self._accept(group, daemon, r, w), self.metrics[0], self.metrics[1])
            sockname = server.sockets[0].getsockname()
            self.metrics_address = (str(sockname[0]), int(sockname[1]))
            log.info("metrics on http://%s:%d/metrics", *self.metrics_address)
            try:
                yield self
            finally:
                self.metrics_address = None
                server.close()
                await server.wait_closed()

    def _accept(self, group: asyncio.TaskGroup, daemon: Any,
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._scrapers >= _MAX_SCRAPERS:
            writer.transport.abort()
            return
        self._scrapers += 1
        group.create_task(run_supervised(self._scrape(daemon, reader, writer), "metrics scrape", log))

    async def _scrape(self, daemon: Any, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(_HEAD_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                    ConnectionError):
                return
            if len(head) > _MAX_HEAD:
                return
            line = head.split(b"\r\n", 1)[0].split()
            if len(line) < 2 or line[0] != b"GET":
                writer.write(_http(405, b"only GET\n", b"text/plain"))
            elif line[1].split(b"?", 1)[0] != b"/metrics":
                writer.write(_http(404, b"see /metrics\n", b"text/plain"))
            else:
                writer.write(_http(200, metrics_text(daemon),
                                   b"text/plain; version=0.0.4; charset=utf-8"))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            self._scrapers -= 1
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


def _http(status: int, body: bytes, kind: bytes) -> bytes:
    reason = {200: b"OK", 404: b"Not Found", 405: b"Method Not Allowed"}[status]
    return (b"HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % (status, reason, kind, len(body))) + body
