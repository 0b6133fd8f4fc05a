"""Network-namespace labs: hosts, routers, switches, veth links and nftables
NAT built per test and deleted afterwards (see README.md here).  The lab
lives in ``overlay.lab``; this package keeps its old names for the netns
tests and tools."""

from overlay.lab import *  # noqa: F401,F403
from overlay.lab import __all__  # noqa: F401
