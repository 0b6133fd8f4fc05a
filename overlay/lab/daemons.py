"""Real `overlay` daemons in lab namespaces.

Starting ``overlay daemon --json`` in a namespace and waiting for its
``ready`` line, running the CLI or one API call there with a timeout,
bounded polls, stopping a daemon with its log for the failure message, and
the few multiaddr parts the labs compare.  ``overlay demo --nat`` and the
netns tests (``interop/netns/daemons.py`` adds their pytest fixture) share
it.

    a = start_daemon(lab, topo.server, topo.server_ip, "--dns", "off")
    peers = overlay_json(lab, a, "peers")["peers"]
    reply = poll_json(lab, a, ["id"], lambda r: r["reachability"] == "public", timeout=60)
    stop_daemons(a)

Nothing here sleeps: a daemon is up when it prints ``ready``, and a poll's
every try is a whole CLI run or API call, so the loop paces itself; each is
bounded by a deadline or a number of tries.  A failure raises
``DaemonFailed`` with the daemon's output.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any, TypeVar

from overlay.lab.lab import Lab, LabError, LabProcess, Node

__all__ = [
    "AUTONAT_LAB_CONFIG",
    "CLI_TIMEOUT",
    "START_TIMEOUT",
    "Daemon",
    "DaemonFailed",
    "StartingDaemon",
    "api_call",
    "bare",
    "ip_of",
    "overlay",
    "overlay_argv",
    "overlay_json",
    "poll",
    "poll_json",
    "spawn_daemon",
    "start_daemon",
    "stop_daemons",
    "udp_port",
    "wait_reserved",
    "wait_until",
]

T = TypeVar("T")

START_TIMEOUT = 15.0
"""A daemon prints `ready` in about half a second here."""
CLI_TIMEOUT = 15.0
"""The default for one CLI run or API call; a daemon started with
``cli_timeout`` uses its own."""
AUTONAT_LAB_CONFIG = 'version = 1\nautonat = "lab"\n'
"""A config that lets AutoNAT and DCUtR treat the lab's documentation and
10.x addresses as dialable; ``init`` keeps an existing config, so it is in
place before the daemon's first start."""


class DaemonFailed(LabError):
    """A daemon or a CLI run in the lab did not do what was asked (its
    output is in the message)."""


# -- daemons --------------------------------------------------------------------

@dataclass(frozen=True)
class Daemon:
    node: Node
    home: Path
    peer_id: str
    addr: str
    """Its listen multiaddr on the address it was started on (with /p2p/)."""
    proc: LabProcess
    cli_timeout: float = CLI_TIMEOUT
    """How long one CLI run or API call against it may take."""

    @property
    def port(self) -> int:
        """The UDP port it listens on."""
        return udp_port(self.addr)

    @property
    def api_socket(self) -> Path:
        return self.home / "api.sock"


def overlay_argv(args: Sequence[str]) -> list[str]:
    """The argv of ``overlay ARGS`` (this interpreter, the package's CLI)."""
    return [sys.executable, "-m", "overlay.cli", *args]


def _prepare_home(home: Path, config: str | None, settings: Mapping[str, Any] | None) -> None:
    if config is not None:
        home.mkdir(parents=True)
        (home / "config.toml").write_text(config)
    if settings is not None:
        from overlay.daemon.config import load_config, save_config
        from overlay.daemon.home import Home
        from overlay.daemon.init import init_home

        init_home(Home(home))
        path = Home(home).config_file
        save_config(path, replace(load_config(path), **settings))


@dataclass(frozen=True)
class StartingDaemon:
    """A daemon spawned by ``spawn_daemon`` that has not printed ``ready``
    yet: spawn several, then await each, so their start-ups overlap."""

    node: Node
    home: Path
    ip: str
    listen_ip: str | None
    proc: LabProcess
    cli_timeout: float

    def ready(self, timeout: float = START_TIMEOUT) -> Daemon:
        """Wait for its ``ready`` line (``LabError`` with its output if it
        ends or stays silent); see ``start_daemon`` for ``addr``."""
        line = self.proc.wait_for_line(
            lambda text: text.startswith("{") and '"ready"' in text, timeout)
        ready = json.loads(line)
        addrs = ready["addrs"]
        on_ip = [addr for addr in addrs if addr.startswith(f"/ip4/{self.ip}/udp/")]
        if len(on_ip) != 1 or (self.listen_ip is None and addrs != on_ip):
            raise DaemonFailed(f"unexpected listen addresses: {ready}\n{self.proc.describe()}")
        return Daemon(self.node, self.home, ready["peer_id"], on_ip[0], self.proc,
                      self.cli_timeout)


def spawn_daemon(lab: Lab, node: Node, ip: str, *extra: str, name: str | None = None,
                 listen_ip: str | None = None, config: str | None = None,
                 settings: Mapping[str, Any] | None = None,
                 cli_timeout: float = CLI_TIMEOUT) -> StartingDaemon:
    """Start ``start_daemon``'s command without waiting for ``ready``."""
    home = lab.workdir / (name or node.name)
    _prepare_home(home, config, settings)
    argv = ["daemon", "--home", str(home), "--json", "--listen",
            f"/ip4/{listen_ip or ip}/udp/0/quic-v1", *extra]
    proc = lab.popen(node, overlay_argv(argv))
    return StartingDaemon(node, home, ip, listen_ip, proc, cli_timeout)


def start_daemon(lab: Lab, node: Node, ip: str, *extra: str, name: str | None = None,
                 listen_ip: str | None = None, config: str | None = None,
                 settings: Mapping[str, Any] | None = None,
                 cli_timeout: float = CLI_TIMEOUT,
                 timeout: float = START_TIMEOUT) -> Daemon:
    """``overlay daemon --home <workdir>/<name> --json --listen
    /ip4/<listen_ip>/udp/0/quic-v1 EXTRA…`` in ``node``; returns once it
    printed ``ready``.

    ``name`` (default: the node's) names its home, so one namespace can hold
    several daemons; ``listen_ip`` (default ``ip``) may be ``0.0.0.0``.
    ``config`` is written as the home's config.toml before the first start;
    ``settings`` are then set on the initialised config (``DaemonConfig``
    fields, e.g. ``relay_limits``).  ``addr`` is the one listen address on
    ``ip``; without ``listen_ip`` it must be the only address ``ready``
    lists."""
    return spawn_daemon(lab, node, ip, *extra, name=name, listen_ip=listen_ip, config=config,
                        settings=settings, cli_timeout=cli_timeout).ready(timeout)


def stop_daemons(*daemons: Daemon) -> list[str]:
    """SIGTERM each in turn; each must exit 0 (else the failure shows its
    command, output and stderr).  Returns their stderr logs."""
    logs = []
    for daemon in daemons:
        if daemon.proc.stop() != 0:
            raise DaemonFailed(daemon.proc.describe())
        logs.append(daemon.proc.stderr_text())
    return logs


# -- the CLI and the API in a namespace -----------------------------------------

def overlay(lab: Lab, daemon: Daemon, *args: str,
            timeout: float | None = None) -> CompletedProcess[str]:
    """Run ``overlay --home <its home> ARGS`` against ``daemon`` inside its
    namespace, within ``timeout`` (default: the daemon's ``cli_timeout``)."""
    return lab.run(daemon.node, overlay_argv(["--home", str(daemon.home), *args]),
                   timeout=daemon.cli_timeout if timeout is None else timeout)


def overlay_json(lab: Lab, daemon: Daemon, *args: str, timeout: float | None = None) -> Any:
    """``overlay ARGS --json``, which must exit 0; its parsed output."""
    done = overlay(lab, daemon, *args, "--json", timeout=timeout)
    if done.returncode != 0:
        raise DaemonFailed(f"overlay {' '.join(args)}: exit {done.returncode}\n{done.stderr}")
    return json.loads(done.stdout)


_API_CALL = """
import asyncio, json, sys
from overlay.daemon.client import ApiClient
async def main():
    async with await ApiClient.connect(sys.argv[1]) as api:
        print(json.dumps(await api.call(sys.argv[2], json.loads(sys.argv[3]))))
asyncio.run(main())
"""


def api_call(lab: Lab, daemon: Daemon, op: str, args: Mapping[str, Any] | None = None,
             *, timeout: float | None = None) -> Any:
    """One call of the daemon's API op (those the CLI does not show), from
    inside its namespace; returns the reply."""
    done = lab.run(daemon.node, [sys.executable, "-c", _API_CALL, str(daemon.api_socket), op,
                                 json.dumps(dict(args or {}))],
                   timeout=daemon.cli_timeout if timeout is None else timeout)
    if done.returncode != 0:
        raise DaemonFailed(f"api {op}: exit {done.returncode}\n{done.stderr}")
    return json.loads(done.stdout)


def poll(fetch: Callable[[], T], until: Callable[[T], bool], *, timeout: float | None = None,
         tries: int | None = None) -> T:
    """Call ``fetch`` until ``until(result)`` holds, ``timeout`` seconds
    pass or ``tries`` calls were made; return the last result.  Each call
    is a whole CLI run or API call, so the loop paces itself."""
    if timeout is None and tries is None:
        raise ValueError("an unbounded poll: give timeout or tries")
    deadline = None if timeout is None else time.monotonic() + timeout
    made = 0
    while True:
        result = fetch()
        made += 1
        if (until(result) or (deadline is not None and time.monotonic() > deadline)
                or (tries is not None and made >= tries)):
            return result


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    """Whether ``check()`` held within ``timeout`` seconds (see ``poll``)."""
    return poll(check, bool, timeout=timeout)


def poll_json(lab: Lab, daemon: Daemon, args: Sequence[str], until: Callable[[Any], bool], *,
              timeout: float | None = None, tries: int | None = None) -> Any:
    """Repeat ``overlay ARGS --json`` until ``until(reply)`` (see ``poll``)."""
    return poll(lambda: overlay_json(lab, daemon, *args), until, timeout=timeout, tries=tries)


def wait_reserved(lab: Lab, daemon: Daemon, tries: int) -> dict[str, Any]:
    """``relay status`` once the daemon holds a relay reservation and
    advertises its circuit address; fails after ``tries`` runs."""
    reply = poll_json(lab, daemon, ["relay", "status"],
                      lambda r: bool(r["reservations"] and r["advertised"]), tries=tries)
    if not (reply["reservations"] and reply["advertised"]):
        raise DaemonFailed(f"no reservation: {reply}\n{daemon.proc.describe()}")
    return dict(reply)


# -- multiaddrs -------------------------------------------------------------------

def bare(addr: str) -> str:
    """A multiaddr without its /p2p/ part."""
    return addr.split("/p2p/")[0]


def udp_port(multiaddr: str) -> int:
    parts = multiaddr.split("/")
    return int(parts[parts.index("udp") + 1])


def ip_of(multiaddr: str) -> str:
    parts = multiaddr.split("/")
    return parts[parts.index("ip4") + 1]
