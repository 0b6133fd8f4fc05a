"""Memory given back after a burst: the trim policy, the returner, the
system allocator the daemon re-executes under, and the trim itself."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from overlay.daemon.memory import MIB, MemoryReturner, TrimPolicy, malloc_trim
from tests.daemon.helpers import DaemonProcess


def test_policy_waits_for_the_burst_to_end_then_trims_once() -> None:
    policy = TrimPolicy(slack=32 * MIB, settle=5.0, min_interval=10.0)
    assert not policy.sample(0.0, 70 * MIB)  # the floor
    # Climbing: never while it grows.
    assert not policy.sample(1.0, 120 * MIB)
    assert not policy.sample(2.0, 200 * MIB)
    assert not policy.sample(4.0, 200 * MIB)  # flat, but not settled yet
    assert policy.sample(7.5, 199 * MIB)      # settled 5.5 s after the last growth
    policy.trimmed(90 * MIB)
    # Still above the floor, but a trim just ran: not again within 10 s.
    assert not policy.sample(12.0, 110 * MIB)
    assert not policy.sample(20.0, 95 * MIB)   # within slack of the floor: nothing to return
    assert policy.floor == 70 * MIB


def test_policy_never_trims_a_process_that_stays_small() -> None:
    policy = TrimPolicy(slack=32 * MIB, settle=1.0, min_interval=1.0)
    assert not any(policy.sample(float(t), (60 + t % 20) * MIB) for t in range(100))


def test_returner_counts_what_the_trim_gave_back() -> None:
    sizes = [70 * MIB, 200 * MIB, 200 * MIB, 80 * MIB]
    reads = iter(sizes)
    now = iter([0.0, 1.0, 20.0])
    trims: list[bool] = []

    def trim() -> bool:
        trims.append(True)
        return True

    returner = MemoryReturner(policy=TrimPolicy(settle=5.0, min_interval=10.0),
                              read_rss=lambda: next(reads), trim=trim, clock=lambda: next(now))
    assert not returner.check()          # 70: floor
    assert not returner.check()          # 200: growing
    assert returner.check()              # 200 at t=20: settled -> trim -> 80
    assert trims == [True]
    assert returner.trims == 1
    assert returner.returned_bytes == 120 * MIB
    assert returner.trimmed.is_set()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_trim_returns_freed_small_objects_under_the_system_allocator(tmp_path: Path) -> None:
    """What the daemon relies on: after a burst of small objects, of which
    every 200th survives, the system allocator plus malloc_trim gives most
    of the burst back (pymalloc's arenas would stay pinned)."""
    script = textwrap.dedent("""
        import sys
        from overlay.daemon.memory import malloc_trim, resident_bytes
        base = resident_bytes()
        burst = [bytearray(200) for _ in range(600_000)]
        survivors = burst[::200]
        peak = resident_bytes()
        del burst
        assert malloc_trim()
        after = resident_bytes()
        print(base, peak, after, len(survivors))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, env={"PYTHONMALLOC": "malloc", "PATH": "/usr/bin:/bin"},
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr
    base, peak, after, _ = map(int, out.stdout.split())
    grown = peak - base
    assert grown > 100 * MIB
    assert after - base < grown / 3, (base, peak, after)


def test_malloc_trim_is_harmless_in_this_process() -> None:
    assert malloc_trim() in (True, False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_daemon_runs_under_the_system_allocator_unless_opted_out(short_tmp: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    monkeypatch.delenv("PYTHONMALLOC", raising=False)
    monkeypatch.delenv("OVERLAY_ALLOCATOR", raising=False)
    with DaemonProcess(short_tmp / "a") as daemon:
        env = Path(f"/proc/{daemon.proc.pid}/environ").read_bytes().split(b"\0")
        assert b"PYTHONMALLOC=malloc" in env
    monkeypatch.setenv("OVERLAY_ALLOCATOR", "pymalloc")
    with DaemonProcess(short_tmp / "b") as daemon:
        env = Path(f"/proc/{daemon.proc.pid}/environ").read_bytes().split(b"\0")
        assert not any(item.startswith(b"PYTHONMALLOC=") for item in env)
