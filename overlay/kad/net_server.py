"""Serving inbound kad streams: several requests per stream, each decoded
with the 16 KiB limit and answered by a callback over the pure core.

A typed error from the peer's bytes or from the core (malformed message,
unknown type, invalid record, quota) resets that stream only and is
reported to ``on_reject``; nothing of the request is kept.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from overlay.errors import LimitExceeded, OverlayError, RemoteProtocolError, TransportError
from overlay.host.stream import NegotiatedStream
from overlay.identity import PeerId
from overlay.kad.messages import KadMessage
from overlay.kad.net_stream import read_kad_message, write_kad_message
from overlay.kad.service_config import KadServiceConfig

__all__ = ["Answer", "Reject", "KadInbound"]

log = logging.getLogger(__name__)

Answer = Callable[[KadMessage, PeerId], KadMessage | None]
"""Answer one request from a peer (raises typed errors to refuse it)."""
Reject = Callable[[PeerId, OverlayError], None]


class KadInbound:
    """The stream handler of a kad server."""

    def __init__(self, config: KadServiceConfig, answer: Answer, on_reject: Reject) -> None:
        self.config = config
        self._answer = answer
        self._reject = on_reject
        self._active = 0

    async def handle_stream(self, stream: NegotiatedStream) -> None:
        peer = stream.remote_peer
        if self._active >= self.config.max_inbound_streams:
            self._reject(peer, LimitExceeded("too many inbound kad streams"))
            stream.reset()
            return
        self._active += 1
        try:
            await self._serve(stream, peer)
        finally:
            self._active -= 1

    async def _serve(self, stream: NegotiatedStream, peer: PeerId) -> None:
        cfg = self.config
        try:
            for served in range(cfg.max_requests_per_stream + 1):
                async with asyncio.timeout(cfg.inbound_idle_timeout):
                    request = await read_kad_message(stream)
                if request is None:
                    await stream.close()
                    return
                if served == cfg.max_requests_per_stream:
                    break
                response = self._answer(request, peer)
                if response is not None:
                    await write_kad_message(stream, response)
            self._reject(peer, LimitExceeded("too many requests on one kad stream"))
            stream.reset()
        except (RemoteProtocolError, LimitExceeded) as exc:
            self._reject(peer, exc)
            stream.reset()
        except TimeoutError:
            stream.reset()
        except TransportError as exc:
            log.debug("kad stream from %s broke: %r", peer, exc)
            stream.reset()
