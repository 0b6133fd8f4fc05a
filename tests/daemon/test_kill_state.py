"""`overlay daemon` killed with SIGKILL at seeded random points while it
serves `dht put`, `dht provide` and `name register` through its API: every
acknowledged item is in its state files, every state file loads, and after
a restart no temporary file is left.  Bounded: four rounds."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from overlay.daemon.client import ApiClient
from overlay.daemon.ops_dht import provider_key
from overlay.errors import OverlayError
from overlay.identity import PeerId
from overlay.kad.persist import FileRecordStore, persist_providers
from overlay.kad.providers import ProviderConfig, ProviderStore
from overlay.kad.records import default_registry, immutable_key
from overlay.kad.store import StoreConfig
from overlay.naming.owned import OWNED_FORMAT, OWNED_VERSION
from overlay.statefile import read_state
from tests.daemon.helpers import DaemonProcess

pytestmark = pytest.mark.slow

SEED = 20261204
ROUNDS = 4


class Load:
    """Acknowledged items; ``done`` is set once ``kill_after`` were acked."""

    def __init__(self, kill_after: int, need_name: bool = False) -> None:
        self.kill_after = kill_after
        self.need_name = need_name
        """Kill only once a name registration was acknowledged too."""
        self.count = 0
        self.done = asyncio.Event()
        self.values: list[str] = []
        self.provides: list[str] = []
        self.names: list[str] = []

    def acked(self, bucket: list[str], item: str) -> None:
        bucket.append(item)
        self.count += 1
        if self.count >= self.kill_after and (self.names or not self.need_name):
            self.done.set()


async def _worker(api_path: Path, load: Load, kind: str, tag: str) -> None:
    """Issue ops until the daemon dies; a failed op is simply not acked."""
    try:
        async with await ApiClient.connect(api_path) as api:
            for n in range(200):
                item = f"{tag}-{kind}-{n}"
                try:
                    if kind == "put":
                        await api.call("dht_put", {"value": item})
                        load.acked(load.values, item)
                    elif kind == "provide":
                        await api.call("dht_provide", {"key": item})
                        load.acked(load.provides, item)
                    else:
                        name = f"k{tag}n{n}.ovl".replace("-", "")
                        await api.call("name_register", {"name": name})
                        load.acked(load.names, name)
                except OverlayError as exc:
                    print(f"{item}: {exc!r}")
                    if load.done.is_set():
                        return
    except (OverlayError, OSError, EOFError, asyncio.IncompleteReadError):
        return  # the daemon was killed under us


async def _wait_bootstrapped(api_path: Path) -> None:
    async with await ApiClient.connect(api_path) as api:
        if (await api.call("dht_table", {"min_size": 1, "wait": 30}))["size"] >= 1:
            return
    pytest.fail("the daemon never reached its bootstrap peer")


def _check_files(home: Path, peer: str, load: Load) -> None:
    now = time.time()
    records = FileRecordStore(home / "dht" / "records.log", StoreConfig(), default_registry(), now)
    for value in load.values:
        stored = records.get(immutable_key(value.encode()), now)
        assert stored is not None and stored.publisher is None, f"lost dht put {value}"
    providers = ProviderStore(ProviderConfig())
    persist_providers(providers, home / "dht" / "providers.log", now, lambda: None)
    me = PeerId.from_string(peer)
    for text in load.provides:
        assert me in [p.peer_id for p in providers.get(provider_key(text), now)], text
    owned_files = list(home.rglob("owned-names.json"))
    if load.names:
        assert len(owned_files) == 1
        found = read_state(owned_files[0], OWNED_FORMAT, (OWNED_VERSION,), 1 << 24)
        assert found is not None
        assert set(load.names) <= set(found[1]["names"]), "lost a registered name"


async def test_sigkill_under_load_loses_no_acknowledged_state(short_tmp: Path) -> None:
    rng = random.Random(SEED)
    print(f"seed {SEED}")
    intro = await asyncio.to_thread(DaemonProcess(short_tmp / "intro", "--dns", "off").start)
    home = short_tmp / "victim"
    total = Load(0)
    try:
        for round_ in range(ROUNDS):
            victim = await asyncio.to_thread(
                DaemonProcess(home, "--dns", "off", "--bootstrap", intro.addrs[0]).start)
            try:
                # Started: stale temporary files of the last kill are gone.
                assert not list(home.rglob("*.tmp")), list(home.rglob("*.tmp"))
                api_path = home / "api.sock"
                await _wait_bootstrapped(api_path)
                load = Load(rng.randint(3, 15), need_name=round_ % 2 == 0)
                async with asyncio.timeout(120):
                    async with asyncio.TaskGroup() as group:
                        for n, kind in enumerate(("put", "provide", "put", "provide", "name")):
                            group.create_task(_worker(api_path, load, kind, f"{round_}w{n}"))
                        await load.done.wait()
                        victim.proc.kill()  # SIGKILL while the other ops are in flight
                        await asyncio.to_thread(victim.proc.wait, 10)
                peer = victim.peer_id
            finally:
                victim.kill()
            total.values += load.values
            total.provides += load.provides
            total.names += load.names
            _check_files(home, peer, total)
        # A last clean start: every file loads in the daemon itself, no tmp left.
        with DaemonProcess(home, "--dns", "off", "--bootstrap", intro.addrs[0]):
            assert not list(home.rglob("*.tmp"))
    finally:
        intro.kill()
    print(f"acknowledged: {len(total.values)} puts, {len(total.provides)} provides, "
          f"{len(total.names)} names")
    assert total.values and total.provides and total.names
