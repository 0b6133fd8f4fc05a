"""Resolver behaviour against a scripted DHT: early answers, background
verification, trust on first use, negative caching, failures."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest

from overlay.identity import Ed25519PrivateKey
from overlay.kad.errors import InvalidRecord
from overlay.naming import NamingConfig, OwnerChanged
from overlay.naming.cache import CacheConfig
from overlay.naming.net_errors import NameNotFound, ResolveFailed
from overlay.naming.resolver import Resolver, ResolverConfig
from overlay.naming.resource_map_store import ResolverState
from overlay.naming.tracker import Answer
from tests.naming.helpers import BITS, NOW, key, record

NAMING = NamingConfig(pow_bits=BITS)


def _peer(index: int) -> bytes:
    return b"\x00\x24\x08\x01\x12\x20" + index.to_bytes(32, "big")


@dataclass
class ScriptedDht:
    """Answers come in the scripted order; ``gate`` (if set) holds back
    every answer after the first ``release_after`` until it is set."""

    script: list[Answer] = field(default_factory=list)
    gate: asyncio.Event | None = None
    release_after: int = 0
    lookups: int = 0
    started: asyncio.Event = field(default_factory=asyncio.Event)
    stored: list[tuple[bytes, bytes]] = field(default_factory=list)
    fail: Exception | None = None
    rtt: float | None = None

    async def get_value_answers(self, key: bytes, on_answer: Callable[[Answer], None], *,
                                timeout: float) -> None:
        self.lookups += 1
        self.started.set()
        if self.fail is not None:
            raise self.fail
        for index, answer in enumerate(self.script):
            if self.gate is not None and index == self.release_after:
                await self.gate.wait()
            on_answer(answer)
            await asyncio.sleep(0)  # let the resolver react between answers

    async def put_value(self, key: bytes, value: bytes, *, timeout: float,
                        peers: Sequence[bytes] | None = None) -> int:
        return 0

    async def store_at(self, peer: bytes, key: bytes, value: bytes) -> bool:
        self.stored.append((peer, value))
        return True

    def round_trip(self) -> float | None:
        return self.rtt

    async def wait_ready(self) -> None:
        return None


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def _resolver(dht: ScriptedDht, clock: Clock, quorum: int = 2) -> Resolver:
    state = ResolverState(None, NAMING, CacheConfig(negative_ttl=30.0))
    return Resolver(dht, state, NAMING, ResolverConfig(quorum=quorum, timeout=5.0), clock=clock)


async def test_early_answer_then_background_corrects_the_stale_responders() -> None:
    alice = key(1)
    new, old = record(alice, sequence=5).to_bytes(), record(alice, sequence=4).to_bytes()
    gate = asyncio.Event()
    dht = ScriptedDht([Answer(_peer(1), 1, new), Answer(_peer(2), 2, new),
                       Answer(_peer(3), 3, old), Answer(_peer(4), 4, None)],
                      gate=gate, release_after=2)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        got = await resolver.resolve("alice.ovl")
        assert got.source == "network" and not got.final and got.supporters == 2
        assert got.record.sequence == 5
        gate.set()
        await resolver.wait_idle()
        assert sorted(peer for peer, _ in dht.stored) == [_peer(3), _peer(4)]
        assert all(value == new for _, value in dht.stored)
        assert resolver.corrections_sent == 2


async def test_background_verification_replaces_a_wrong_early_answer() -> None:
    alice, mallory = key(1), key(666)
    real = record(alice).to_bytes()
    squat = record(mallory).to_bytes()
    gate = asyncio.Event()
    # Two far liars answer first; five closer honest nodes answer later.
    script = [Answer(_peer(90), 90, squat), Answer(_peer(91), 91, squat)]
    script += [Answer(_peer(i), i, real) for i in range(1, 6)]
    dht = ScriptedDht(script, gate=gate, release_after=2)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        early = await resolver.resolve("alice.ovl")
        assert early.record.owner == mallory.public_key().to_protobuf()
        gate.set()
        await resolver.wait_idle()
        assert resolver.background_fixes == 1
        fixed = await resolver.resolve("alice.ovl")
        assert fixed.source == "cache"
        assert fixed.record.owner == alice.public_key().to_protobuf()
        pin = resolver.state.pins.get("alice.ovl")
        assert pin is not None and pin.owner == alice.public_key().to_protobuf()
        assert sorted(p for p, _ in dht.stored) == [_peer(90), _peer(91)]


async def test_owner_change_before_the_pin_expires_is_an_error() -> None:
    alice, mallory = key(1), key(666)
    clock = Clock()
    dht = ScriptedDht([Answer(_peer(i), i, record(alice).to_bytes()) for i in range(1, 4)])
    async with asyncio.timeout(10), _resolver(dht, clock) as resolver:
        await resolver.resolve("alice.ovl")
        dht.script = [Answer(_peer(i), i, record(mallory).to_bytes()) for i in range(1, 4)]
        with pytest.raises(OwnerChanged):
            await resolver.resolve("alice.ovl", use_cache=False)
        cached = resolver.cached("alice.ovl")
        assert cached is not None and cached.record.owner == alice.public_key().to_protobuf()
        # After the pinned record expired, a new owner is accepted.
        clock.now = NOW + 3601
        dht.script = [Answer(_peer(i), i, record(mallory, expires=NOW + 7200).to_bytes())
                      for i in range(1, 4)]
        got = await resolver.resolve("alice.ovl")
        assert got.record.owner == mallory.public_key().to_protobuf()


async def test_negative_answers_are_cached_briefly() -> None:
    clock = Clock()
    dht = ScriptedDht([Answer(_peer(1), 1, None), Answer(_peer(2), 2, None)])
    async with asyncio.timeout(10), _resolver(dht, clock) as resolver:
        with pytest.raises(NameNotFound):
            await resolver.resolve("nobody.ovl")
        with pytest.raises(NameNotFound) as cached:
            await resolver.resolve("nobody.ovl")
        assert cached.value.cached and dht.lookups == 1
        clock.now += 31
        with pytest.raises(NameNotFound) as again:
            await resolver.resolve("nobody.ovl")
        assert not again.value.cached and dht.lookups == 2


async def test_failures_are_typed() -> None:
    dht = ScriptedDht([Answer(_peer(1), 1, failed=True)])
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        with pytest.raises(ResolveFailed):
            await resolver.resolve("alice.ovl")
        dht.fail = InvalidRecord("boom")
        with pytest.raises(ResolveFailed):
            await resolver.resolve("alice.ovl")
        # Forged answers only: not found, and nothing is cached as valid.
        forged = record(key(1)).to_bytes()[:-1] + b"\x00"
        dht.fail = None
        dht.script = [Answer(_peer(1), 1, forged)]
        with pytest.raises(NameNotFound):
            await resolver.resolve("alice.ovl")


async def test_a_slow_network_fails_when_too_few_answered_by_the_deadline() -> None:
    # Two of the three closest peers are still silent at the deadline.
    dht = ScriptedDht([Answer(_peer(2), 2, pending=True), Answer(_peer(3), 3, pending=True),
                       Answer(_peer(1), 1, None), Answer(_peer(2), 2, None)],
                      gate=asyncio.Event(), release_after=3)
    state = ResolverState(None, NAMING)
    resolver = Resolver(dht, state, NAMING, ResolverConfig(timeout=0.05), clock=Clock())
    async with asyncio.timeout(10), resolver:
        with pytest.raises(ResolveFailed, match="only 1 of the 3 closest peers answered"):
            await resolver.resolve("alice.ovl")


async def test_concurrent_resolves_share_one_lookup() -> None:
    alice = key(1)
    gate = asyncio.Event()
    dht = ScriptedDht([Answer(_peer(i), i, record(alice).to_bytes()) for i in range(1, 4)],
                      gate=gate, release_after=0)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(resolver.resolve("alice.ovl")) for _ in range(5)]
            await dht.started.wait()  # every resolve is waiting by now
            gate.set()
        results = [t.result() for t in tasks]
        assert dht.lookups == 1
        assert len({r.record.to_bytes() for r in results}) == 1


async def test_wait_final_ignores_a_stale_early_majority() -> None:
    alice = key(1)
    old, new = record(alice, sequence=1).to_bytes(), record(alice, sequence=2).to_bytes()
    gate = asyncio.Event()
    script = [Answer(_peer(i), i, old) for i in (10, 11)]
    script += [Answer(_peer(i), i, new) for i in (1, 2, 3)]
    dht = ScriptedDht(script, gate=gate, release_after=2)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        early = await resolver.resolve("alice.ovl", use_cache=False)
        assert early.record.sequence == 1 and not early.final
        dht.gate = asyncio.Event()  # the first lookup stays blocked on the old gate
        async with asyncio.TaskGroup() as group:
            task = group.create_task(resolver.resolve("alice.ovl", use_cache=False,
                                                      wait_final=True))
            dht.started.clear()
            await dht.started.wait()
            assert not task.done()
            dht.gate.set()
        final = task.result()
        assert final.final and final.record.sequence == 2 and final.supporters == 5


async def test_a_silent_responder_costs_at_most_the_timeout() -> None:
    alice = key(1)
    rec = record(alice).to_bytes()
    gate = asyncio.Event()
    # One record arrives, then a dead peer keeps the lookup open.
    dht = ScriptedDht([Answer(_peer(2), 2, pending=True), Answer(_peer(1), 1, rec),
                       Answer(_peer(2), 2, failed=True)],
                      gate=gate, release_after=2)
    state = ResolverState(None, NAMING)
    resolver = Resolver(dht, state, NAMING, ResolverConfig(quorum=3, timeout=0.05),
                        clock=Clock())
    async with asyncio.timeout(10), resolver:
        got = await resolver.resolve("alice.ovl")
        assert got.record.owner == alice.public_key().to_protobuf()
        assert not got.final and got.supporters == 1
        gate.set()
        await resolver.wait_idle()
        assert resolver.background_fixes == 0
        assert resolver.cached("alice.ovl") is not None


async def test_at_the_deadline_nobody_holding_it_is_a_definite_not_found() -> None:
    # Nine closest peers; the closest is dead and never answers, the lookup
    # is still waiting for it when the deadline comes.
    script = [Answer(_peer(i), i, pending=True) for i in range(1, 10)]
    script += [Answer(_peer(i), i, None) for i in range(2, 10)]
    dht = ScriptedDht(script, gate=asyncio.Event(), release_after=len(script))
    dht.script.append(Answer(_peer(1), 1, None))  # held back behind the gate
    state = ResolverState(None, NAMING)
    resolver = Resolver(dht, state, NAMING, ResolverConfig(quorum=4, timeout=0.2),
                        clock=Clock())
    async with asyncio.timeout(10), resolver:
        started = asyncio.get_running_loop().time()
        with pytest.raises(NameNotFound):
            await resolver.resolve("alice.ovl", wait_final=True)
        assert asyncio.get_running_loop().time() - started < 2.0


async def test_at_the_deadline_records_decide_and_are_final_despite_a_dead_peer() -> None:
    rec = record(key(1)).to_bytes()
    script = [Answer(_peer(i), i, pending=True) for i in range(1, 10)]
    script += [Answer(_peer(i), i, rec) for i in range(2, 10)]
    dht = ScriptedDht(script, gate=asyncio.Event(), release_after=len(script))
    dht.script.append(Answer(_peer(1), 1, None))
    state = ResolverState(None, NAMING)
    resolver = Resolver(dht, state, NAMING, ResolverConfig(quorum=4, timeout=0.2),
                        clock=Clock())
    async with asyncio.timeout(10), resolver:
        got = await resolver.resolve("alice.ovl", use_cache=False, wait_final=True)
        assert got.final and got.supporters == 8
        assert got.closest == tuple(_peer(i) for i in range(2, 10))


async def test_the_proof_of_work_budget_holds_across_chunks() -> None:
    from overlay.naming.errors import PowNotFound
    from overlay.naming.service import NameService, NameServiceConfig

    # One peer answers "nothing": the name is free, so the work starts.
    dht = ScriptedDht([Answer(_peer(1), 1, None)])
    config = NameServiceConfig(naming=NamingConfig(pow_bits=64), max_pow_iterations=150_000,
                               resolver=ResolverConfig(quorum=1, timeout=1.0))
    async with asyncio.timeout(30), NameService(key(1), dht, None, config) as names:
        with pytest.raises(PowNotFound, match="within 150000 attempts"):
            await names.register("work.ovl")
        assert names.owned() == []


def test_the_deadline_stretches_with_the_measured_round_trip() -> None:
    state = ResolverState(None, NAMING, CacheConfig(negative_ttl=30.0))
    config = ResolverConfig(timeout=1.5, rtt_factor=12.0, max_timeout=8.0)
    dht = ScriptedDht([])
    resolver = Resolver(dht, state, NAMING, config, clock=Clock())
    assert resolver.deadline() == 1.5  # nothing measured yet
    dht.rtt = 0.002  # loopback or LAN: the floor holds
    assert resolver.deadline() == 1.5
    dht.rtt = 0.25  # an intercontinental path: 12 round trips
    assert resolver.deadline() == 3.0
    dht.rtt = 2.0  # a pathological path is capped
    assert resolver.deadline() == 8.0


async def test_two_clients_resolve_one_name_and_the_first_hangs_up() -> None:
    # The case: two API clients resolve the same name at once and
    # the first hangs up (its request task is cancelled).  The merged
    # lookup is supervisor-owned, so the second still gets its answer.
    alice = key(1)
    gate = asyncio.Event()
    dht = ScriptedDht([Answer(_peer(i), i, record(alice).to_bytes()) for i in range(1, 4)],
                      gate=gate, release_after=0)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        first = asyncio.create_task(resolver.resolve("alice.ovl"))
        second = asyncio.create_task(resolver.resolve("alice.ovl"))
        await dht.started.wait()
        first.cancel()  # the first client hung up
        with pytest.raises(asyncio.CancelledError):
            await first
        gate.set()
        got = await second
        assert got.record.owner == alice.public_key().to_protobuf()
        assert dht.lookups == 1
        # The lookup filled the cache although its first caller left.
        assert (await resolver.resolve("alice.ovl")).source == "cache"


async def test_a_merged_resolve_error_reaches_every_caller() -> None:
    dht = ScriptedDht([Answer(_peer(1), 1, failed=True)], gate=asyncio.Event(), release_after=0)
    async with asyncio.timeout(10), _resolver(dht, Clock()) as resolver:
        tasks = [asyncio.create_task(resolver.resolve("alice.ovl")) for _ in range(3)]
        await dht.started.wait()
        tasks[0].cancel()
        assert dht.gate is not None
        dht.gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(isinstance(r, ResolveFailed) for r in results[1:])
        assert dht.lookups == 1


async def test_a_crashing_republisher_restarts_and_never_ends_its_owner() -> None:
    # A bug (or a full disk) in the naming service's background loop used
    # to fail its TaskGroup, which cancelled the daemon's main task.  Under
    # the supervisor it is logged and the loop starts again.
    from overlay.naming.service import NameService, NameServiceConfig

    restarted = asyncio.Event()

    class CrashingOnce(ScriptedDht):
        calls = 0

        async def wait_ready(self) -> None:
            CrashingOnce.calls += 1
            if CrashingOnce.calls == 1:
                raise KeyError("a bug in the first pass")
            restarted.set()

    dht = CrashingOnce([Answer(_peer(1), 1, None)])
    async with asyncio.timeout(30), NameService(key(1), dht, None) as names:
        await restarted.wait()
        # The service still answers, and this task was never cancelled.
        with pytest.raises(NameNotFound):
            await names.resolve("nobody.ovl")
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0


async def test_a_cancelled_registration_tells_its_hashing_thread_to_stop(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A worker thread cannot be cancelled: the stop event is how the proof
    # of work learns that nobody waits for it any more.
    import threading

    from overlay.naming import service as service_module
    from overlay.naming.service import NameService, NameServiceConfig

    entered = threading.Event()
    seen: list[threading.Event] = []
    real = service_module.solve_pow

    def solve(*args: object, stop: threading.Event, **kwargs: object) -> int:
        seen.append(stop)
        entered.set()
        stop.wait(30)  # hashing until told to stop
        return real(*args, stop=stop, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(service_module, "solve_pow", solve)
    dht = ScriptedDht([Answer(_peer(1), 1, None)])
    config = NameServiceConfig(naming=NamingConfig(pow_bits=64),
                               resolver=ResolverConfig(quorum=1, timeout=1.0))
    async with asyncio.timeout(30), NameService(key(1), dht, None, config) as names:
        register = asyncio.create_task(names.register("work.ovl"))
        await asyncio.to_thread(entered.wait, 30)
        register.cancel()
        with pytest.raises(asyncio.CancelledError):
            await register
        assert len(seen) == 1 and seen[0].is_set()
        assert names.owned() == []
