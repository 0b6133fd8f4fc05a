"""The one supervisor boundary for background work.

Hosts, the DHT service and the DNS front run many small jobs on behalf of
remote peers.  A job that fails must cost only itself: expected failures
(a peer broke a protocol, a timeout, a socket error) are logged quietly, and
anything else — a bug — is logged with its traceback.  Cancellation always
propagates, so TaskGroups still shut down.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from overlay.errors import OverlayError

__all__ = ["run_supervised"]


async def run_supervised(job: Awaitable[None], what: str, log: logging.Logger) -> None:
    """Await ``job``; log instead of raising anything but cancellation."""
    try:
        await job
    except (OverlayError, TimeoutError, OSError) as exc:
        log.debug("%s ended: %r", what, exc)
    except Exception:  # the supervisor boundary: a bug ends this job only
        log.exception("%s failed", what)
