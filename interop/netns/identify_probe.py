"""Ask a running daemon to identify one of its peers and print what came back.

    python identify_probe.py API_SOCKET PEER_ID

Opens ``/ipfs/id/1.0.0`` to PEER_ID through the daemon's stream API
(``stream_open``), so the request travels over the daemon's own connection,
and prints one JSON line: the peer's ``observed_addr`` for us (where it sees
the daemon's connection coming from), its ``agent_version`` and
``listen_addrs``.  Exit 0, or 1 with ``{"error": …}``.

The daemon API keeps the observed addresses that identify told it to itself
(no op returns them yet), so the tests ask the peer directly.
"""

from __future__ import annotations

import asyncio
import json
import sys

from overlay.daemon.client import ApiClient
from overlay.errors import OverlayError
from overlay.host.identify import parse_identify
from overlay.identity import PeerId
from overlay.wire import decode_uvarint

IDENTIFY = "/ipfs/id/1.0.0"
MAX_REPLY = 64 * 1024
TIMEOUT = 10.0


def _unframe(data: bytes) -> bytes:
    """Join the uvarint-framed messages of an identify reply."""
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        length, offset = decode_uvarint(data, offset)
        if offset + length > len(data):
            raise OverlayError("truncated identify frame")
        parts.append(data[offset:offset + length])
        offset += length
    return b"".join(parts)


async def probe(socket_path: str, peer: str) -> dict[str, object]:
    async with asyncio.timeout(TIMEOUT):
        client = await ApiClient.connect(socket_path)
        try:
            _, reader, writer = await client.stream_open([IDENTIFY], peer=peer)
        finally:
            await client.aclose()
        try:
            writer.write_eof()
            data = await reader.read(MAX_REPLY + 1)
            chunks = [data]
            total = len(data)
            while data and total <= MAX_REPLY:
                data = await reader.read(MAX_REPLY + 1 - total)
                chunks.append(data)
                total += len(data)
        finally:
            writer.close()
        if total > MAX_REPLY:
            raise OverlayError(f"identify reply larger than {MAX_REPLY} bytes")
    info = parse_identify(_unframe(b"".join(chunks)), PeerId.from_string(peer))
    return {
        "peer_id": peer,
        "observed_addr": str(info.observed_addr) if info.observed_addr else None,
        "agent_version": info.agent_version,
        "listen_addrs": [str(a) for a in info.listen_addrs],
    }


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(json.dumps({"error": "usage: identify_probe.py API_SOCKET PEER_ID"}))
        return 2
    try:
        result = asyncio.run(probe(argv[0], argv[1]))
    except (OverlayError, OSError, TimeoutError) as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
