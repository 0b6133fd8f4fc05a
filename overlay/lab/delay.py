"""Delay and loss on a lab link, in user space.

This machine's kernel (and CI's) has no ``sch_netem``, so a delayed link is
a wire with a small Python forwarder in the middle:

    a[a_if] ── veth ── [sidea | delay namespace | sideb] ── veth ── [b_if]b

The forwarder (``overlay.lab.forwarder``, started with ``Lab.popen``; it
dies with its starter through ``PR_SET_PDEATHSIG`` and after
``max_seconds`` anyway) reads every frame from one side, holds it for the
delay and writes it to the other side, dropping a seeded random share of
frames for loss.  It is a bridge to both ends: ARP and IP pass through
unchanged.  The two ends that send into it get their checksum offloads
turned off first (see the forwarder's doc).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from overlay.lab.lab import Interface, Lab, LabProcess, Node

__all__ = ["COMMAND", "DEFAULT_MAX_SECONDS", "DelayedLink", "delayed_link"]

SCRIPT = Path(__file__).resolve().with_name("forwarder.py")
COMMAND = (sys.executable, "-m", "overlay.lab.forwarder")
"""How the lab starts the forwarder in a namespace (from the installed
package, so it works wherever ``overlay`` is installed)."""
DEFAULT_MAX_SECONDS = 1800.0
"""A forwarder exits by itself after this long."""


# -- the lab side ------------------------------------------------------------

@dataclass(slots=True)
class DelayedLink:
    """A link through a forwarder namespace; ``a_end``/``b_end`` are the
    interfaces in ``a`` and ``b`` as ``Lab.link`` would have made them."""

    a_end: Interface
    b_end: Interface
    node: Node
    """The forwarder's namespace."""
    process: LabProcess
    delay_ms: float
    delay_ms_back: float
    loss: float

    @property
    def rtt_ms(self) -> float:
        """The round-trip time this link adds."""
        return self.delay_ms + self.delay_ms_back

    def stop(self, timeout: float = 5.0) -> dict[str, dict[str, int]]:
        """Stop the forwarder (the link goes dead); return its counters
        (``{}`` if it printed none)."""
        from overlay.lab.lab import LabError

        if self.process.returncode is None:
            self.process.popen.send_signal(signal.SIGTERM)
        counters: dict[str, dict[str, int]] = {}
        try:
            counters = json.loads(self.process.wait_for_line(
                lambda line: line.startswith("{"), timeout))
        except LabError:
            pass
        try:
            self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            pass  # stop() below kills it
        self.process.stop()
        return counters


def delayed_link(lab: Lab, a: Node, b: Node, a_addr: str | None = None,
                 b_addr: str | None = None, *, delay_ms: float,
                 delay_ms_back: float | None = None, loss: float = 0.0, seed: int = 0,
                 a_ifname: str | None = None, b_ifname: str | None = None,
                 name: str | None = None, ready_timeout: float = 10.0,
                 max_seconds: float = DEFAULT_MAX_SECONDS) -> DelayedLink:
    """Like ``lab.link(a, b, …)``, with a forwarder in between that delays
    each frame by ``delay_ms`` (``delay_ms_back`` from b to a) and drops
    ``loss`` of them (per direction, seeded).  ``b`` may be a switch.

    The forwarder namespace is named ``name`` (default ``d`` + a's name).
    The forwarder stops with the lab, dies with the thread that built the
    link (``PR_SET_PDEATHSIG``) and exits by itself after ``max_seconds``.
    """
    node = lab.host(name or f"d{a.name}"[:15])
    a_end, _ = lab.link(a, node, a_addr, None, a_ifname=a_ifname, b_ifname="sidea")
    _, b_end = lab.link(node, b, None, b_addr, a_ifname="sideb", b_ifname=b_ifname)
    for end_node, end in ((a, a_end), (b, b_end)):
        done = lab.run(end_node, [*COMMAND, "offload-off", end.name])
        if done.returncode != 0:
            raise RuntimeError(f"offloads on {end_node.name}/{end.name}: {done.stderr.strip()}")
    for ifname in ("sidea", "sideb"):
        lab.ip(node, "link", "set", ifname, "promisc", "on")
    back = delay_ms if delay_ms_back is None else delay_ms_back
    argv = [*COMMAND, "forward", "sidea", "sideb", "--delay-ms", str(delay_ms),
            "--delay-ms-back", str(back), "--loss", str(loss), "--seed", str(seed),
            "--max-seconds", str(max_seconds)]
    proc = lab.popen(node, argv)
    proc.wait_for_line(lambda line: line == "ready", ready_timeout)
    return DelayedLink(a_end, b_end, node, proc, delay_ms, back, loss)
