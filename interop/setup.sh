#!/usr/bin/env bash
# Installs py-libp2p into its own virtualenv so that its dependency tree never
# mixes with ours. Idempotent: a venv already holding libp2p 0.8.x is reused.
#
# Usage: interop/setup.sh            (prints the venv's python on the last line)
# Env:   PYLIBP2P_VENV   override the venv directory
#        PYTHON          interpreter used to create the venv (default python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${PYLIBP2P_VENV:-$here/.venv-pylibp2p}"
python="${PYTHON:-python3}"
# 0.8.x is the line whose QUIC-v1 transport the interop peer is written against.
spec='libp2p>=0.8,<0.9'

# Reuse a venv only if it holds a libp2p inside the pinned range.
check='import importlib.metadata as m, libp2p, trio
v = tuple(int(p) for p in m.version("libp2p").split(".")[:2])
raise SystemExit(0 if (0, 8) <= v < (0, 9) else 1)'
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "$check" >/dev/null 2>&1; then
    echo "py-libp2p venv already present: $venv" >&2
else
    echo "creating py-libp2p venv at $venv" >&2
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet "$spec" >&2
    "$venv/bin/python" -c "$check" >&2
fi

version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("libp2p"))')"
echo "py-libp2p $version installed in $venv" >&2
echo "$venv/bin/python"
