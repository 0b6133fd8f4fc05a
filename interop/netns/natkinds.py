"""Moved to ``overlay.lab.natkinds`` (``overlay demo --nat`` needs it in the
package); this name stays for the netns tests and tools."""

from overlay.lab.natkinds import *  # noqa: F401,F403
from overlay.lab.natkinds import TABLE, __all__  # noqa: F401
