"""Moved to ``overlay.lab.delay`` (the lab side) and ``overlay.lab.forwarder``
(the program), since ``overlay demo --nat`` needs them in the package; this
name stays for the netns tests and tools, and still runs:

    python interop/netns/delay.py forward A_IF B_IF --delay-ms 20
    python -m overlay.lab.forwarder offload-off IF        # what the lab runs
"""

import sys

from overlay.lab.delay import *  # noqa: F401,F403
from overlay.lab.delay import SCRIPT  # noqa: F401
from overlay.lab.forwarder import forward, main, offload_off  # noqa: F401

__all__ = ["DelayedLink", "delayed_link", "forward", "main", "offload_off"]

if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
