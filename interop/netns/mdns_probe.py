"""Run one ``MdnsService`` inside a lab namespace and report as JSON lines.

    python mdns_probe.py IP SECONDS

Announces a fresh peer ID at ``/ip4/IP/udp/4001/quic-v1`` and prints
``{"event": "up", "peer_id": …, "name": …}``, then one ``found`` line per
sighting; it stops at SIGTERM (or after SECONDS) and prints ``{"event":
"done", "zeroconf_tasks": N}``: how many zeroconf tasks were still alive
after the service closed (must be 0).
Run it only inside a namespace: it multicasts.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys

from multiaddr import Multiaddr

from overlay.identity import Ed25519PrivateKey, PeerId
from overlay.mdns.driver import MdnsService, zeroconf_tasks
from overlay.mdns.records import Sighting


def _say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def main(ip: str, seconds: float) -> None:
    peer = PeerId.from_public_key(Ed25519PrivateKey.generate().public_key())
    addrs = [Multiaddr(f"/ip4/{ip}/udp/4001/quic-v1")]
    found: set[str] = set()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)

    def on_found(name: str, sighting: Sighting) -> None:
        found.add(str(sighting.peer_id))
        _say(event="found", name=name, peer_id=str(sighting.peer_id),
             addrs=[str(a) for a in sighting.addrs])

    def on_gone(name: str) -> None:
        _say(event="gone", name=name)

    async with MdnsService(peer, lambda: addrs, on_found, on_gone) as service:
        _say(event="up", peer_id=str(peer), name=service.instance_name,
             active=service.active, interfaces=service.interfaces,
             zeroconf_tasks=len(zeroconf_tasks()))
        try:
            async with asyncio.timeout(seconds):
                await stop.wait()
        except TimeoutError:
            pass
    _say(event="done", found=sorted(found), zeroconf_tasks=len(zeroconf_tasks()))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
