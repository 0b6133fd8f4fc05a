"""Moved to ``overlay.lab.topology`` (``overlay demo --nat`` needs the lab in
the package); this name stays for the netns tests and tools."""

from overlay.lab.topology import *  # noqa: F401,F403
from overlay.lab.topology import __all__  # noqa: F401
