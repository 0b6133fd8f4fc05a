"""Moved to ``overlay.lab.lab`` (``overlay demo --nat`` needs it in the
package); this name stays for the netns tests and tools."""

from overlay.lab.lab import *  # noqa: F401,F403
from overlay.lab.lab import (  # noqa: F401 - the private helpers the labs use
    Interface,
    __all__,
    _delete_namespace,
    _die_with_parent,
    _kill_namespace_processes,
    _run,
)
