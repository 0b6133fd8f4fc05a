"""The hole-punching matrix as a benchmark: every pair of NAT kinds, real daemons.

    sudo .venv/bin/python bench/punch_matrix.py --tries 10 --json punch_matrix.json
    sudo .venv/bin/python bench/punch_matrix.py --tries 3 --cells port-restr full:sym-rand
    sudo .venv/bin/python bench/punch_matrix.py --tries 2 --cells sym-rand:sym-seq --transfer-mb 10

The same command as ``interop/netns/punch_matrix.py`` (see its doc for what
a try is and what is recorded): 21 cells (each unordered pair of none, full
cone, restricted cone, port-restricted cone, sequential and random
symmetric), ``--tries`` fresh tries each, 20 ms on each NAT's WAN link by
default; ``--transfer-mb`` ends each try with an echo of that many MB.  Prints the table (markdown) and, with ``--json``, writes every
try.  The latest table is in docs/nat.md, "The punch matrix".

Needs root (``ip netns``, nft); otherwise it prints one line saying so (and
a JSON object with ``skipped``) and exits 0.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "interop"))  # `netns` lives in interop/, not in the package

from netns import LabUnavailable, ToolMissing, require_lab  # noqa: E402
from netns.punch_matrix import main  # noqa: E402

if __name__ == "__main__":
    try:
        require_lab()
    except (LabUnavailable, ToolMissing) as exc:
        print(f"punch matrix skipped: {exc}", file=sys.stderr)
        print(json.dumps({"skipped": str(exc)}))
        sys.exit(0)
    sys.exit(main(sys.argv[1:]))
