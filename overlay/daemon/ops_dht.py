"""The ``dht_*`` ops of the stream API, and the DHT daemon extension.

Ops (arguments and replies are in docs/api.md, "DHT"): ``dht_put``,
``dht_get``, ``dht_find_peer``, ``dht_provide``, ``dht_find_providers``
and ``dht_table``.

``DhtExtension`` runs a ``KadService`` on the daemon's host, with the
record store and the provider store persisted as journals in
``<home>/dht/`` (``overlay.statefile``): a remote PUT_VALUE or
ADD_PROVIDER is answered before its coalesced write, while ``dht_put`` and
``dht_provide`` answer only once their entry is on disk.  Other extensions
(naming) reach the running service through ``DhtExtension.kad``.
"""

from __future__ import annotations

import asyncio

import base64
import binascii
import hashlib
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from overlay.daemon.api import ApiCall, ApiServer
from overlay.daemon.error_codes import DhtErrorCode
from overlay.daemon.errors import ApiError, BadRequest
from overlay.errors import DecodeError
from overlay.host.transport_types import Connection
from overlay.identity import PeerId
from overlay.kad.messages import PeerInfo
from overlay.kad.persist import LEGACY_FILE, FileRecordStore, persist_providers
from overlay.kad.records import NamespaceRegistry, default_registry, immutable_key
from overlay.kad.service import KadService
from overlay.kad.service_config import KadServiceConfig
from overlay.kad.service_errors import NoPeersKnown, PeerNotFound
from overlay.kad.store import StoreConfig
from overlay.multiaddrs import multiaddr_from_bytes
from overlay.statefile import StateWriter, remove_stale_tmp

__all__ = [
    "DhtErrorCode",
    "DhtExtension",
    "DhtOps",
    "MAX_VALUE_BYTES",
    "max_value_bytes",
    "provider_key",
]

log = logging.getLogger(__name__)

PROVIDERS_FILE = "providers.log"
_MAX_KEY_BYTES = 1024
_IMMUTABLE_KEY_BYTES = len(immutable_key(b""))


def max_value_bytes(store: StoreConfig) -> int:
    """The largest value `dht_put` accepts: the store limits key plus value
    (``max_record_bytes``) and a ``/v/<sha256 hex>`` key takes 67 bytes of it."""
    return store.max_record_bytes - _IMMUTABLE_KEY_BYTES


MAX_VALUE_BYTES = max_value_bytes(StoreConfig())
"""10,173 bytes with the default 10 KiB record limit."""
_IMMUTABLE = re.compile(r"/v/([0-9a-f]{64})")


def provider_key(text: str) -> bytes:
    """The provider key (a sha2-256 multihash) announced for ``text``.

    For ``/v/<sha256 hex>`` it is the multihash of that digest, so the
    provider record of a stored value names the value's own hash; any other
    text is hashed as UTF-8."""
    match = _IMMUTABLE.fullmatch(text)
    digest = bytes.fromhex(match.group(1)) if match else hashlib.sha256(text.encode()).digest()
    return b"\x12\x20" + digest


def _addr_texts(raw_addrs: Sequence[bytes]) -> list[str]:
    out: list[str] = []
    for raw in raw_addrs:
        try:
            out.append(str(multiaddr_from_bytes(raw)))
        except DecodeError:
            continue  # a provider's junk address is left out, not fatal
    return out


def _peer_info_json(info: PeerInfo) -> dict[str, Any]:
    return {"peer_id": str(info.peer_id), "addrs": _addr_texts(info.addrs)}


class DhtOps:
    """Registers the dht ops on an ``ApiServer`` and serves them."""

    def __init__(self, kad: KadService, *, records_durable: Callable[[], Awaitable[None]] | None = None,
                 providers_durable: Callable[[], Awaitable[None]] | None = None) -> None:
        """``*_durable`` wait until the stores' changes so far are on disk."""
        self._kad = kad
        self._records_durable = records_durable
        self._providers_durable = providers_durable

    def register(self, server: ApiServer) -> None:
        server.register("dht_put", self.dht_put)
        server.register("dht_get", self.dht_get)
        server.register("dht_find_peer", self.dht_find_peer)
        server.register("dht_provide", self.dht_provide)
        server.register("dht_find_providers", self.dht_find_providers)
        server.register("dht_table", self.dht_table)

    # -- argument helpers -------------------------------------------------

    @staticmethod
    def _bytes_arg(call: ApiCall, name: str, limit: int) -> bytes:
        """``name`` as UTF-8 text, or ``<name>_base64`` for binary."""
        text = call.str_arg(name, None)
        encoded = call.str_arg(f"{name}_base64", None)
        if (text is None) == (encoded is None):
            raise BadRequest(f"`{call.op}` needs exactly one of `{name}` and `{name}_base64`")
        if text is not None:
            data = text.encode("utf-8")
        else:
            assert encoded is not None
            try:
                data = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise BadRequest(f"`{name}_base64` is not valid base64") from None
        if not data or len(data) > limit:
            raise BadRequest(f"`{name}` must be 1 to {limit:,} bytes, not {len(data):,}")
        return data

    @staticmethod
    def _peer_arg(call: ApiCall) -> PeerId:
        return PeerId.from_string(call.required_str("peer"))

    # -- ops ----------------------------------------------------------------

    async def dht_put(self, call: ApiCall) -> Mapping[str, Any]:
        value = self._bytes_arg(call, "value", max_value_bytes(self._kad.config.store))
        key = immutable_key(value)
        try:
            replicas = await self._kad.put_value(key, value)
        finally:
            if self._records_durable is not None:
                await self._records_durable()
        return {"key": key.decode("ascii"), "replicas": replicas}

    async def dht_get(self, call: ApiCall) -> Mapping[str, Any]:
        key = self._bytes_arg(call, "key", _MAX_KEY_BYTES)
        record = await self._kad.get_value(key)
        reply: dict[str, Any] = {
            "key": key.decode("utf-8", errors="replace"),
            "value_base64": base64.b64encode(record.value).decode("ascii"),
        }
        try:
            reply["value"] = record.value.decode("utf-8")
        except UnicodeDecodeError:
            pass
        return reply

    async def dht_find_peer(self, call: ApiCall) -> Mapping[str, Any]:
        peer = self._peer_arg(call)
        addrs = await self._kad.find_peer(peer)
        return {"peer_id": str(peer), "addrs": [str(a) for a in addrs]}

    async def dht_provide(self, call: ApiCall) -> Mapping[str, Any]:
        text = call.required_str("key")
        key = provider_key(text)
        try:
            told = await self._kad.provide(key)
        finally:
            if self._providers_durable is not None:
                await self._providers_durable()
        return {"key": text, "provider_key": key.hex(), "peers": told}

    async def dht_find_providers(self, call: ApiCall) -> Mapping[str, Any]:
        text = call.required_str("key")
        limit: int = call.arg("limit")
        key = provider_key(text)
        providers = await self._kad.find_providers(key, limit)
        if not providers:
            raise ApiError(DhtErrorCode.NOT_FOUND, f"no provider found for {text}")
        return {
            "key": text,
            "provider_key": key.hex(),
            "providers": [_peer_info_json(info) for info in providers[:limit]],
        }

    async def dht_table(self, call: ApiCall) -> Mapping[str, Any]:
        """The routing table.  With ``min_size`` > 0 it first waits, up to
        ``wait`` seconds (default 15, at most 120), until the table holds
        that many peers; a script starting a daemon uses it to know the DHT
        is reachable without polling."""
        kad = self._kad
        want: int = call.arg("min_size")
        if want and len(kad.table) < want:
            wait: int = call.arg("wait")
            try:
                async with asyncio.timeout(wait):
                    while len(kad.table) < want:
                        kad.activity.clear()
                        await kad.activity.wait()
            except TimeoutError:
                pass  # answer with the table as it is: the caller sees the size
        buckets = [
            {
                "index": stats.index,
                "common_prefix_length": stats.common_prefix_length,
                "size": stats.size,
                "replacements": stats.replacements,
                "pending_check": stats.pending_check,
            }
            for stats in kad.table.occupancy()
        ]
        return {
            "peer_id": str(kad.peer_id),
            "mode": kad.config.mode,
            "protocol": kad.protocol,
            "k": kad.config.routing.k,
            "size": len(kad.table),
            "buckets": buckets,
            "peers": sorted(str(c.peer_id) for c in kad.table.contacts()),
            "records": len(kad.records),
            "bootstrapped": kad.bootstrapped.is_set(),
        }


class DhtExtension:
    """Runs the DHT inside the daemon: ``Daemon(..., extensions=[dht])``.

    The daemon's ``bootstrap`` list is used unless ``config`` names its own.
    """

    def __init__(
        self,
        config: KadServiceConfig | None = None,
        *,
        registry: NamespaceRegistry | None = None,
        state_file: str | None = "dht/records.log",
    ) -> None:
        """Without ``config`` the daemon's configuration decides the mode,
        protocol ID and bootstrap peers (``dht_mode``, ``kad_protocol``,
        ``bootstrap``).  ``state_file`` (the record journal; providers go
        to ``providers.log`` beside it) is relative to the data directory;
        None keeps records in memory only."""
        self._explicit = config is not None
        self.config = config or KadServiceConfig()
        self.registry = registry or default_registry()
        self.state_file = state_file
        self.kad: KadService | None = None
        """The running service (None outside the daemon's lifetime)."""
        self.writers: list[StateWriter] = []
        """The state writers of the running service (records, providers)."""

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[KadService]:
        return self._run(daemon)

    def connector(self) -> Callable[[PeerId], Awaitable[Connection]]:
        """For the ``connect`` op: dial a peer known only by its ID."""

        async def connect(peer: PeerId) -> Connection:
            kad = self.kad
            if kad is None:
                raise ApiError(DhtErrorCode.NO_PEERS, "the DHT is not running")
            try:
                return await kad.connect_peer(peer)
            except PeerNotFound as exc:
                raise ApiError(DhtErrorCode.NOT_FOUND, str(exc)) from exc
            except NoPeersKnown as exc:
                raise ApiError(DhtErrorCode.NO_PEERS, str(exc)) from exc

        return connect

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[KadService]:
        config = self.config
        settings = daemon.config
        if not self._explicit:
            config = replace(
                config,
                mode=getattr(settings, "dht_mode", config.mode),
                protocol_id=getattr(settings, "kad_protocol", config.protocol_id),
            )
        bootstrap = tuple(getattr(settings, "bootstrap", ()))
        if not config.bootstrap and bootstrap:
            config = replace(config, bootstrap=bootstrap)
        set_connector = getattr(getattr(daemon, "ops", None), "set_peer_connector", None)
        async with AsyncExitStack() as stack:
            records = None
            directory: Path | None = None
            if self.state_file is not None:
                path = Path(daemon.home.root) / self.state_file
                directory = path.parent
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                remove_stale_tmp(directory, (path.name, PROVIDERS_FILE, LEGACY_FILE))
                records = FileRecordStore(path, config.store, self.registry, now=time.time())
                records_writer = StateWriter(records.journal, "DHT record store")
                records.on_change = records_writer.mark_dirty
                # The service makes the provider store; its journal is
                # attached once the service exists.
                providers_writer = StateWriter(_NothingYet(), "DHT provider store")
                # Entered before the service, so they are left after it: the
                # last changes are written once nothing makes new ones.
                self.writers = [records_writer, providers_writer]
                for writer in self.writers:
                    await stack.enter_async_context(writer)
            kad = await stack.enter_async_context(
                KadService(daemon.host, config, registry=self.registry, records=records))
            if directory is not None:
                self.writers[1].target = persist_providers(
                    kad.providers, directory / PROVIDERS_FILE, time.time(),
                    self.writers[1].mark_dirty)
            DhtOps(kad, records_durable=self.writers[0].flush if self.writers else None,
                   providers_durable=self.writers[1].flush if self.writers else None,
                   ).register(daemon.api)
            self.kad = kad
            if set_connector is not None:
                set_connector(self.connector())
            try:
                yield kad
            finally:
                if set_connector is not None:
                    set_connector(None)
                self.kad = None
                self.writers = []


class _NothingYet:
    """Nothing to write (the provider writer's target before its load)."""

    def prepare(self) -> None:
        return None
