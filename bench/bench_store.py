"""Cost of a remote PUT_VALUE on the event loop, at 1k/5k/10k records.

Baseline (same run): the version 1 store, which rewrote and fsynced the
whole store as one JSON document on every put.  Measured: the journaled
store (``overlay.kad.persist``) behind a ``StateWriter``, as the daemon
runs it: the put itself on the loop, the coalesced append + fsync in a
worker thread.  Reported per size: the loop time of one put (median and
max) for both, their ratio, the largest loop lag seen by a 1 ms ticker
while ``--puts`` puts are served, and the loop lag while a compaction of
the whole store runs in the worker thread.

Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python bench/bench_store.py --sizes 1000 5000 10000 --puts 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from overlay.fsutil import atomic_write
from overlay.kad.keyspace import fake_peer_id
from overlay.kad.persist import FileRecordStore, encode_entry
from overlay.kad.records import Record, default_registry, immutable_key
from overlay.kad.store import MemoryRecordStore, StoreConfig
from overlay.statefile import StateWriter

VALUE_BYTES = 10 * 1024 - 100
NOW = 1_764_864_000.0


def _record(n: int) -> Record:
    value = (b"%08d" % n) + b"x" * (VALUE_BYTES - 8)
    return Record(immutable_key(value), value)


class FullRewriteStore(MemoryRecordStore):
    """The version 1 behaviour: every put rewrites the whole file."""

    def __init__(self, path: Path, config: StoreConfig) -> None:
        super().__init__(config, default_registry())
        self.path = path

    def put(self, record: Record, publisher: Any, now: float,
            source: str | None = None) -> Any:
        stored = super().put(record, publisher, now, source)
        entries = [encode_entry(s) for s in self]
        data = json.dumps({"version": 1, "records": entries}, sort_keys=True)
        atomic_write(self.path, data.encode(), 0o600)
        return stored


def _fill(store: MemoryRecordStore, size: int, rng: random.Random) -> None:
    for n in range(size):
        MemoryRecordStore.put(store, _record(n), fake_peer_id(rng), NOW)


async def _lag_monitor(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        start = loop.time()
        await asyncio.sleep(0.001)
        lags.append(loop.time() - start - 0.001)


async def _serve(store: MemoryRecordStore, puts: int, base: int,
                 rng: random.Random) -> tuple[list[float], float]:
    stop = asyncio.Event()
    lags: list[float] = []
    async with asyncio.TaskGroup() as group:
        group.create_task(_lag_monitor(stop, lags))
        costs = []
        for n in range(base, base + puts):
            started = time.perf_counter()
            store.put(_record(n), fake_peer_id(rng), NOW)
            costs.append(time.perf_counter() - started)
            await asyncio.sleep(0)  # the next request comes in a later loop turn
        stop.set()
    return costs, max(lags, default=0.0)


async def measure(size: int, puts: int, directory: Path) -> dict[str, Any]:
    rng = random.Random(size)
    cfg = StoreConfig(max_records=size + 10 * puts, max_records_per_peer=10,
                      max_records_per_source=size + 10 * puts)
    old = FullRewriteStore(directory / f"old-{size}.json", cfg)
    _fill(old, size, rng)
    print(f"size {size}: full rewrite", file=sys.stderr)
    old_costs, old_lag = await _serve(old, puts, 10 * size, rng)

    new = FileRecordStore(directory / f"new-{size}.log", cfg, default_registry(), NOW)
    writer = StateWriter(new.journal, "bench records", interval=0.2)
    new.on_change = writer.mark_dirty
    async with writer:
        _fill(new, size, rng)
        new.journal.compact_soon()
        writer.mark_dirty()
        await writer.flush()  # the initial snapshot is not what we measure
        print(f"size {size}: journal", file=sys.stderr)
        new_costs, new_lag = await _serve(new, puts, 20 * size, rng)
        flush_started = time.perf_counter()
        await writer.flush()
        flush_s = time.perf_counter() - flush_started
        # A compaction rewrites the store from the worker thread; the loop
        # only shares the GIL with its encoding meanwhile.
        new.journal.compact_soon()
        writer.mark_dirty()
        stop, lags = asyncio.Event(), []
        compact_started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            group.create_task(_lag_monitor(stop, lags))
            await writer.flush()
            stop.set()
        compact_s = time.perf_counter() - compact_started
    old_ms = statistics.median(old_costs) * 1000
    new_ms = statistics.median(new_costs) * 1000
    return {
        "records": size,
        "full_rewrite_put_ms_p50": round(old_ms, 3),
        "full_rewrite_put_ms_max": round(max(old_costs) * 1000, 3),
        "journal_put_ms_p50": round(new_ms, 3),
        "journal_put_ms_max": round(max(new_costs) * 1000, 3),
        "ratio_p50": round(old_ms / new_ms, 1) if new_ms else None,
        "full_rewrite_loop_lag_ms_max": round(old_lag * 1000, 1),
        "journal_loop_lag_ms_max": round(new_lag * 1000, 1),
        "journal_final_flush_ms": round(flush_s * 1000, 1),
        "compaction_ms": round(compact_s * 1000, 1),
        "compaction_loop_lag_ms_max": round(max(lags, default=0.0) * 1000, 1),
        "journal_writes": writer.writes,
    }


async def main(sizes: list[int], puts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        results = [await measure(size, puts, Path(tmp)) for size in sizes]
    return {"bench": "store", "puts": puts, "value_bytes": VALUE_BYTES, "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000])
    parser.add_argument("--puts", type=int, default=50)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(main(args.sizes, args.puts)), indent=1))
