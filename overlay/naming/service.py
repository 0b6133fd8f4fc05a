"""The naming service of a node: publishing the names it owns, keeping them
alive, and resolving names (``Resolver``).

``async with NameService(key, dht, directory, config) as names:`` loads
the owned names, the resource map and the pins from ``directory``, starts
the resolver, and runs under its supervisor (``overlay.supervisor``):

- the republisher: every owned name is published again at start (a
  restarted daemon announces its names at once) and then whenever
  ``republish_fraction`` of its record's validity has passed, with a fresh
  sequence number, expiry and, for names pointing at this node, its
  current addresses.  A failed publication is retried with a growing delay;
- the flusher: cache and pin changes are written to disk shortly after
  they happen, and once more at shutdown.

Registration first resolves the name (one deadline-bounded lookup), proves
work over (name, owner key) in a worker thread, once per name, and PUTs the
record to the responders of that lookup.  The proof of work runs in chunks,
so cancelling a registration stops it within one chunk; ``on_publish`` marks
the point after which a registration is no longer cancelled (some storage
node may hold the record).  Updates, transfers and releases reuse the nonce.
After a release the next owner's records carry the RELEASE as proof
(``release_proof``) until it expires, for resolvers that pinned the
previous owner.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType

from overlay.errors import LocalProtocolError, OverlayError
from overlay.identity import PeerId, PrivateKey
from overlay.naming.builders import make_record, make_release, make_transfer
from overlay.naming.cache import CacheConfig
from overlay.naming.config import NamingConfig
from overlay.naming.errors import OwnerChanged
from overlay.naming.names import parse_name
from overlay.naming.net_errors import NameNotFound, NameTaken, NotOwner, PublishFailed
from overlay.naming.owned import (
    OWNED_FILE,
    OWNED_FORMAT,
    OWNED_VERSION,
    OwnedName,
    load_owned,
    owned_body,
)
from overlay.naming.policy import released_by
from overlay.naming.pow import (
    MAX_NONCE,
    PowNotFound,
    PowStopped,
    default_pow_budget,
    solve_pow,
    verify_pow,
)
from overlay.naming.record import NameRecord, PeerTarget, RecordKind, Service
from overlay.naming.resolver import DhtClient, Resolution, Resolver, ResolverConfig
from overlay.naming.resource_map_store import CACHE_FILE, PINS_FILE, ResolverState
from overlay.naming.validate import validate
from overlay.statefile import Snapshot, StateWriter, remove_stale_tmp
from overlay.supervisor import RestartPolicy, Supervisor

__all__ = ["NameService", "NameServiceConfig", "PublishResult", "Targets"]

log = logging.getLogger(__name__)

_POW_CHUNK = 1 << 16
"""Hashes per worker-thread call: about 50 ms, the latency of cancelling."""


@dataclass(frozen=True, slots=True)
class NameServiceConfig:
    """Publishing and resolution settings of one node."""

    naming: NamingConfig = field(default_factory=NamingConfig)
    """Zone, proof-of-work difficulty, record limits (network-wide)."""
    resolver: ResolverConfig = field(default_factory=ResolverConfig)
    """Quorum, timeouts and corrections of network resolves."""
    cache: CacheConfig = field(default_factory=CacheConfig)
    """Resource-map size, TTL cap and negative-answer TTL."""
    record_validity: float = 24 * 3600.0
    """Seconds each published record stays valid (at most the network's
    ``max_validity``)."""
    default_ttl: int = 300
    """Cache TTL put into records when the owner gives none."""
    republish_fraction: float = 0.5
    """Republish after this fraction of a record's validity."""
    retry_interval: float = 5.0
    """First delay before retrying a failed publication (doubles each time)."""
    max_retry_interval: float = 600.0
    """Longest delay between retries."""
    flush_delay: float = 1.0
    """Seconds cache and pin changes may wait before being written."""
    max_pow_iterations: int | None = None
    """Give up a proof of work after this many hashes (``PowNotFound``);
    None: 64 times the expected 2^pow_bits (``default_pow_budget``)."""
    max_owned: int = 1024
    """Names one node may own."""
    ready_timeout: float = 30.0
    """Seconds the first republication waits for the DHT to bootstrap."""
    publish_timeout: float = 1.5
    """Seconds the PUTs of one publication may take (and, when no lookup
    just ran, the lookup that finds the closest peers)."""

    def __post_init__(self) -> None:
        if not 60.0 <= self.record_validity <= self.naming.max_validity:
            raise ValueError("record_validity must be within 60 s and the network's max_validity")
        if not 0 <= self.default_ttl <= 0xFFFFFFFF:
            raise ValueError("default_ttl must fit 32 bits")
        if not 0.0 < self.republish_fraction < 1.0:
            raise ValueError("republish_fraction must be within (0, 1)")
        if not 0 < self.retry_interval <= self.max_retry_interval:
            raise ValueError("need 0 < retry_interval <= max_retry_interval")
        if self.flush_delay < 0 or self.max_owned < 1 or not self.ready_timeout > 0:
            raise ValueError("flush_delay must not be negative, max_owned and "
                             "ready_timeout positive")
        if not self.publish_timeout > 0:
            raise ValueError("publish_timeout must be positive")
        if self.max_pow_iterations is not None and self.max_pow_iterations < 1:
            raise ValueError("max_pow_iterations must be positive (or None)")


@dataclass(frozen=True, slots=True)
class Targets:
    """What a name points at.  ``None`` fields keep the previous value on
    update (and mean "nothing" on registration)."""

    self_peer: bool | None = None
    """Point at this node with its current addresses."""
    peers: tuple[PeerTarget, ...] | None = None
    ips: tuple[bytes, ...] | None = None
    services: tuple[Service, ...] | None = None
    txt: tuple[str, ...] | None = None
    ttl: int | None = None


@dataclass(frozen=True, slots=True)
class PublishResult:
    record: NameRecord
    stored: int
    """Storage nodes that accepted the record."""
    republish_at: float | None
    """When it will be republished (None once the name is given away)."""
    pow_seconds: float = 0.0
    """Time spent on the proof of work (registration only)."""


@dataclass(frozen=True, slots=True)
class _Claim:
    """What the network said before a registration."""

    transfer_proof: bytes = b""
    """A TRANSFER handing the name to us."""
    nonce: int | None = None
    """A proof of work we already paid for."""
    release_proof: bytes = b""
    """The previous owner's RELEASE."""
    closest: tuple[bytes, ...] = ()
    """The lookup's responders: where to publish."""


class NameService:
    def __init__(
        self,
        key: PrivateKey,
        dht: DhtClient,
        directory: Path | None,
        config: NameServiceConfig = NameServiceConfig(),
        *,
        self_addrs: Callable[[], tuple[bytes, ...]] = tuple,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``directory`` holds the state files (None: memory only);
        ``self_addrs`` returns this node's binary multiaddrs."""
        self._key = key
        self.owner = key.public_key().to_protobuf()
        self.peer_id = PeerId.from_public_key(key.public_key())
        self.dht = dht
        self.directory = directory
        self.config = config
        self._self_addrs = self_addrs
        self._clock = clock
        self.state = ResolverState(directory, config.naming, config.cache)
        self.resolver = Resolver(dht, self.state, config.naming, config.resolver, clock=clock)
        self._owned: dict[str, OwnedName] = {}
        self._failures: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._wake = asyncio.Event()
        # State files are written from worker threads, coalesced (STYLE rule
        # 16); a full disk is logged and retried, never fatal to the daemon.
        self._state_writer: StateWriter | None = None
        self._owned_writer: StateWriter | None = None
        if directory is not None:
            self._state_writer = StateWriter(self.state, "resource map and pins",
                                             interval=config.flush_delay)
            self.state.on_dirty = self._state_writer.mark_dirty
            self._owned_writer = StateWriter(
                Snapshot(directory / OWNED_FILE, OWNED_FORMAT, OWNED_VERSION,
                         lambda: owned_body(self._owned)), "owned names", interval=0.05)
        self._published = asyncio.Condition()
        self.republished = 0
        """Successful republications since start."""
        self._sup: Supervisor | None = None
        self.default_services: Callable[[], tuple[Service, ...]] | None = None
        """Services a new registration publishes besides those it names (the
        apps extension: this node's exposures, so a name registered after
        ``overlay expose`` carries them too)."""

    # -- lifetime -----------------------------------------------------------------

    async def __aenter__(self) -> NameService:
        if self._sup is not None:
            raise LocalProtocolError("a name service can be started once")
        now = self._clock()
        if self.directory is not None:
            # A crash mid-write leaves temporary files that nobody else removes.
            remove_stale_tmp(self.directory, (OWNED_FILE, CACHE_FILE, PINS_FILE))
        self.state.load(now)
        if self.directory is not None:
            self._owned = load_owned(self.directory / OWNED_FILE, self.owner, self.config.naming)
        # A restart announces every owned name again right away.
        self._owned = {name: replace(entry, republish_at=now)
                       for name, entry in self._owned.items()}
        await self.resolver.__aenter__()
        sup = self._sup = await Supervisor("naming", log).__aenter__()
        for writer in (self._state_writer, self._owned_writer):
            if writer is not None:
                await writer.__aenter__()
        # An unexpected error in the republisher (a bug, a full disk) is
        # logged and the loop restarts after back-off: never the daemon's end.
        sup.spawn(self._republisher, "naming republisher", restart=RestartPolicy())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        sup, self._sup = self._sup, None
        if sup is None:
            raise LocalProtocolError("the name service was not started")
        try:
            await sup.aclose()
        finally:
            await self.resolver.__aexit__(exc_type, exc, tb)
            self.state.mark_dirty()
            self._save_owned()
            # Each writer writes what is left, or logs that it cannot.
            for writer in (self._state_writer, self._owned_writer):
                if writer is not None:
                    await writer.__aexit__(None, None, None)

    # -- queries ------------------------------------------------------------------

    async def resolve(self, name: str, *, use_cache: bool = True,
                      wait_final: bool = False) -> Resolution:
        return await self.resolver.resolve(name, use_cache=use_cache, wait_final=wait_final)

    def owned(self) -> list[OwnedName]:
        return [self._owned[name] for name in sorted(self._owned)]

    def normalize(self, name: str) -> str:
        return parse_name(name, self.config.naming.zone).name

    async def wait_republished(self, count: int) -> None:
        """Until ``republished`` reaches ``count`` (tests)."""
        async with self._published:
            await self._published.wait_for(lambda: self.republished >= count)

    # -- publishing -----------------------------------------------------------------

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def _next_sequence(self, previous: int) -> int:
        # Wall-clock nanoseconds never go back across restarts (unlike a
        # counter restored from an old backup); +1 covers clock steps.
        return max(previous + 1, time.time_ns())

    def _expires(self, now: float) -> int:
        return int(now + self.config.record_validity)

    def _republish_at(self, now: float) -> float:
        return now + self.config.record_validity * self.config.republish_fraction

    def _self_target(self) -> PeerTarget:
        return PeerTarget(self.peer_id.to_bytes(), tuple(self._self_addrs()))

    def _build_peers(self, targets: Targets, previous: tuple[PeerTarget, ...]) -> tuple[
            tuple[PeerTarget, ...], bool]:
        others = targets.peers if targets.peers is not None else tuple(
            p for p in previous if p.peer_id != self.peer_id.to_bytes())
        own = targets.self_peer
        if own is None:
            own = any(p.peer_id == self.peer_id.to_bytes() for p in previous)
        peers = ((self._self_target(),) if own else ()) + tuple(
            p for p in others if p.peer_id != self.peer_id.to_bytes())
        return peers, own

    async def register(self, name: str, targets: Targets = Targets(), *,
                       on_publish: Callable[[], None] | None = None) -> PublishResult:
        """Claim ``name`` (or refresh it if this node owns it already).
        ``on_publish`` is called just before the record leaves this node;
        cancelling before then publishes nothing."""
        norm = self.normalize(name)
        async with self._lock(norm):
            if norm in self._owned:
                if on_publish is not None:
                    on_publish()
                return await self._update_locked(norm, targets)
            if len(self._owned) >= self.config.max_owned:
                raise LocalProtocolError(f"this node already owns {self.config.max_owned} names")
            parsed = parse_name(norm, self.config.naming.zone)
            if parsed.owner_peer is not None and parsed.owner_peer != self.peer_id:
                raise NotOwner(norm)
            claim = await self._claim(norm)
            nonce = claim.nonce
            pow_seconds = 0.0
            if nonce is None and not claim.transfer_proof and parsed.owner_peer is None:
                started = time.perf_counter()
                nonce = await self._solve_pow(norm)
                pow_seconds = time.perf_counter() - started
            peers, own = self._build_peers(targets, ())
            now = self._clock()
            record = make_record(
                self._key, norm, sequence=self._next_sequence(0), expires=self._expires(now),
                ttl=targets.ttl if targets.ttl is not None else self.config.default_ttl,
                peers=peers, ips=targets.ips or (),
                services=self._registration_services(targets.services or ()),
                txt=targets.txt or (), pow_nonce=nonce or 0,
                transfer_proof=claim.transfer_proof, release_proof=claim.release_proof)
            if on_publish is not None:
                on_publish()
            result = await self._publish(record, own, peers=claim.closest or None)
            return replace(result, pow_seconds=pow_seconds)

    def _registration_services(self, given: tuple[Service, ...]) -> tuple[Service, ...]:
        """``given`` plus the defaults whose protocol it does not name (an
        explicit ``--service http:9000`` wins over an exposed ``http``)."""
        if self.default_services is None:
            return given
        named = {s.protocol for s in given if not s.target}
        return given + tuple(s for s in self.default_services() if s.protocol not in named)

    async def _solve_pow(self, norm: str) -> int:
        """The proof of work in worker-thread chunks under an iteration cap
        (``PowNotFound`` past it).  A cancelled registration sets ``stop``,
        so the thread quits within one batch instead of finishing its chunk."""
        bits = self.config.naming.pow_bits
        budget = self.config.max_pow_iterations
        if budget is None:
            budget = default_pow_budget(bits)
        nonce = secrets.randbits(64)
        tried = 0
        stop = threading.Event()
        try:
            while True:
                chunk = min(_POW_CHUNK, budget - tried)
                if chunk <= 0:
                    raise PowNotFound(f"no nonce with {bits} zero bits within {tried} attempts")
                try:
                    return await asyncio.to_thread(solve_pow, norm, self.owner, bits, nonce,
                                                   chunk, stop=stop)
                except PowStopped:
                    raise
                except PowNotFound:
                    tried += chunk
                    nonce = (nonce + chunk) & MAX_NONCE
        finally:
            stop.set()  # a thread still hashing for a cancelled caller quits

    async def _claim(self, norm: str) -> _Claim:
        """Check the network before claiming: a transfer proof handed to us,
        a nonce we already paid for, or the previous owner's release;
        raises ``NameTaken``."""
        bits = self.config.naming.pow_bits
        try:
            found = await self.resolver.resolve(norm, use_cache=False, wait_final=True)
        except NameNotFound as exc:
            release = exc.release
            if release is None:
                return _Claim(closest=exc.closest)
            if release.owner == self.owner:
                # We released it ourselves: our nonce still proves the work.
                ours = release.pow_nonce if verify_pow(norm, self.owner, release.pow_nonce,
                                                       bits) else None
                return _Claim(nonce=ours, closest=exc.closest)
            return _Claim(release_proof=release.to_bytes(), closest=exc.closest)
        except OwnerChanged as exc:
            raise NameTaken(norm, _peer_text(exc.new_owner), exc.pinned_until) from None
        record = found.record
        if record.kind is RecordKind.TRANSFER and record.new_owner == self.owner:
            return _Claim(transfer_proof=record.to_bytes(), closest=found.closest)
        if record.owner == self.owner:
            # Our own record, published before this node lost its state.
            if record.transfer_proof:
                return _Claim(transfer_proof=record.transfer_proof, closest=found.closest)
            if verify_pow(norm, self.owner, record.pow_nonce, bits):
                return _Claim(nonce=record.pow_nonce, release_proof=record.release_proof,
                              closest=found.closest)
            return _Claim(closest=found.closest)
        raise NameTaken(norm, _peer_text(record.owner), record.expires)

    async def update(self, name: str, targets: Targets = Targets()) -> PublishResult:
        norm = self.normalize(name)
        async with self._lock(norm):
            return await self._update_locked(norm, targets)

    async def _update_locked(self, norm: str, targets: Targets) -> PublishResult:
        entry = self._owned.get(norm)
        if entry is None:
            raise NotOwner(norm)
        old = entry.record
        peers, own = self._build_peers(targets, old.peers)
        now = self._clock()
        record = make_record(
            self._key, norm, sequence=self._next_sequence(old.sequence),
            expires=self._expires(now), ttl=targets.ttl if targets.ttl is not None else old.ttl,
            peers=peers, ips=old.ips if targets.ips is None else targets.ips,
            services=old.services if targets.services is None else targets.services,
            txt=old.txt if targets.txt is None else targets.txt,
            pow_nonce=old.pow_nonce, transfer_proof=old.transfer_proof,
            release_proof=self._live_release_proof(old, now), kind=RecordKind.UPDATE)
        return await self._publish(record, own)

    @staticmethod
    def _live_release_proof(record: NameRecord, now: float) -> bytes:
        """The release proof while resolvers may still pin the previous
        owner: its pins end with that owner's records, which the RELEASE
        outlives."""
        proof = released_by(record)
        return record.release_proof if proof is not None and proof.expires > now else b""

    async def transfer(self, name: str, new_owner: PeerId) -> PublishResult:
        """Hand ``name`` to the key behind ``new_owner`` (whose peer ID
        must embed its key, as Ed25519 peer IDs do)."""
        norm = self.normalize(name)
        public = new_owner.extract_public_key()
        if public is None:
            raise LocalProtocolError(f"{new_owner} does not embed its public key")
        if new_owner == self.peer_id:
            raise LocalProtocolError("this node owns the name already")
        async with self._lock(norm):
            entry = self._owned.get(norm)
            if entry is None:
                raise NotOwner(norm)
            now = self._clock()
            record = make_transfer(self._key, norm, public,
                                   sequence=self._next_sequence(entry.record.sequence),
                                   expires=self._expires(now),
                                   pow_nonce=await self._own_nonce(entry.record))
            result = await self._publish(record, False, keep=False)
            return result

    async def release(self, name: str) -> PublishResult:
        norm = self.normalize(name)
        async with self._lock(norm):
            entry = self._owned.get(norm)
            if entry is None:
                raise NotOwner(norm)
            now = self._clock()
            # Outlive every earlier record so their replays stay refused.
            expires = max(entry.record.expires, int(now) + 60)
            expires = min(expires, int(now + self.config.naming.max_validity))
            record = make_release(self._key, norm,
                                  sequence=self._next_sequence(entry.record.sequence),
                                  expires=expires, pow_nonce=await self._own_nonce(entry.record))
            return await self._publish(record, False, keep=False)

    async def _own_nonce(self, record: NameRecord) -> int:
        """A nonce proving our own work for the name.  TRANSFER and RELEASE
        records cannot carry a transfer proof, so an owner that received
        the name pays for its own proof before handing it on or freeing it."""
        bits = self.config.naming.pow_bits
        if parse_name(record.name, self.config.naming.zone).owner_peer is not None:
            return 0
        if verify_pow(record.name, self.owner, record.pow_nonce, bits):
            return record.pow_nonce
        return await self._solve_pow(record.name)

    async def _publish(self, record: NameRecord, self_target: bool, *,
                       keep: bool = True, peers: tuple[bytes, ...] | None = None,
                       ) -> PublishResult:
        now = self._clock()
        validate(record, now, self.config.naming)  # a local bug must not reach the network
        stored = await self.dht.put_value(self.resolver.namespace.key_for(record.name),
                                          record.to_bytes(), peers=peers,
                                          timeout=self.config.publish_timeout)
        if stored < 1:
            raise PublishFailed(f"no storage node accepted the record for {record.name}")
        self.resolver.remember(record)
        republish_at: float | None = None
        if keep:
            republish_at = self._republish_at(now)
            self._owned[record.name] = OwnedName(record, self_target, now, republish_at, stored)
        else:
            self._owned.pop(record.name, None)
        self._failures.pop(record.name, None)
        self._save_owned()
        self._wake.set()
        if self._owned_writer is not None:
            # Acknowledged means on disk: the API answers after this write.
            await self._owned_writer.flush()
        return PublishResult(record, stored, republish_at)

    def _save_owned(self) -> None:
        if self._owned_writer is not None:
            self._owned_writer.mark_dirty()

    # -- background tasks ---------------------------------------------------------

    async def _republisher(self) -> None:
        # A restarted daemon republishes once its DHT can reach peers; a
        # bootstrap that never finishes must not hold the names back forever.
        try:
            async with asyncio.timeout(self.config.ready_timeout):
                await self.dht.wait_ready()
        except TimeoutError:
            log.info("the DHT is not bootstrapped after %.0f s; republishing anyway",
                     self.config.ready_timeout)
        while True:
            now = self._clock()
            for name in [n for n, e in self._owned.items() if e.republish_at <= now]:
                await self._republish(name)
            self._wake.clear()
            due = min((e.republish_at for e in self._owned.values()), default=None)
            delay = None if due is None else max(0.0, due - self._clock())
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _republish(self, name: str) -> None:
        async with self._lock(name):
            entry = self._owned.get(name)
            if entry is None or entry.republish_at > self._clock():
                return
            try:
                await self._update_locked(name, Targets())
            except (OverlayError, OSError, TimeoutError) as exc:
                failures = self._failures.get(name, 0) + 1
                self._failures[name] = failures
                delay = min(self.config.max_retry_interval,
                            self.config.retry_interval * 2 ** (failures - 1))
                log.info("republishing %s failed (%s); retrying in %.1f s", name, exc, delay)
                self._owned[name] = replace(entry, republish_at=self._clock() + delay)
                self._save_owned()
                return
        async with self._published:
            self.republished += 1
            self._published.notify_all()



def _peer_text(owner: bytes) -> str:
    from overlay.identity import public_key_from_protobuf

    try:
        return str(PeerId.from_public_key(public_key_from_protobuf(owner)))
    except OverlayError:
        return "another key"
