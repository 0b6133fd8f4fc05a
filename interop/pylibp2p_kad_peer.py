"""A py-libp2p Kademlia DHT node driven by the interop tests.

Run it with the python of the py-libp2p virtualenv (``interop/setup.sh``
prints it).  It listens on QUIC-v1, runs py-libp2p's ``KadDHT`` in server
mode on ``/ipfs/kad/1.0.0`` and registers a validator for the ``/v/``
namespace (the key must be ``/v/`` followed by the lowercase hex SHA-256 of
the value, as overlay's immutable records are).

It prints one JSON line ``{"peer_id", "addrs"}`` and then answers one JSON
line per command read from stdin:

``connect ADDR``       dial ``ADDR`` (with ``/p2p/``) and add the peer to the
                       routing table
``put KEY VALUE_HEX``  ``put_value``: store here and at the closest peers
``get KEY``            ``get_value`` after dropping any local copy, so the
                       answer comes from the network
``has KEY``            whether the local value store holds ``KEY``
``find_peer PEERID``   ``find_peer``: the addresses found (through the network
                       if the peer is neither in the table nor in the peerstore)
``provide KEY_HEX``     announce this node as a provider of the multihash
``providers KEY_HEX``   ``find_providers`` of the multihash
``table``              peer IDs in the routing table
``knows PEERID``       whether the peerstore has addresses of ``PEERID``
``quit``               stop (closing stdin does the same)

Every network operation is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import traceback
from typing import Any

import multiaddr
import trio

from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.peer.peerstore import PeerStoreError
from libp2p.records.validator import Validator
from libp2p.tools.anyio_service import background_trio_service

from pylibp2p_peer import LISTEN_ADDR, emit, fix_eof_race, host_summary, make_host, stdin_commands

OP_TIMEOUT = 30.0


class ImmutableValidator(Validator):
    """``/v/<sha256 hex of value>``, the same rule as overlay's validator."""

    def validate(self, key: str, value: bytes) -> None:
        if key != "/v/" + hashlib.sha256(value).hexdigest():
            raise ValueError("/v/ key is not the SHA-256 of the value")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


async def handle(host: Any, dht: KadDHT, cmd: str) -> dict[str, Any]:
    verb, _, rest = cmd.partition(" ")
    args = rest.split()
    if verb == "connect":
        info = info_from_p2p_addr(multiaddr.Multiaddr(args[0]))
        await host.connect(info)
        added = await dht.add_peer(info.peer_id, skip_server_mode_check=True)
        return {"connected": info.peer_id.to_base58(), "added": added}
    if verb == "put":
        await dht.put_value(args[0], bytes.fromhex(args[1]))
        return {"stored": True}
    if verb == "get":
        key = args[0].encode()
        dropped = dht.value_store.remove(key)
        value = await dht.get_value(args[0])
        return {"dropped_local": dropped, "value_hex": None if value is None else value.hex()}
    if verb == "has":
        return {"has": dht.value_store.get(args[0].encode()) is not None}
    if verb == "find_peer":
        found = await dht.find_peer(ID.from_base58(args[0]))
        return {"addrs": [] if found is None else [str(a) for a in found.addrs]}
    if verb == "provide":
        return {"provided": await dht.provide(args[0])}
    if verb == "providers":
        # Ask the network even if we are a provider ourselves.
        found = await dht.provider_store.find_providers(bytes.fromhex(args[0]), 20)
        return {"providers": [
            {"peer_id": info.peer_id.to_base58(), "addrs": [str(a) for a in info.addrs]}
            for info in found
        ]}
    if verb == "table":
        return {"peers": [p.to_base58() for p in dht.routing_table.get_peer_ids()]}
    if verb == "knows":
        try:
            addrs = host.get_peerstore().addrs(ID.from_base58(args[0]))
        except PeerStoreError:  # py-libp2p raises for peers it never heard of
            addrs = []
        return {"addrs": [str(a) for a in addrs]}
    return {"error": f"unknown command {cmd!r}"}


async def run(listen: str) -> int:
    host = make_host(listen)
    async with host.run(listen_addrs=[multiaddr.Multiaddr(listen)]):
        dht = KadDHT(host, DHTMode.SERVER)
        dht.register_validator("v", ImmutableValidator())
        async with background_trio_service(dht):
            emit(host_summary(host))
            async for cmd in stdin_commands():
                try:
                    with trio.fail_after(OP_TIMEOUT):
                        emit(await handle(host, dht, cmd))
                except Exception as exc:  # report, keep serving the test
                    emit({"error": repr(exc), "traceback": traceback.format_exc()})
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--listen", default=LISTEN_ADDR)
    parser.add_argument("--stock", action="store_true",
                        help="do not apply pylibp2p_peer's read/FIN race fix")
    args = parser.parse_args()
    if not args.stock:
        fix_eof_race()
    code = trio.run(run, args.listen)
    sys.stdout.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
