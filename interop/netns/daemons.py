"""The pytest side of the lab's daemons: the ``lab`` fixture's body.  The
daemon helpers moved to ``overlay.lab.daemons`` (``overlay demo --nat`` uses
them) and are re-exported here under their old names.

    @pytest.fixture
    def lab() -> Iterator[Lab]:
        yield from lab_for_test()

    a = start_daemon(lab, topo.server, topo.server_ip, "--dns", "off")
    peers = overlay_json(lab, a, "peers")["peers"]
    stop_daemons(a)
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence

import pytest

from netns.lab import Lab, LabUnavailable, ToolMissing, lab_namespaces, require_lab
from overlay.lab.daemons import *  # noqa: F401,F403
from overlay.lab.daemons import __all__ as _moved

__all__ = [*_moved, "check_lab", "lab_for_test"]


# -- the lab ------------------------------------------------------------------

def check_lab(tools: Sequence[tuple[str, str]] = ()) -> None:
    """Skip without root; fail, in one clear line, when ``ip``/``nft`` or
    one of ``tools`` ((command, Debian package) pairs) is missing."""
    missing: ToolMissing | None = None
    try:
        require_lab()
    except LabUnavailable as exc:
        pytest.skip(str(exc))
    except ToolMissing as exc:
        missing = exc
    for tool, package in tools:
        if missing is None and shutil.which(tool) is None:
            missing = ToolMissing(f"`{tool}` is missing: apt-get install -y {package}")
    if missing is not None:  # outside the except block: one clear line, no chained traceback
        pytest.fail(str(missing), pytrace=False)


def lab_for_test(tools: Sequence[tuple[str, str]] = ()) -> Iterator[Lab]:
    """The body of a ``lab`` fixture: ``check_lab``, a ``Lab`` for the test,
    and afterwards no namespace of it may be left."""
    check_lab(tools)
    with Lab() as built:
        yield built
    left = [name for name in lab_namespaces() if name.startswith(built.run_id)]
    assert not left, f"namespaces left behind: {left}"


