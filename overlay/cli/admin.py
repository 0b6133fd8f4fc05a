"""`overlay status | stop | disconnect | config show | config set`: looking
after a node, as `tailscale status` / `ipfs shutdown` / `ipfs config` do.

`status`, `stop` and `disconnect` ask the running daemon (``status``,
``stop``, ``disconnect`` ops); `config` reads and writes
``<home>/config.toml`` and needs no daemon — a change takes effect when the
daemon restarts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    CliError,
    Parents,
    UsageError,
    add_command,
    format_duration,
    plural,
    print_json,
    run_api,
    strip_reply,
)
from overlay.cli.core import bounded_float, peer_id_arg
from overlay.daemon.client import ApiClient
from overlay.daemon.errors import ApiError
from overlay.daemon.home import Home
from overlay.errors import ConfigError

__all__ = ["add_admin_parsers", "wait_for_exit"]

_POLL_SECONDS = 0.05
"""How often to look for the daemon's exit where pidfd_open is missing."""


def add_admin_parsers(sub: Any, parents: Parents) -> None:
    add_command(sub, "status", parents=parents.pick(), run=_cmd_status,
                help="the node at a glance: peers, reachability, DHT, names, DNS",
                description="Show the running daemon's identity and self-certifying name, "
                            "uptime, listen and observed addresses, how peers reach it, "
                            "connected peers, the DHT routing table, owned names, the DNS "
                            "front and the API socket.",
                examples=["overlay status", "overlay status --json | jq .dht.table_size"])

    p = add_command(sub, "stop", parents=parents.pick(json=False), run=_cmd_stop,
                    help="stop the daemon cleanly and wait until it has exited",
                    description="Ask the running daemon to shut down (as SIGTERM would: "
                                "state is saved, peers are told) and wait for its process "
                                "to exit.",
                    examples=["overlay stop"])
    p.add_argument("--timeout", type=bounded_float(0.1, 3600.0), default=60.0,
                   help="seconds to wait for the exit (default 60)")

    p = add_command(sub, "disconnect", parents=parents.pick(), run=_cmd_disconnect,
                    help="close the connections to a peer (exit 4 if not connected)",
                    description="Close every connection to PEER.  The peer may connect "
                                "again later (the DHT reconnects to useful peers).",
                    examples=["overlay disconnect 12D3KooW..."])
    p.add_argument("peer", metavar="PEER", type=peer_id_arg, help="a connected peer's ID")

    cfg = add_command(sub, "config", parents=parents.pick(json=False),
                      help="show or change config.toml (takes effect on restart)",
                      description="Show the effective configuration (config.toml with the "
                                  "defaults filled in) or change one key.",
                      examples=["overlay config show", "overlay config set dht_mode client"])
    actions = cfg.add_subparsers(dest="config_action", metavar="ACTION", parser_class=type(cfg))
    add_command(actions, "show", parents=parents.pick(), run=_cmd_config_show,
                help="print the effective configuration as TOML (or --json)",
                description="Print config.toml with every default filled in.",
                examples=["overlay config show", "overlay config show --json"])
    p = add_command(actions, "set", parents=parents.pick(json=False), run=_cmd_config_set,
                    help="set one key, validated; restart the daemon to apply it",
                    description="Set KEY in config.toml.  The value is checked as the daemon "
                                "would check it and the file is replaced atomically.  List "
                                "keys (listen, bootstrap) take one VALUE per entry; '' "
                                "empties them.",
                    examples=["overlay config set dht_mode client",
                              "overlay config set listen /ip4/0.0.0.0/udp/4001/quic-v1 "
                              "/ip6/::/udp/4001/quic-v1",
                              "overlay config set bootstrap ''"])
    p.add_argument("key", metavar="KEY", help="a config key (see `overlay config show`)")
    p.add_argument("values", metavar="VALUE", nargs="+", help="the new value")


# -- status ------------------------------------------------------------------------


# The status op's identify heuristic, in words; the AutoNAT line (below, when
# AutoNAT runs) is the verdict `overlay id` prints as "reachability".
_MAPPING = {
    "offline": "no peer connected",
    "unknown": "no peer reported our address yet",
    "direct": "peers see the port we listen on",
    "nat": "peers see other ports (a NAT maps us)",
}


def _status_lines(reply: dict[str, Any]) -> list[str]:
    lines = [
        f"peer id:      {reply['peer_id']}",
        f"name:         {reply['name']}",
        f"agent:        {reply.get('agent_version', '?')} (pid {reply.get('pid', '?')}, "
        f"up {format_duration(float(reply.get('uptime_s', 0)))})",
        f"mapping:      {_MAPPING.get(reply.get('reachability', ''), '?')}",
    ]
    lines += [f"listening:    {addr}" for addr in reply.get("listen_addrs", [])]
    lines += [f"observed:     {seen['addr']} ({plural(seen['reporters'], 'peer')})"
              for seen in reply.get("observed_addrs", [])]
    peers = reply.get("peers", [])
    lines.append(f"peers:        {plural(len(peers), 'connected peer')}")
    dht = reply.get("dht")
    if dht is None:
        lines.append("dht:          not running")
    else:
        state = "bootstrapped" if dht.get("bootstrapped") else "not bootstrapped yet"
        lines.append(f"dht:          {dht['mode']} mode, {dht['protocol']}, "
                     f"{plural(dht['table_size'], 'peer')} in the routing table ({state})")
    names = reply.get("names")
    if names is not None:
        lines.append(f"names:        {', '.join(names) if names else 'none owned'}")
    lines.append(f"dns:          {reply.get('dns') or 'off'}")
    if reply.get("nat"):
        lines.append(f"nat:          {reply['nat']}")
    if reply.get("mdns"):
        lines.append(f"mdns:         {reply['mdns']}")
    if reply.get("autonat"):
        lines.append(f"autonat:      {reply['autonat']}")
    lines.append(f"api socket:   {reply.get('api_socket', '?')}")
    return lines


def _cmd_status(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("status")
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print("\n".join(_status_lines(reply)))
        return EXIT_OK
    return run_api(home, body)


# -- stop ----------------------------------------------------------------------------


async def wait_for_exit(pid: int, timeout: float) -> None:
    """Until process ``pid`` has exited; ``CliError`` after ``timeout``.

    A pidfd becomes readable when the process exits (whoever its parent
    is); without pidfd_open the process is polled with signal 0."""
    if pid == os.getpid():
        return  # an in-process daemon: its API closing is the end
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        fd = -1
    try:
        async with asyncio.timeout(timeout):
            if fd >= 0:
                exited = asyncio.Event()
                loop = asyncio.get_running_loop()
                loop.add_reader(fd, exited.set)
                try:
                    await exited.wait()
                finally:
                    loop.remove_reader(fd)
            else:
                while _alive(pid):
                    await asyncio.sleep(_POLL_SECONDS)
    except TimeoutError:
        raise CliError(f"the daemon (pid {pid}) is still running after {timeout:g} s") from None
    finally:
        if fd >= 0:
            os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process, still there
    return True


def _check_reply(message: dict[str, Any] | None) -> dict[str, Any]:
    if message is None:
        raise CliError("the daemon closed the connection without confirming the stop")
    error = message.get("error")
    if message.get("ok") is False and isinstance(error, dict):
        raise ApiError(str(error.get("code", "failed")), str(error.get("message", "")))
    return message


def _cmd_stop(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        await client.send_request("stop")
        stopping = _check_reply(await client.next_event())
        pid = int(stopping.get("pid", 0))
        # The daemon closes every API connection once it stops serving.
        try:
            async with asyncio.timeout(ns.timeout):
                while await client.next_event() is not None:
                    pass
        except TimeoutError:
            raise CliError(f"the daemon (pid {pid}) has not stopped after "
                           f"{ns.timeout:g} s") from None
        if pid > 0:
            await wait_for_exit(pid, ns.timeout)
        print(f"stopped the daemon {stopping.get('peer_id', '')} (pid {pid})")
        return EXIT_OK
    return run_api(home, body)


# -- disconnect ----------------------------------------------------------------------


def _cmd_disconnect(ns: argparse.Namespace, home: Home) -> int:
    async def body(client: ApiClient) -> int:
        reply = await client.call("disconnect", {"peer": ns.peer})
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print(f"disconnected from {reply['peer_id']} "
                  f"({plural(int(reply.get('closed', 0)), 'connection')} closed)")
        return EXIT_OK
    return run_api(home, body)


# -- config --------------------------------------------------------------------------


def _cmd_config_show(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.config import config_document, load_config, render_config

    config = load_config(home.config_file)
    if ns.json:
        print(json.dumps(config_document(config), indent=2))
    else:
        print(f"# {home.config_file}"
              + ("" if home.config_file.exists() else " (absent: all defaults)"))
        print(render_config(config), end="")
    return EXIT_OK


def _cmd_config_set(ns: argparse.Namespace, home: Home) -> int:
    from overlay.daemon.config import load_config, save_config, with_value

    config = load_config(home.config_file)
    try:
        updated = with_value(config, ns.key, ns.values, source="invalid value")
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    home.ensure()
    save_config(home.config_file, updated)
    shown = getattr(updated, ns.key)
    text = json.dumps(list(shown) if isinstance(shown, tuple) else shown)
    print(f"{ns.key} = {text} in {home.config_file}; restart the daemon to apply it "
          "(overlay stop, then overlay daemon)")
    return EXIT_OK
