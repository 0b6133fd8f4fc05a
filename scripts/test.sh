#!/usr/bin/env bash
# The test command: installs what the suite needs, then runs it.
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# As root, the system tools the multi-host and DNS tests drive are
# apt-installed when missing (nft for NAT between network namespaces, ip for
# the namespaces themselves, dig as an independent DNS client, zsh and fish
# to run the completion scripts, coturn's turnserver and conntrack for the
# STUN tests, curl for the proxy tests in tests/apps, headless chromium
# for the browser test, iperf3 for throughput over virtual IPs), so a missing
# tool is never a silent skip.  Without root nothing is installed: the
# namespace tests skip with that reason and a missing dig fails its test with
# the package to install.  The venv .venv is created when missing; pytest
# runs with the given arguments (the whole suite without any), then mypy
# --strict.  The exit status is non-zero if either fails.
set -uo pipefail
cd "$(dirname "$0")/.."

missing_tools() {
    local tool
    for tool in nft dig ip zsh fish turnserver conntrack curl chromium iperf3; do
        command -v "$tool" >/dev/null 2>&1 || echo "$tool"
    done
}

if [ -n "$(missing_tools)" ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "== installing system test tools (missing: $(missing_tools | tr '\n' ' '))"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null \
            && apt-get install -y -qq nftables bind9-dnsutils iproute2 zsh fish coturn conntrack curl chromium iperf3 >/dev/null \
            || { echo "scripts/test.sh: apt-get could not install nftables bind9-dnsutils iproute2 zsh fish coturn conntrack curl chromium iperf3" >&2; exit 1; }
    else
        echo "== not root (or no apt-get): not installing $(missing_tools | tr '\n' ' ')" >&2
    fi
fi

if [ ! -x .venv/bin/python ]; then
    echo "== creating .venv"
    python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]' \
        || { echo "scripts/test.sh: could not create the venv .venv" >&2; exit 1; }
fi

bash interop/js/setup.sh >/dev/null || echo "scripts/test.sh: interop/js/setup.sh failed (js-libp2p); interop/test_jslibp2p.py reports why" >&2

status=0
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" || status=$?

echo "== mypy --strict overlay/"
.venv/bin/mypy || status=$?

exit "$status"
