"""`overlay expose` and `overlay forward`: ordinary TCP programs on the
overlay (docs/apps.md).

- ``overlay expose SERVICE --port N [--host IP] [--allow PEER_OR_NAME]…``
  serves a local TCP port as SERVICE and publishes ``SERVICE:PORT`` in
  every name this node owns; ``--list`` and ``--remove SERVICE``.
- ``overlay forward --listen HOST:PORT NAME:SERVICE`` opens a local
  listener whose connections reach NAME's SERVICE; ``--list`` and
  ``--close HOST:PORT``.
"""

from __future__ import annotations

import argparse
from typing import Any

from overlay.cli.common import (
    EXIT_OK,
    Parents,
    UsageError,
    add_command,
    call_api,
    print_json,
    run_api,
    strip_reply,
)
from overlay.daemon.client import ApiClient
from overlay.daemon.home import Home
from overlay.daemon.schema import cli_type

__all__ = ["add_apps_parsers"]


def _service_arg(text: str) -> str:
    from overlay.apps.service_proto import check_service_name

    try:
        return check_service_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _allow_arg(text: str) -> str:
    from overlay.apps.config import check_allow_entry

    try:
        return check_allow_entry(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _hostport_arg(text: str) -> str:
    from overlay.apps.daemon_ext import parse_hostport

    try:
        parse_hostport(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _ip_arg(text: str) -> str:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None
    return text


def _target_arg(text: str) -> str:
    from overlay.apps.service_proto import check_service_name
    from overlay.errors import OverlayError
    from overlay.naming.names import normalize_hostname

    name, sep, service = text.rpartition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME:SERVICE (such as alice.ovl:http)")
    try:
        normalize_hostname(name)
        check_service_name(service)
    except (OverlayError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None
    return text


def add_apps_parsers(sub: Any, parents: Parents) -> None:
    p = add_command(sub, "expose", parents=parents.pick(), run=_cmd_expose,
                    help="serve a local TCP port to the overlay as a named service",
                    description="Expose a local TCP service: peers' streams for SERVICE are "
                                "connected to HOST:PORT, and SERVICE:PORT is published in "
                                "every name this node owns, so `http://NAME.ovl/` reaches "
                                "it through a proxy.  --allow limits it to peers (IDs or "
                                "names).  Kept in config.toml across restarts.",
                    examples=["overlay expose http --port 8080",
                              "overlay expose ssh --port 22 --allow bob.ovl",
                              "overlay expose --list", "overlay expose --remove http"])
    p.add_argument("service", metavar="SERVICE", nargs="?", type=_service_arg,
                   help="the service name (http, ssh …)")
    p.add_argument("--port", type=cli_type("expose_add", "port"), help="the local TCP port")
    p.add_argument("--host", type=_ip_arg, default="127.0.0.1",
                   help="the local address (default 127.0.0.1)")
    p.add_argument("--allow", metavar="PEER_OR_NAME", action="append", type=_allow_arg,
                   default=[], help="only this peer ID or name's peers, repeatable "
                                    "(default: anyone)")
    p.add_argument("--list", action="store_true", help="list exposed services")
    p.add_argument("--remove", metavar="SERVICE", type=_service_arg,
                   help="stop exposing SERVICE and take it out of the names")

    p = add_command(sub, "forward", parents=parents.pick(), run=_cmd_forward,
                    help="a local TCP port that reaches a named peer's service",
                    description="Listen on HOST:PORT (port 0: any free port); each "
                                "connection becomes a stream to NAME's SERVICE, found "
                                "through the naming layer.  Kept in forwards.json, so a "
                                "restarted daemon listens there again, until --close.",
                    examples=["overlay forward --listen 127.0.0.1:9000 alice.ovl:http",
                              "overlay forward --list",
                              "overlay forward --close 127.0.0.1:9000"])
    p.add_argument("target", metavar="NAME:SERVICE", nargs="?", type=_target_arg,
                   help="the named peer's service, such as alice.ovl:http")
    p.add_argument("--listen", metavar="HOST:PORT", type=_hostport_arg,
                   help="the local address to listen on")
    p.add_argument("--list", action="store_true", help="list forwards")
    p.add_argument("--close", metavar="HOST:PORT", type=_hostport_arg,
                   help="close the forward listening there")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _one_action(ns: argparse.Namespace, actions: dict[str, bool]) -> str:
    chosen = [name for name, given in actions.items() if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of " + ", ".join(actions))
    return chosen[0]


def _cmd_expose(ns: argparse.Namespace, home: Home) -> int:
    action = _one_action(ns, {"SERVICE --port N": ns.service is not None,
                              "--list": ns.list, "--remove SERVICE": ns.remove is not None})
    if action.startswith("SERVICE") and ns.port is None:
        raise UsageError("exposing SERVICE needs --port N")
    if not action.startswith("SERVICE") and (ns.port is not None or ns.allow):
        raise UsageError("--port and --allow go with SERVICE")

    async def body(client: ApiClient) -> int:
        if ns.list:
            reply = await client.call("expose_list")
            if ns.json:
                print_json(strip_reply(reply))
                return EXIT_OK
            for s in reply["services"]:
                allow = ", ".join(s["allow"]) or "anyone"
                print(f"{s['service']}  {s['host']}:{s['port']}  allow: {allow}  "
                      f"{s['connections']} connections ({s['active']} open), "
                      f"in {_size(s['bytes_in'])}, out {_size(s['bytes_out'])}")
            if reply.get("proxy"):
                print(f"proxy: {reply['proxy']}")
            return EXIT_OK
        if ns.remove is not None:
            reply = await call_api(client, "expose_remove", {"service": ns.remove},
                                   waiting="republishing", quiet=ns.json)
        else:
            reply = await call_api(client, "expose_add", {
                "service": ns.service, "port": ns.port, "host": ns.host, "allow": ns.allow},
                waiting="publishing", quiet=ns.json)
        if ns.json:
            print_json(strip_reply(reply))
            return EXIT_OK
        if ns.remove is not None:
            print(f"no longer exposing {ns.remove}")
        else:
            print(f"exposing {ns.service} → {ns.host}:{ns.port}"
                  + (f" (only {', '.join(ns.allow)})" if ns.allow else ""))
        if reply["published"]:
            print(f"published in {', '.join(reply['published'])}")
        for line in reply["publish_failed"]:
            print(f"warning: not published in {line}")
        return EXIT_OK

    return run_api(home, body)


def _cmd_forward(ns: argparse.Namespace, home: Home) -> int:
    action = _one_action(ns, {"--listen HOST:PORT NAME:SERVICE": ns.listen is not None,
                              "--list": ns.list, "--close HOST:PORT": ns.close is not None})
    if action.startswith("--listen") and ns.target is None:
        raise UsageError("--listen needs NAME:SERVICE, such as alice.ovl:http")
    if not action.startswith("--listen") and ns.target is not None:
        raise UsageError("NAME:SERVICE goes with --listen")

    async def body(client: ApiClient) -> int:
        if ns.list:
            reply = await client.call("forward_list")
            if ns.json:
                print_json(strip_reply(reply))
                return EXIT_OK
            for f in reply["forwards"]:
                if not f.get("listening", True):
                    print(f"{f['listen']} → {f['name']}:{f['service']}  not listening: "
                          f"{f['last_error']}")
                    continue
                print(f"{f['listen']} → {f['name']}:{f['service']}  "
                      f"{f['connections']} connections ({f['active']} open), "
                      f"in {_size(f['bytes_in'])}, out {_size(f['bytes_out'])}"
                      + (f"  last error: {f['last_error']}" if f["last_error"] else ""))
            return EXIT_OK
        if ns.close is not None:
            reply = await client.call("forward_close", {"listen": ns.close})
            text = f"closed {reply['listen']}"
        else:
            reply = await client.call("forward_add", {"listen": ns.listen, "target": ns.target})
            text = f"forwarding {reply['listen']} → {reply['name']}:{reply['service']}"
        if ns.json:
            print_json(strip_reply(reply))
        else:
            print(text)
        return EXIT_OK

    return run_api(home, body)
