"""One message to many peers at once (PUT_VALUE, ADD_PROVIDER)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from overlay.errors import OverlayError
from overlay.kad.keyspace import Contact

__all__ = ["fan_out"]

log = logging.getLogger(__name__)


async def fan_out(
    send: Callable[[Contact], Awaitable[object]], peers: Sequence[Contact], what: str
) -> int:
    """Call ``send`` for every peer concurrently (each bounded by its own
    request timeout); return how many succeeded.  Failures are logged."""
    done = 0

    async def one(contact: Contact) -> None:
        nonlocal done
        try:
            await send(contact)
            done += 1
        except (OverlayError, TimeoutError, OSError) as exc:
            log.debug("%s to %s failed: %r", what, contact.peer_id, exc)

    async with asyncio.TaskGroup() as tg:
        for contact in peers:
            tg.create_task(one(contact))
    return done
