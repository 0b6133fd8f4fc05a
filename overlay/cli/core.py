"""`overlay init | daemon | id | peers | connect | ping | demo`: the node
itself (the first two run locally, `demo` runs its own network)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from overlay.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Parents,
    UsageError,
    add_command,
    call_api,
    plural,
    print_json,
    run_api,
    setup_logging,
    strip_reply,
)
from overlay.cli.nat import stun_server_arg
from overlay.cli.progress import SlowWait
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.daemon.schema import PING_COUNT_MAX, argparse_type, check_protocol_id, cli_type
from overlay.errors import ConfigError, InvalidMultiaddr

__all__ = ["add_core_parsers", "peer_id_arg", "bounded_int", "bounded_float", "MAX_PING_COUNT"]

MAX_PING_COUNT = PING_COUNT_MAX
"""The daemon's limit (``NodeOpsConfig.max_ping_count``)."""


def _multiaddr_arg(text: str) -> str:
    from overlay.multiaddrs import parse_quic_multiaddr

    try:
        parse_quic_multiaddr(text)
    except InvalidMultiaddr as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


def peer_id_arg(text: str) -> str:
    """An argparse type: a peer ID (base58btc or CIDv1 text)."""
    from overlay.identity import PeerId

    try:
        PeerId.from_string(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is not a peer ID ({exc})") from None
    return text


_protocol_id = argparse_type(check_protocol_id, "protocol ID")


def _connect_target(text: str) -> str:
    """A multiaddr some transport dials (QUIC, or `…/p2p/RELAY/p2p-circuit/p2p/PEERID`),
    or `/p2p/PEERID` alone (the daemon asks the DHT)."""
    from overlay.multiaddrs import dial_target_error

    parts = text.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[1] == "p2p":
        peer_id_arg(parts[2])
        return text
    error = dial_target_error(text)
    if error is not None:
        raise argparse.ArgumentTypeError(error)
    return text


def _target_fields(addr: str) -> dict[str, str]:
    """`/p2p/PEERID` alone becomes the op's `peer` field; the daemon then
    dials what it knows or what the DHT finds."""
    parts = addr.split("/")
    if len(parts) == 3 and parts[0] == "" and parts[1] == "p2p":
        return {"peer": parts[2]}
    return {"addr": addr}


def bounded_int(low: int, high: int, what: str = "") -> Any:
    """An argparse type: an integer from ``low`` to ``high``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is out of range: {what}{low} to {high}")
        return value

    return parse


def bounded_float(low: float, high: float, unit: str = "seconds") -> Any:
    """An argparse type: a finite number from ``low`` to ``high``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number of {unit}") from None
        if not low <= value <= high:  # also rejects nan
            raise argparse.ArgumentTypeError(
                f"{text} is out of range: {low:g} to {high:g} {unit}")
        return value

    return parse


def _dns_arg(text: str) -> str:
    from overlay.naming.dns_front import parse_dns_address

    try:
        parse_dns_address(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc
    return text


_SERVE_EXIT = "\0serve"


def _exit_arg(text: str) -> str:
    from overlay.apps.exit_client import check_exit_choice

    if text == _SERVE_EXIT:
        return text
    try:
        return check_exit_choice(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _exit_ports_arg(text: str) -> list[int]:
    from overlay.apps.exit_policy import parse_ports

    try:
        return list(parse_ports(int(p) for p in text.split(",") if p.strip()))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from exc


def _exit_flags(ns: argparse.Namespace) -> tuple[dict[str, Any] | None, str | None]:
    """The ``[exit]`` entries and ``exit_via`` the flags set (None: config)."""
    table: dict[str, Any] = {}
    if ns.exit == _SERVE_EXIT:
        table["enabled"] = True
    if ns.exit_ports is not None:
        table["ports"] = ns.exit_ports
    if ns.exit_allow:
        table["allow"] = list(ns.exit_allow)
    via = None if ns.exit in (None, _SERVE_EXIT) else ns.exit
    return table or None, via


def add_core_parsers(sub: Any, parents: Parents) -> None:
    add_command(sub, "init", parents=parents.pick(), run=_cmd_init,
                help="create the identity key and config (never overwrites a key)",
                description="Create the data directory with a new identity key and a "
                            "default config.toml.  An existing key is always kept.",
                examples=["overlay init", "overlay --home /tmp/node2 init"])

    p = add_command(sub, "daemon", parents=parents.pick(log=True), run=_cmd_daemon,
                    help="run the node and its local API",
                    description="Run the node in the foreground: listen, join the DHT, "
                                "serve names and the local API other commands use.  "
                                "Stop it with Ctrl-C or SIGTERM.",
                    examples=["overlay daemon",
                              "overlay daemon --listen /ip4/0.0.0.0/udp/4001/quic-v1"])
    p.add_argument("--listen", metavar="MULTIADDR", action="append", type=_multiaddr_arg,
                   default=[], help="listen address, repeatable (default: from config.toml)")
    p.add_argument("--bootstrap", metavar="MULTIADDR", action="append", type=_multiaddr_arg,
                   default=[], help="DHT bootstrap peer (with /p2p/), repeatable "
                                    "(default: from config.toml)")
    p.add_argument("--dht-mode", choices=("server", "client"), default=None,
                   help="answer DHT queries (server) or only ask (client) "
                        "(default: from config.toml, else server)")
    p.add_argument("--kad-protocol", metavar="ID", type=_protocol_id, default=None,
                   help="Kademlia protocol ID (default: from config.toml, else /ovl/kad/1.0.0)")
    p.add_argument("--dns", metavar="HOST:PORT|off", type=_dns_arg, default=None,
                   help="serve names over DNS here, UDP and TCP (default: from config.toml, "
                        "else 127.0.0.1:5335); `off` disables it")
    p.add_argument("--metrics", metavar="HOST:PORT|off", type=_dns_arg, default=None,
                   help="serve Prometheus metrics (limit hits, counters) at "
                        "http://HOST:PORT/metrics (default: from config.toml, else off)")
    p.add_argument("--proxy", metavar="HOST:PORT|off", type=_dns_arg, default=None,
                   help="serve a SOCKS5 and HTTP proxy for .ovl names here, with a PAC "
                        "file at /proxy.pac (default: from config.toml, else off)")
    p.add_argument("--exit", metavar="NAME|PEER|auto|off", nargs="?", const=_SERVE_EXIT,
                   type=_exit_arg, default=None,
                   help="alone: serve as an exit to the clear web for allowed peers "
                        "(--exit-ports, --exit-allow); with a value: send the proxy's "
                        "non-.ovl traffic out through that exit, `auto` finds one in the DHT "
                        "(config keys `exit`, `exit_via`; docs/apps.md)")
    p.add_argument("--tun", action="store_true", default=None,
                   help="create the virtual-IP interface ovl0 (root, /dev/net/tun): peers get "
                        "IPv6 and IPv4 addresses and .ovl names resolve to them "
                        "(config key `tun`; docs/vip.md)")
    p.add_argument("--exit-ports", metavar="PORT,…", type=_exit_ports_arg, default=None,
                   help="destination ports an exit opens (default 80,443)")
    p.add_argument("--exit-allow", metavar="PEER_OR_NAME", action="append", default=[],
                   help="a client peer ID or name an exit serves, repeatable; `*` is "
                        "anyone (default: nobody)")
    p.add_argument("--stun", metavar="HOST:PORT", action="append", type=stun_server_arg,
                   default=[], help="STUN server asked from the QUIC socket, repeatable; an "
                                    "introducer's QUIC port is one (default: from config.toml)")
    p.add_argument("--introducer", action="store_true", default=None,
                   help="serve as the network's introducer: answer STUN on the QUIC port "
                        "and relay circuits (default: from config.toml)")
    p.add_argument("--relay", dest="relays", metavar="MULTIADDR", action="append",
                   type=_multiaddr_arg, default=[],
                   help="keep a circuit relay reservation on this relay (…/p2p/<id>), "
                        "repeatable, whatever AutoNAT says (config key `relays`)")
    p.add_argument("--no-mdns", dest="mdns", action="store_false", default=None,
                   help="do not find peers on the LAN with mDNS (on by default, and only "
                        "on non-loopback listen addresses; config key `mdns`)")
    p.add_argument("--no-holepunch", dest="holepunch", action="store_false", default=None,
                   help="do not upgrade relayed connections to direct ones with DCUtR "
                        "hole punching (on by default; config key `holepunch`)")
    p.add_argument("--no-upnp", dest="upnp", action="store_false", default=None,
                   help="do not map the QUIC port on the home router with UPnP IGD (on by "
                        "default, and only with a non-loopback listen address and a private "
                        "default gateway; config key `upnp`)")

    add_command(sub, "id", parents=parents.pick(), run=_cmd_id,
                help="peer ID and addresses of the running daemon",
                description="Show the running daemon's peer ID, agent version, listen "
                            "addresses and the addresses peers observed for it.",
                examples=["overlay id", "overlay id --json"])

    add_command(sub, "peers", parents=parents.pick(), run=_cmd_peers,
                help="connected peers",
                description="List the peers the daemon is connected to, one a line: "
                            "peer ID, direction, path (direct or relayed), agent, "
                            "protocol count, address.",
                examples=["overlay peers", "overlay peers | head -1"])

    p = add_command(sub, "connect", parents=parents.pick(), run=_cmd_connect,
                    help="connect to a peer (/p2p/PEERID alone: look it up in the DHT)",
                    description="Open a connection to a peer.  With /p2p/PEERID alone the "
                                "daemon finds the addresses in the DHT (exit 4 if it "
                                "finds none).",
                    examples=["overlay connect /ip4/192.0.2.7/udp/4001/quic-v1/p2p/12D3KooW…",
                              "overlay connect /p2p/12D3KooW…"])
    p.add_argument("addr", metavar="MULTIADDR", type=_connect_target,
                   help="a QUIC multiaddr (…/quic-v1[/p2p/PEERID]), a relayed one "
                        "(…/p2p/RELAY/p2p-circuit/p2p/PEERID) or /p2p/PEERID")

    p = add_command(sub, "ping", parents=parents.pick(), run=_cmd_ping,
                    help="ping a peer (/p2p/PEERID alone: look it up in the DHT)",
                    description="Measure round trips to a peer with the libp2p ping "
                                "protocol, printing each pong and a summary.",
                    examples=["overlay ping -n 5 /p2p/12D3KooW…"])
    p.add_argument("addr", metavar="MULTIADDR", type=_connect_target,
                   help="a QUIC multiaddr (…/quic-v1[/p2p/PEERID]), a relayed one "
                        "(…/p2p/RELAY/p2p-circuit/p2p/PEERID) or /p2p/PEERID")
    p.add_argument("-n", "--count", type=cli_type("ping", "count"), default=3,
                   help=f"pings to send, 1 to {MAX_PING_COUNT} (default 3)")
    p.add_argument("-i", "--interval", type=bounded_float(0, 60), default=1.0,
                   help="seconds between pings, 0 to 60 (default 1)")

    p = add_command(sub, "demo", parents=parents.pick(log=True), run=_cmd_demo,
                    help="the seed network: an introduction node and peers register, "
                         "resolve and reach names (--nodes N: the ping/identify demo)",
                    description="Start a small network in this process on loopback: an "
                                "introduction node and peers that register names, resolve "
                                "each other's and open streams.  It uses a lighter proof "
                                "of work and a smaller quorum than a daemon so it finishes "
                                "quickly, and says so.  With --nodes N it runs the plain "
                                "connect/ping/identify demo instead.  With --nat (root) it "
                                "runs real daemons in network namespaces, ten peers behind "
                                "NATs of several kinds, and prints which pairs went direct.",
                    examples=["overlay demo", "overlay demo --peers 4 --json",
                              "overlay demo --nodes 3", "sudo overlay demo --nat"])
    p.add_argument("--peers", type=bounded_int(2, 32), default=10,
                   help="peers besides the introduction node, 2 to 32 (default 10)")
    p.add_argument("--pow-bits", type=bounded_int(0, 24), default=16,
                   help="proof-of-work difficulty of the demo network, 0 to 24 (default 16)")
    p.add_argument("--nodes", type=bounded_int(2, 16), default=None,
                   help="instead: N nodes connect, ping and identify each other (2 to 16)")
    p.add_argument("--nat", action="store_true",
                   help="instead: the seed demo in network namespaces, peers behind NATs of "
                        "several kinds with delay, hole punching and virtual IPs (root)")
    p.add_argument("--timeout", type=bounded_float(1, 3600), default=None,
                   help="overall limit, 1 to 3600 seconds (default 120; 60 with --nodes, "
                        "240 with --nat)")


# -- commands ---------------------------------------------------------------


def _cmd_init(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.init import init_home

    result = init_home(home)
    if ns.json:
        print_json({"peer_id": str(result.peer_id), "home": str(home.root),
                    "created_key": result.created_key, "created_config": result.created_config})
    elif result.created_key:
        print(f"initialized {home.root}\nkey: {home.key_file}\nconfig: {home.config_file}")
        print(f"peer id: {result.peer_id}")
    else:
        print(f"{home.root} is already initialized; the existing key was kept")
        print(f"peer id: {result.peer_id}")
    return EXIT_OK


def _cmd_daemon(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.memory import use_system_allocator
    from overlay.daemon.run import event_loop_factory, run_daemon

    use_system_allocator()  # docs/architecture.md, "Memory": gives burst memory back

    setup_logging(ns.log_level, default="info")
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        return runner.run(run_daemon(home, sys.stdout, listen=ns.listen, as_json=ns.json,
                                     bootstrap=ns.bootstrap, dht_mode=ns.dht_mode,
                                     kad_protocol=ns.kad_protocol, dns=ns.dns,
                                     stun=ns.stun, introducer=ns.introducer,
                                     mdns=ns.mdns, relays=ns.relays, metrics=ns.metrics,
                                     proxy=ns.proxy,
                                     holepunch=ns.holepunch, upnp=ns.upnp,
                                     exit=_exit_flags(ns)[0], exit_via=_exit_flags(ns)[1],
                                     tun=ns.tun))


def _cmd_id(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("identity")
        if ns.json:
            print_json(strip_reply(reply))
            return EXIT_OK
        print(f"peer id: {reply['peer_id']}")
        if reply.get("name"):
            print(f"name: {reply['name']}")
        print(f"agent: {reply.get('agent_version', '?')}")
        for addr in reply.get("addrs", []):
            print(f"addr: {addr}")
        for seen in reply.get("observed_addrs", []):
            print(f"observed: {seen['addr']} ({plural(seen['reporters'], 'peer')})")
        if reply.get("reachability"):
            print(f"reachability: {reply['reachability']}")
            for reason in reply.get("reachability_reasons", []):
                print(f"  {reason}")
        return EXIT_OK
    return run_api(home, body)


def _cmd_peers(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("peers")
        peers = reply.get("peers", [])
        if ns.json:
            print_json(strip_reply(reply))
        elif not peers:
            print("no connected peers")
        else:
            for peer in peers:
                addrs = peer.get("connected_addrs") or peer.get("addrs") or ["?"]
                print(f"{peer['peer_id']}  {peer.get('direction', '?'):8}  "
                      f"{peer.get('path', '?'):7}  "
                      f"{peer.get('agent_version') or '?'}  "
                      f"{plural(len(peer.get('protocols', [])), 'protocol')}  {addrs[0]}")
                repunch = peer.get("repunch")
                if repunch:
                    print(f"  re-punched {plural(int(repunch.get('count', 0)), 'time')}: "
                          f"{repunch.get('last_reason')}; {repunch.get('last_outcome')}")
        return EXIT_OK
    return run_api(home, body)


def _cmd_connect(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await call_api(client, "connect", {"addr": ns.addr}, waiting="connecting",
                               quiet=ns.json)
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print(f"connected to {reply['peer_id']} ({reply.get('direction', '?')}, "
                  f"{reply.get('path', '?')})")
            _existing_note(reply)
        return EXIT_OK
    return run_api(home, body)


def _cmd_ping(ns: argparse.Namespace, home: Home) -> int:
    # Dialing (and a DHT lookup for /p2p/PEERID) may take a while before
    # the first pong; the progress line goes away when pongs start.
    wait = SlowWait("connecting", enabled=not ns.json)

    def on_event(event: dict[str, Any]) -> None:
        wait.finish()
        if not ns.json and event.get("event") == "pong":
            print(f"pong from {event.get('peer_id')}: seq={event.get('seq')} "
                  f"time={event.get('rtt_ms')} ms", flush=True)

    async def body(client: ApiClient) -> int:
        async with wait:
            reply = await client.call(
                "ping",
                {**_target_fields(ns.addr), "count": ns.count,
                 "interval_ms": int(ns.interval * 1000)},
                on_event=on_event)
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print(f"{plural(reply['count'], 'ping')} to {reply['peer_id']} "
                  f"({reply.get('path', '?')}): min/avg/max = "
                  f"{reply['min_ms']}/{reply['avg_ms']}/{reply['max_ms']} ms")
            _existing_note(reply)
        return EXIT_OK
    return run_api(home, body)


def _existing_note(reply: dict[str, Any]) -> None:
    """The daemon keeps one connection per peer: say so when it answered
    instead of the address asked for."""
    if reply.get("used_existing"):
        print(f"note: used the existing connection to {reply['peer_id']} via "
              f"{reply.get('remote_addr', '?')}, not the address given", flush=True)


def _demo_note(pow_bits: int) -> str:
    """What the demo does more lightly than a daemon, said up front."""
    from overlay.naming.pow import DEFAULT_POW_BITS
    from overlay.naming.resolver import ResolverConfig

    quorum = ResolverConfig().quorum
    return (f"note: demo network, lighter than a daemon: proof of work {pow_bits} bits "
            f"(a daemon requires {DEFAULT_POW_BITS}), resolve quorum 3 "
            f"(a daemon asks for {quorum})")


def _demo_nat(ns: argparse.Namespace) -> int:
    """`overlay demo --nat`: without root or the lab's tools, one line and
    exit 2; otherwise the demo's verdict."""
    from overlay.demo_nat import DEFAULT_TIMEOUT, missing_requirement, run_nat_demo

    if ns.nodes is not None or ns.peers != 10 or ns.pow_bits != 16:
        raise UsageError("--nat runs its own ten peers with daemon settings; --nodes, "
                         "--peers and --pow-bits do not apply")
    missing = missing_requirement()
    if missing is not None:
        print(missing, file=sys.stderr, flush=True)
        return EXIT_USAGE
    ok = run_nat_demo(sys.stdout, as_json=ns.json, timeout=ns.timeout or DEFAULT_TIMEOUT,
                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    return EXIT_OK if ok else EXIT_FAILED


def _cmd_demo(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.run import event_loop_factory
    from overlay.demo import run_demo

    setup_logging(ns.log_level)
    if ns.nat:
        return _demo_nat(ns)
    if ns.nodes is None:
        from overlay.seed_demo import run_seed_demo

        if not ns.json:
            print(_demo_note(ns.pow_bits), file=sys.stderr, flush=True)
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            ok = runner.run(run_seed_demo(sys.stdout, peers=ns.peers, timeout=ns.timeout or 120.0,
                                          as_json=ns.json, pow_bits=ns.pow_bits))
        return EXIT_OK if ok else EXIT_FAILED
    if ns.peers != 10 or ns.pow_bits != 16:
        raise UsageError("--nodes runs the ping/identify demo; --peers and --pow-bits "
                         "belong to the seed-network demo")
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        ok = runner.run(run_demo(ns.nodes, ns.timeout or 60.0, sys.stdout, as_json=ns.json))
    return EXIT_OK if ok else EXIT_FAILED
