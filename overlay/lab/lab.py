"""A small declarative builder for network-namespace labs.

A ``Lab`` creates Linux network namespaces ("hosts", "routers" and
"switches"), joins them with veth pairs created directly between two
namespaces (the root namespace never holds an end), adds routes, turns on
forwarding in routers and sets up NAT with nftables inside a router.  It runs
commands inside a namespace (``ip netns exec``) and tracks the processes it
starts.  Leaving the ``with`` block stops those processes and deletes every
namespace, which takes the veths and nftables tables with it.

Namespaces are named ``<prefix>-<pid>-<token>-<node>``, so parallel runs do
not collide and a later run can recognise and delete what a crashed run left
behind (``cleanup_stale``).  Nothing here touches the root namespace's
routes, firewall or interfaces.

    with Lab() as lab:
        lan = lab.switch("public")
        server = lab.host("server")
        lab.link(server, lan, "203.0.113.10/24")
        ...
        proc = lab.popen(server, ["my-daemon"])
        proc.wait_for_line(lambda line: line == "ready", timeout=10)
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import ipaddress
import os
import re
import secrets
import select
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Literal

from overlay.lab.natkinds import (
    DEFAULT_UDP_TIMEOUTS,
    NatKind,
    UdpTimeouts,
    apply_nat,
    set_udp_timeouts,
)
from overlay.errors import OverlayError

__all__ = [
    "DEFAULT_PREFIX",
    "REQUIRED_TOOLS",
    "CommandFailed",
    "Lab",
    "LabError",
    "LabProcess",
    "LabUnavailable",
    "NatMode",
    "Node",
    "NodeKind",
    "ToolMissing",
    "cleanup_stale",
    "lab_namespaces",
    "require_lab",
]

DEFAULT_PREFIX = "ovlnet"
REQUIRED_TOOLS: dict[str, str] = {"ip": "iproute2", "nft": "nftables"}
"""Executable → the Debian package that provides it."""

_NODE_NAME = re.compile(r"^[a-z][a-z0-9]{0,14}$")
_PREFIX = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_BRIDGE = "br0"
_COMMAND_TIMEOUT = 10.0
_MAX_STALE = 1000
_STOP_TIMEOUT = 5.0
_MAX_LINE = 64 * 1024


class LabError(OverlayError):
    """The lab could not be built, used or torn down."""


class LabUnavailable(LabError):
    """This process cannot build labs at all (it is not root): tests skip."""


class ToolMissing(LabError):
    """A required executable is missing; the message names its package."""


class CommandFailed(LabError):
    """A setup command exited non-zero; the message holds its stderr."""


class NodeKind(enum.Enum):
    HOST = "host"
    ROUTER = "router"
    SWITCH = "switch"


class NatMode(enum.Enum):
    """How a NAT router maps the private side's UDP flows.

    ``CONE``: plain ``masquerade``.  Linux keeps the source port when it is
    free, so one private socket gets the same public port towards every
    destination (endpoint-independent mapping; the filtering is still per
    destination, as conntrack only admits replies).
    ``RANDOM`` / ``FULLY_RANDOM``: ``masquerade random`` / ``fully-random``:
    every new flow gets its own public port, which is what hole punching
    calls a symmetric NAT.
    """

    CONE = ""
    RANDOM = "random"
    FULLY_RANDOM = "fully-random"
    SYMMETRIC = "fully-random"
    """An alias of ``FULLY_RANDOM``.  ``natkinds.NatKind`` has every kind
    (full, restricted and port-restricted cone, two symmetric ones, none)."""


@dataclass(frozen=True, slots=True)
class Interface:
    node: str
    """Name of the node (not the namespace) holding the interface."""
    name: str
    """Interface name inside that namespace."""
    address: ipaddress.IPv4Interface | None
    """Its address with prefix length, or None (a switch port)."""


@dataclass(slots=True)
class Node:
    """A namespace in the lab."""

    name: str
    """Short name used in tests (``server``, ``nat1``)."""
    namespace: str
    """The real namespace name (unique to this run)."""
    kind: NodeKind
    interfaces: dict[str, Interface] = field(default_factory=dict)

    def address(self, ifname: str | None = None) -> str:
        """The IPv4 address of ``ifname`` (or of the node's only addressed
        interface) without the prefix length."""
        if ifname is not None:
            iface = self.interfaces[ifname]
            if iface.address is None:
                raise LabError(f"{self.name}/{ifname} has no address")
            return str(iface.address.ip)
        addressed = [i for i in self.interfaces.values() if i.address is not None]
        if len(addressed) != 1:
            raise LabError(f"{self.name} has {len(addressed)} addressed interfaces; name one")
        assert addressed[0].address is not None
        return str(addressed[0].address.ip)


def require_lab() -> None:
    """Raise ``LabUnavailable`` unless root, ``ToolMissing`` (naming the
    Debian package to install) unless every required tool is on PATH."""
    if os.geteuid() != 0:
        raise LabUnavailable("network-namespace labs need root (ip netns, nft)")
    missing = [f"`{tool}` (apt-get install -y {package})"
               for tool, package in REQUIRED_TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise ToolMissing("network-namespace labs need " + ", ".join(missing))


def _run(argv: Sequence[str], timeout: float = _COMMAND_TIMEOUT,
         input_text: str | None = None) -> str:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              input=input_text, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"`{' '.join(argv)}` did not finish in {timeout} s") from exc
    except FileNotFoundError as exc:
        raise ToolMissing(f"`{argv[0]}` is not installed") from exc
    if done.returncode != 0:
        raise CommandFailed(f"`{' '.join(argv)}` exited {done.returncode}: "
                            f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def lab_namespaces(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Names of existing namespaces that labs with ``prefix`` created."""
    out = _run(["ip", "netns", "list"])
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    return [name for name in names if name.startswith(prefix + "-")]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(namespace: str) -> None:
    """SIGKILL whatever still runs inside ``namespace`` (a deleted namespace
    lives on while a process holds it)."""
    try:
        out = _run(["ip", "netns", "pids", namespace])
    except CommandFailed:
        return
    for text in out.split():
        if text.isdigit() and int(text) != os.getpid():
            try:
                os.kill(int(text), signal.SIGKILL)
            except ProcessLookupError:
                pass


def _delete_namespace(namespace: str) -> None:
    _kill_namespace_processes(namespace)
    _run(["ip", "netns", "delete", namespace])


def _dead_run(name: str, prefix: str) -> bool:
    """True for ``<prefix>-<pid>-<token>[-…]`` whose pid no longer exists."""
    parts = name.split("-")
    return (len(parts) >= 3 and parts[0] == prefix and parts[1].isdigit()
            and not _pid_alive(int(parts[1])))


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Delete namespaces and work directories of earlier labs whose
    creating process is gone (a crashed or killed run).

    Best effort: what belongs to live processes (parallel runs) is left
    alone.  Returns the namespaces deleted.
    """
    deleted = []
    for name in lab_namespaces(prefix)[:_MAX_STALE]:
        if not _dead_run(name, prefix):
            continue
        try:
            _delete_namespace(name)
        except CommandFailed:
            continue
        deleted.append(name)
    tmp = Path(tempfile.gettempdir())
    for path in sorted(tmp.glob(f"{prefix}-*"))[:_MAX_STALE]:
        if path.is_dir() and not path.is_symlink() and _dead_run(path.name, prefix):
            shutil.rmtree(path, ignore_errors=True)
    return deleted


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the process that started us
    dies, so a killed test run leaves no daemon behind (the namespaces
    themselves go at the next run's ``cleanup_stale``)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


_HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def _signals_held() -> Iterator[set[int | signal.Signals]]:
    """Hold SIGINT and SIGTERM while forking a child with a ``preexec_fn``.

    Python then runs its at-fork hooks (logging's among them), and a signal
    handler that fires inside one raises there: the KeyboardInterrupt of a
    Ctrl-C is printed as "ignored" and lost, and the run goes on (seen in
    ``overlay demo --nat``).  Held, the signal arrives once the fork is
    done.  Yields the mask to restore in the child."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _HELD_SIGNALS)
    try:
        yield previous
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _child_setup(mask: set[int | signal.Signals]) -> Callable[[], None]:
    """The ``preexec_fn``: die with the parent, and give the program the
    signal mask the parent had before ``_signals_held``."""
    def setup() -> None:
        _die_with_parent()
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return setup


class LabProcess:
    """A process running in a lab namespace.

    stdout is a pipe read line by line with a deadline; stderr goes to a
    file so that a chatty process never blocks on a full pipe.
    """

    def __init__(self, node: Node, argv: Sequence[str], popen: subprocess.Popen[bytes],
                 stderr_path: Path) -> None:
        self.node = node
        self.argv = list(argv)
        self.popen = popen
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        """Every stdout line read so far."""
        self._buffer = b""
        self._eof = False
        self._cursor = 0
        self._terminated = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self) -> str:
        """The command, its exit status, stdout so far and stderr, for
        failure messages."""
        return (f"[{self.node.name}] {' '.join(self.argv)} (exit {self.returncode})\n"
                f"stdout:\n{chr(10).join(self.lines)}\nstderr:\n{self.stderr_text()[-4000:]}")

    def _read_some(self, deadline: float) -> bool:
        """Read what stdout has within the deadline; False at EOF or timeout."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            return False
        chunk = os.read(fd, 65536)
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        if len(self._buffer) > _MAX_LINE and b"\n" not in self._buffer:
            raise LabError(f"{self.node.name}: a stdout line longer than {_MAX_LINE} bytes")
        return True

    def wait_for_line(self, predicate: Callable[[str], bool], timeout: float) -> str:
        """Read stdout until a line satisfies ``predicate``; return it.

        Each call looks only at lines after the one the previous call
        returned, so repeated calls walk through the output in order.

        Raises ``LabError`` (with the process's output) if the process ends
        or ``timeout`` seconds pass first.
        """
        deadline = time.monotonic() + timeout
        while True:
            while b"\n" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\n", 1)
                self.lines.append(raw.decode(errors="replace").rstrip("\r"))
            while self._cursor < len(self.lines):
                line = self.lines[self._cursor]
                self._cursor += 1
                if predicate(line):
                    return line
            if self._eof or not self._read_some(deadline):
                break
        why = "ended" if self._eof else f"printed no such line within {timeout} s"
        raise LabError(f"{self.node.name}: the process {why}\n{self.describe()}")

    def terminate(self) -> None:
        """Send SIGTERM once, without waiting (``stop`` then waits)."""
        if self.popen.poll() is None and not self._terminated:
            self._terminated = True
            self.popen.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
        if self.popen.poll() is None:
            self.terminate()
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout)
        if self.popen.stdout is not None:
            self.popen.stdout.close()
        return self.popen.returncode


class Lab:
    """Namespaces, links, routes and NAT for one test; see the module doc."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, workdir: Path | None = None) -> None:
        if not _PREFIX.match(prefix):
            raise ValueError(f"lab prefix {prefix!r} must match {_PREFIX.pattern}")
        self.prefix = prefix
        self.run_id = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
        """Every namespace name starts with this."""
        self.nodes: dict[str, Node] = {}
        self.processes: list[LabProcess] = []
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.gettempdir()) / self.run_id
        """Daemon homes and stderr files; a fresh temporary directory
        (removed on exit) unless given."""
        self._entered = False

    # -- lifetime ---------------------------------------------------------

    def __enter__(self) -> Lab:
        require_lab()
        cleanup_stale(self.prefix)
        if self._own_workdir:
            self.workdir.mkdir(mode=0o700)
        self._entered = True
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        errors = self.close()
        if errors and exc is None:
            raise LabError("lab teardown failed: " + "; ".join(errors))

    def close(self) -> list[str]:
        """Stop every process, delete every namespace; return what failed."""
        errors: list[str] = []
        # All of them at once: twenty daemons each shutting down in turn
        # would take seconds.
        for proc in self.processes:
            try:
                proc.terminate()
            except OSError:
                pass  # it ended meanwhile; stop() below reports a real failure
        for proc in reversed(self.processes):
            try:
                proc.stop()
            except (OSError, subprocess.SubprocessError) as exc:
                errors.append(f"stopping {proc.argv[0]} in {proc.node.name}: {exc}")
        self.processes.clear()
        for node in reversed(list(self.nodes.values())):
            try:
                _delete_namespace(node.namespace)
            except LabError as exc:
                errors.append(str(exc))
        self.nodes.clear()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return errors

    # -- building ---------------------------------------------------------

    def _add_node(self, name: str, kind: NodeKind) -> Node:
        if not self._entered:
            raise LabError("use the Lab as a context manager (`with Lab() as lab:`)")
        if not _NODE_NAME.match(name):
            raise ValueError(f"node name {name!r} must match {_NODE_NAME.pattern}")
        if name in self.nodes:
            raise ValueError(f"the lab already has a node {name!r}")
        node = Node(name, f"{self.run_id}-{name}", kind)
        # Registered before creation so that teardown covers a half-made node.
        self.nodes[name] = node
        _run(["ip", "netns", "add", node.namespace])
        self.ip(node, "link", "set", "lo", "up")
        # The lab is IPv4 only: no link-local chatter, no autoconfiguration.
        self._sysctl(node, "net/ipv6/conf/all/disable_ipv6", "1", optional=True)
        self._sysctl(node, "net/ipv6/conf/default/disable_ipv6", "1", optional=True)
        if kind is NodeKind.ROUTER:
            self._sysctl(node, "net/ipv4/ip_forward", "1")
        elif kind is NodeKind.SWITCH:
            self.ip(node, "link", "add", _BRIDGE, "type", "bridge")
            self.ip(node, "link", "set", _BRIDGE, "up")
        return node

    def host(self, name: str) -> Node:
        """An end host (no forwarding)."""
        return self._add_node(name, NodeKind.HOST)

    def router(self, name: str) -> Node:
        """A namespace that forwards IPv4 between its interfaces."""
        return self._add_node(name, NodeKind.ROUTER)

    def switch(self, name: str) -> Node:
        """A namespace holding one bridge: a shared segment for many nodes."""
        return self._add_node(name, NodeKind.SWITCH)

    def link(self, a: Node, b: Node, a_addr: str | None = None, b_addr: str | None = None,
             *, a_ifname: str | None = None, b_ifname: str | None = None,
             ) -> tuple[Interface, Interface]:
        """A veth pair between ``a`` and ``b`` with addresses like
        ``"10.0.1.10/24"``.  The end in a switch joins its bridge and takes
        no address.  Interface names default to the other node's name."""
        if a.kind is NodeKind.SWITCH:
            raise ValueError("put the switch second: link(node, switch, addr)")
        a_if = a_ifname or b.name
        b_if = b_ifname or a.name
        for node, ifname in ((a, a_if), (b, b_if)):
            if ifname in node.interfaces:
                raise ValueError(f"{node.name} already has an interface {ifname!r}; name it")
            if len(ifname) > 15:
                raise ValueError(f"interface name {ifname!r} is longer than 15 characters")
        if b.kind is NodeKind.SWITCH and b_addr is not None:
            raise ValueError("a switch port takes no address")
        a_ip = ipaddress.IPv4Interface(a_addr) if a_addr else None
        b_ip = ipaddress.IPv4Interface(b_addr) if b_addr else None
        # Both ends are created in their namespaces at once: the root
        # namespace never sees them.
        _run(["ip", "link", "add", a_if, "netns", a.namespace, "type", "veth",
              "peer", "name", b_if, "netns", b.namespace])
        a.interfaces[a_if] = Interface(a.name, a_if, a_ip)
        b.interfaces[b_if] = Interface(b.name, b_if, b_ip)
        for node, ifname, ip in ((a, a_if, a_ip), (b, b_if, b_ip)):
            if ip is not None:
                self.ip(node, "addr", "add", str(ip), "dev", ifname)
            if node.kind is NodeKind.SWITCH:
                self.ip(node, "link", "set", ifname, "master", _BRIDGE)
            self.ip(node, "link", "set", ifname, "up")
        return a.interfaces[a_if], b.interfaces[b_if]

    def route(self, node: Node, prefix: str, via: str) -> None:
        """Route ``prefix`` (e.g. ``203.0.113.0/24``) through gateway ``via``.

        Default routes are refused on purpose: nothing leaves by accident
        for a prefix the lab does not model.
        """
        net = ipaddress.IPv4Network(prefix)
        if net.prefixlen == 0:
            raise ValueError("route each lab prefix explicitly; no default routes")
        self.ip(node, "route", "add", str(net), "via", str(ipaddress.IPv4Address(via)))

    def nat(self, router: Node, public_ifname: str, mode: NatMode | NatKind = NatMode.CONE,
            *, block_inbound: bool = True,
            udp_timeouts: UdpTimeouts | None | Literal["default"] = "default") -> str:
        """Masquerade what ``router`` forwards out of ``public_ifname``.

        With ``block_inbound`` new flows arriving on the public interface
        are not forwarded, as on a home router: only replies get in.
        Returns the nftables ruleset loaded (for failure messages).

        A ``NatKind`` builds that kind (``natkinds.apply_nat``) and sets the
        router's UDP conntrack timeouts: ``udp_timeouts``, by default the
        short ``natkinds.DEFAULT_UDP_TIMEOUTS``.  A ``NatMode`` keeps the
        kernel's timeouts unless ``udp_timeouts`` is given.
        """
        if isinstance(mode, NatKind):
            return apply_nat(self, router, public_ifname, mode, block_inbound=block_inbound,
                             timeouts=DEFAULT_UDP_TIMEOUTS if udp_timeouts == "default"
                             else udp_timeouts)
        if isinstance(udp_timeouts, UdpTimeouts):
            set_udp_timeouts(self, router, udp_timeouts)
        if router.kind is not NodeKind.ROUTER:
            raise ValueError(f"{router.name} is not a router")
        if public_ifname not in router.interfaces:
            raise ValueError(f"{router.name} has no interface {public_ifname!r}")
        flags = f" {mode.value}" if mode.value else ""
        forward = (f'        iifname "{public_ifname}" ct state established,related accept\n'
                   f'        iifname "{public_ifname}" drop\n' if block_inbound else "")
        # Unsolicited packets for the router itself are dropped before
        # conntrack confirms them: an [UNREPLIED] entry they left would make
        # masquerade give the inside host's next flow to that peer another
        # port (natkinds.py, module doc).
        local = (f'        iifname "{public_ifname}" ct state new '
                 'meta l4proto { udp, tcp } drop\n' if block_inbound else "")
        ruleset = (
            "table ip lab_nat {\n"
            "    chain postrouting {\n"
            "        type nat hook postrouting priority srcnat; policy accept;\n"
            f'        oifname "{public_ifname}" masquerade{flags}\n'
            "    }\n"
            "    chain forward {\n"
            "        type filter hook forward priority filter; policy accept;\n"
            f"{forward}"
            "    }\n"
            "    chain input {\n"
            "        type filter hook input priority filter; policy accept;\n"
            f"{local}"
            "    }\n"
            "}\n"
        )
        _run(["ip", "netns", "exec", router.namespace, "nft", "-f", "-"], input_text=ruleset)
        return ruleset

    # -- commands ---------------------------------------------------------

    def ip(self, node: Node, *args: str) -> str:
        """``ip -n <namespace> ARGS``; returns stdout."""
        return _run(["ip", "-n", node.namespace, *args])

    def sysctl(self, node: Node, key: str, value: str) -> None:
        """Write ``/proc/sys/<key>`` (``net/ipv6/conf/default/disable_ipv6``)
        in ``node``'s namespace."""
        self._sysctl(node, key, value)

    def _sysctl(self, node: Node, key: str, value: str, optional: bool = False) -> None:
        # /proc/sys/net shows the namespace of the process that opens it;
        # plain sh keeps procps out of the requirements.
        path = f"/proc/sys/{key}"
        script = f"[ -e {path} ] || exit 0; echo {value} > {path}" if optional \
            else f"echo {value} > {path}"
        _run(["ip", "netns", "exec", node.namespace, "sh", "-c", script])

    def run(self, node: Node, argv: Sequence[str], *, timeout: float = _COMMAND_TIMEOUT,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``node`` to completion and return it (any exit
        status); ``subprocess.TimeoutExpired`` after ``timeout`` seconds,
        the process killed."""
        with _signals_held() as mask:
            proc = subprocess.Popen(["ip", "netns", "exec", node.namespace, *argv],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env=env, preexec_fn=_child_setup(mask))
        with proc:
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                raise
            except BaseException:
                proc.kill()  # Ctrl-C: do not leave it running
                raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def popen(self, node: Node, argv: Sequence[str], *,
              env: dict[str, str] | None = None) -> LabProcess:
        """Start ``argv`` in ``node``; it is stopped when the lab closes,
        and killed if the thread that called ``popen`` dies first (call it
        from the main thread)."""
        stderr_path = self.workdir / f"{node.name}-{len(self.processes)}.stderr"
        with open(stderr_path, "wb") as stderr, _signals_held() as mask:
            # `ip netns exec` execs argv, so the pid is the program's own.
            popen = subprocess.Popen(["ip", "netns", "exec", node.namespace, *argv],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=stderr, env=env, preexec_fn=_child_setup(mask))
            # Tracked before a held Ctrl-C can arrive, so close() stops it.
            proc = LabProcess(node, argv, popen, stderr_path)
            self.processes.append(proc)
        return proc
