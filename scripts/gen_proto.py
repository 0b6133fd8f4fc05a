#!/usr/bin/env python3
"""Regenerate overlay/wire/pb/*_pb2.py and *_pb2.pyi from the .proto files.

Run from anywhere: ``python scripts/gen_proto.py``.  ``--check`` regenerates
into a temporary directory and exits 1 if the checked-in modules differ
(tests/wire/test_proto_current.py runs that).  Needs the ``test`` extra
(grpcio-tools and mypy-protobuf).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PB_DIR = ROOT / "overlay" / "wire" / "pb"


def generate(out_dir: Path) -> list[Path]:
    protos = sorted(PB_DIR.glob("*.proto"))
    if not protos:
        return []
    bin_dir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    # Generated imports must be package-qualified, so compile relative to ROOT.
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        *[str(p.relative_to(ROOT)) for p in protos],
    ]
    subprocess.run(cmd, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    gen = out_dir / "overlay" / "wire" / "pb"
    return sorted(p for p in gen.iterdir() if p.suffix in (".py", ".pyi"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        produced = generate(Path(tmp))
        stale = []
        for path in produced:
            dest = PB_DIR / path.name
            if args.check:
                if not dest.exists() or not filecmp.cmp(path, dest, shallow=False):
                    stale.append(path.name)
            else:
                shutil.copyfile(path, dest)
        if args.check:
            expected = {p.name for p in produced}
            extra = [
                p.name
                for p in PB_DIR.iterdir()
                if p.name.endswith(("_pb2.py", "_pb2.pyi")) and p.name not in expected
            ]
            stale += extra
            if stale:
                print("stale generated protobuf modules: " + ", ".join(sorted(stale)))
                print("run: python scripts/gen_proto.py")
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
