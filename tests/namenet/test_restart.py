"""A node that restarts keeps its names, republishes them, and keeps its
resource map and owner pins."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

from overlay.identity import Ed25519PrivateKey
from overlay.naming.owned import OWNED_FILE
from overlay.naming.resource_map_store import CACHE_FILE, PINS_FILE
from overlay.naming.service import Targets
from tests.namenet.helpers import name_network, start_name_node


async def test_restarted_owner_keeps_and_republishes_its_names(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    async with asyncio.timeout(90), name_network(4) as nodes:
        intro = nodes[0].addr
        owner = await start_name_node(key=key, directory=tmp_path, bootstrap=(intro,))
        try:
            first = await owner.names.register("bob.ovl", Targets(self_peer=True, txt=("x",)))
            old_addrs = {a.to_bytes() for a in owner.host.listen_addrs()}
        finally:
            await owner.stop()
        saved = json.loads((tmp_path / OWNED_FILE).read_text())
        assert list(saved["names"]) == ["bob.ovl"]
        assert stat.S_IMODE((tmp_path / OWNED_FILE).stat().st_mode) == 0o600

        owner = await start_name_node(key=key, directory=tmp_path, bootstrap=(intro,))
        try:
            assert [o.record.name for o in owner.names.owned()] == ["bob.ovl"]
            await owner.names.wait_republished(1)
            latest = owner.names.owned()[0]
            assert latest.record.sequence > first.record.sequence
            new_addrs = {a.to_bytes() for a in owner.host.listen_addrs()}
            assert new_addrs != old_addrs  # port 0 gave the new process another port
            got = await nodes[2].names.resolve("bob.ovl", use_cache=False, wait_final=True)
            assert got.record.sequence == latest.record.sequence
            assert set(got.record.peers[0].addrs) == new_addrs
            assert got.record.txt == ("x",)
        finally:
            await owner.stop()


async def test_resource_map_and_pins_survive_a_restart(tmp_path: Path) -> None:
    async with asyncio.timeout(60), name_network(4) as nodes:
        await nodes[1].names.register("carol.ovl", Targets(txt=("c",)))
        key = Ed25519PrivateKey.generate()
        reader = await start_name_node(key=key, directory=tmp_path, bootstrap=(nodes[0].addr,))
        try:
            got = await reader.names.resolve("carol.ovl")
            assert got.source == "network"
        finally:
            await reader.stop()
        for name in (CACHE_FILE, PINS_FILE):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        # No bootstrap: the answer can only come from the persisted cache.
        reader = await start_name_node(key=key, directory=tmp_path)
        try:
            again = await reader.names.resolve("carol.ovl")
            assert again.source == "cache"
            assert again.record == got.record
            pin = reader.names.state.pins.get("carol.ovl")
            assert pin is not None and pin.owner == got.record.owner
        finally:
            await reader.stop()
