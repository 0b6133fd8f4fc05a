"""Fixtures shared by the py-libp2p interop tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parent / "setup.sh"
# Only these mean "this machine cannot reach a package index"; any other
# setup failure is a real failure and must not turn into a skip.
OFFLINE_MARKERS = (
    "Temporary failure in name resolution",
    "Name or service not known",
    "Network is unreachable",
    "NewConnectionError",
    "Failed to establish a new connection",
    "No route to host",
)


@pytest.fixture(scope="session")
def pylibp2p_python() -> str:
    """Path of the python inside the py-libp2p venv, creating it if needed."""
    try:
        proc = subprocess.run(
            ["bash", str(SETUP)], capture_output=True, text=True, timeout=900, check=False
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"interop/setup.sh did not finish in {exc.timeout}s")
    if proc.returncode != 0:
        output = proc.stdout + proc.stderr
        if any(marker in output for marker in OFFLINE_MARKERS):
            pytest.skip(f"py-libp2p cannot be installed: no network\n{output[-2000:]}")
        pytest.fail(f"interop/setup.sh failed ({proc.returncode}):\n{output[-4000:]}")
    python = proc.stdout.strip().splitlines()[-1]
    assert Path(python).is_file(), f"setup.sh printed {python!r}, not a python"
    return python
