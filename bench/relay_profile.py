"""``bench_relay.py`` under cProfile in all three processes, timed in CPU time.

    .venv/bin/python bench/relay_profile.py --mb 30 --rounds 1 --profile /tmp/relayprof
    .venv/bin/python bench/relay_profile.py --show /tmp/relayprof [--top 30]

Same arguments as ``bench_relay.py``.  Its own ``--profile`` times functions
by the wall clock, which on a loaded machine charges a function for the
time the process waited for a core; here every profile (the relay, the
target and, unlike there, the sender) uses ``time.process_time``, and the
sender's is written to ``DIR/sender.pstats``.  Figures under a profiler are
not comparable with unprofiled runs; compare profiles with profiles.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import multiprocessing.connection
import os
import pstats
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_relay as br  # noqa: E402


def child_main_cpu(role: str, pipe: multiprocessing.connection.Connection,
                   args: argparse.Namespace) -> None:
    main = br._relay_main if role == "relay" else br._target_main
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        asyncio.run(main(pipe, args))
    finally:
        profile.disable()
        profile.dump_stats(os.path.join(args.profile, f"{role}.pstats"))


def show(directory: str, top: int) -> None:
    for role in ("sender", "relay", "target"):
        path = os.path.join(directory, f"{role}.pstats")
        if not os.path.exists(path):
            continue
        print(f"===== {role}", file=sys.stderr)
        stats = pstats.Stats(path, stream=sys.stderr)
        stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    if "--show" in sys.argv:
        parser = argparse.ArgumentParser()
        parser.add_argument("--show", required=True)
        parser.add_argument("--top", type=int, default=30)
        args = parser.parse_args()
        show(args.show, args.top)
        return
    if "--profile" not in sys.argv:
        raise SystemExit("--profile DIR is required")
    directory = sys.argv[sys.argv.index("--profile") + 1]
    os.makedirs(directory, exist_ok=True)
    original = br.sender

    async def profiled_sender(*a: Any) -> dict[str, Any]:
        profile = cProfile.Profile(time.process_time)
        profile.enable()
        try:
            return await original(*a)
        finally:
            profile.disable()
            profile.dump_stats(os.path.join(directory, "sender.pstats"))

    br.child_main = child_main_cpu  # type: ignore[assignment]
    br.sender = profiled_sender  # type: ignore[assignment]
    br.main()


if __name__ == "__main__":
    main()
