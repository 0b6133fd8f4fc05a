"""Moved to ``overlay.lab.matrix`` (``overlay demo --nat`` builds the same
network); this name stays for the punch matrix, the netns tests and
bench/bench_reachable.py."""

from overlay.lab.matrix import *  # noqa: F401,F403
from overlay.lab.matrix import __all__  # noqa: F401
