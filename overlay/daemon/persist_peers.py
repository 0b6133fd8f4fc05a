"""The daemon extension that keeps the peer memory (``overlay.daemon.persist``)
on disk and uses it at start.

On entry it reads ``<home>/peers.json``, puts the addresses in the
peerstore and bootstraps the DHT from them in the background, beside the
configured bootstrap list.  While running it saves every
``save_interval`` (only when something changed) and once more on exit,
each time atomically and from a worker thread, so the event loop never
waits for fsync; the file is read through ``overlay.statefile`` (size
limit before reading) and a crash's temporary files are removed at start.  It must come after the DHT extension.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from multiaddr import Multiaddr

from overlay.daemon.ops_dht import DhtExtension
from overlay.daemon.persist import (
    PeerMemoryConfig,
    PeerStateError,
    SavedPeer,
    bootstrap_addrs,
    decode_peers,
    encode_peers,
    merge_peers,
)
from overlay.errors import DecodeError
from overlay.fsutil import atomic_write
from overlay.kad.service import KadService
from overlay.multiaddrs import multiaddr_from_bytes
from overlay.statefile import CorruptState, read_bytes_limited, remove_stale_tmp
from overlay.supervisor import run_supervised

__all__ = ["PeerMemoryExtension"]

log = logging.getLogger(__name__)


def _contact_addrs(raw: tuple[bytes, ...]) -> list[str]:
    out = []
    for data in raw:
        try:
            out.append(str(multiaddr_from_bytes(data)))
        except DecodeError:
            continue
    return out


def snapshot(kad: KadService, now: float) -> list[SavedPeer]:
    """The live view: routing-table contacts, then connected peers with
    their peerstore addresses."""
    seen: dict[str, SavedPeer] = {}
    for contact in kad.table.contacts():
        addrs = _contact_addrs(contact.addrs) + [
            str(a) for a in kad.host.peerstore.addrs(contact.peer_id)]
        seen[str(contact.peer_id)] = SavedPeer(contact.peer_id, tuple(addrs), now, True)
    for peer in kad.host.peers():
        if str(peer) not in seen:
            known = tuple(str(a) for a in kad.host.peerstore.addrs(peer))
            seen[str(peer)] = SavedPeer(peer, known, now, False)
    return list(seen.values())


class PeerMemoryExtension:
    """``Daemon(..., extensions=[dht, naming, PeerMemoryExtension(dht)])``."""

    def __init__(self, dht: DhtExtension, config: PeerMemoryConfig | None = None, *,
                 wall_clock: Callable[[], float] = time.time) -> None:
        self._dht = dht
        self.config = config or PeerMemoryConfig()
        self._wall = wall_clock
        self._remembered: list[SavedPeer] = []
        self._last_written: bytes | None = None
        self.restored = asyncio.Event()
        """Set once the bootstrap from remembered peers has ended (or there
        was nothing to restore)."""
        self.saves = 0
        """Files written so far (tests and status)."""

    def __call__(self, daemon: Any) -> AbstractAsyncContextManager[None]:
        return self._run(daemon)

    def _load(self, path: Path) -> list[SavedPeer]:
        try:
            data = read_bytes_limited(path, self.config.max_file_bytes)
            return [] if data is None else decode_peers(data, self.config)
        except CorruptState as exc:
            # Overwritten by the next save; a node must start without it.
            log.warning("ignoring %s: %s", path, exc)
            return []

    async def save(self, kad: KadService, path: Path) -> bool:
        """Write the merged memory if it changed; True if written."""
        now = self._wall()
        peers = merge_peers(snapshot(kad, now), self._remembered, self.config, now,
                            kad.peer_id)
        body = encode_peers(peers, 0.0)
        if body == self._last_written:
            return False
        await asyncio.to_thread(atomic_write, path, encode_peers(peers, now), 0o600)
        self._last_written = body
        self._remembered = peers
        self.saves += 1
        return True

    async def _restore(self, kad: KadService, addrs: list[str]) -> None:
        try:
            await run_supervised(self._bootstrap(kad, addrs), "bootstrap from remembered peers",
                                 log)
        finally:
            self.restored.set()

    @staticmethod
    async def _bootstrap(kad: KadService, addrs: list[str]) -> None:
        result = await kad.bootstrap(addrs=addrs)
        log.info("bootstrap from remembered peers reached %d peers", len(result.closest))

    async def _save_job(self, kad: KadService, path: Path) -> None:
        await self.save(kad, path)

    async def _save_loop(self, kad: KadService, path: Path) -> None:
        while True:
            await asyncio.sleep(self.config.save_interval)
            await run_supervised(self._save_job(kad, path), "saving the peer memory", log)

    @asynccontextmanager
    async def _run(self, daemon: Any) -> AsyncIterator[None]:
        kad = self._dht.kad
        if kad is None:
            raise PeerStateError("the peer memory needs the DHT extension before it")
        path = Path(daemon.home.root) / self.config.file
        remove_stale_tmp(path.parent, (path.name,))
        self._remembered = self._load(path)
        for peer in self._remembered:
            kad.host.peerstore.add_addrs(peer.peer_id, [Multiaddr(a) for a in peer.addrs])
        addrs = bootstrap_addrs(self._remembered, kad.peer_id, skip=kad.config.bootstrap)
        if addrs:
            log.info("bootstrapping from %d remembered addresses", len(addrs))
        async with asyncio.TaskGroup() as group:
            restore = group.create_task(self._restore(kad, addrs)) if addrs else None
            if restore is None:
                self.restored.set()
            saver = group.create_task(self._save_loop(kad, path))
            try:
                yield
            finally:
                saver.cancel()
                if restore is not None:
                    restore.cancel()
                await run_supervised(self._save_job(kad, path), "saving the peer memory", log)
