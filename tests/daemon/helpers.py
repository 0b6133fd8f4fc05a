"""Shared helpers: an in-process daemon and a daemon subprocess."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from overlay.daemon.config import DaemonConfig
from overlay.daemon.home import Home
from overlay.daemon.init import init_home
from overlay.daemon.node import Daemon
from overlay.daemon.ops import NodeOpsConfig
from overlay.host import HostConfig

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"
REPO = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def running_daemon(
    root: Path, host_config: HostConfig | None = None, ops_config: NodeOpsConfig | None = None
) -> AsyncIterator[Daemon]:
    home = Home(root)
    config = DaemonConfig(listen=(LOOPBACK,))
    key = init_home(home, config).key
    async with Daemon(home, config, key, host_config=host_config, ops_config=ops_config) as daemon:
        yield daemon


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "overlay.cli", *args]


class DaemonProcess:
    """`overlay daemon` in a subprocess; ``start()`` returns once it printed
    its ready line, so tests never sleep."""

    def __init__(self, home: Path, *extra: str, listen: tuple[str, ...] = (LOOPBACK,)) -> None:
        self.home = home
        args = ["--home", str(home), "daemon", *extra]
        for addr in listen:
            args += ["--listen", addr]
        self.proc = subprocess.Popen(
            cli_command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0,
            cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.output = b""
        self.peer_id = ""
        self.addrs: list[str] = []
        self._stderr: str | None = None

    def start(self, timeout: float = 30.0) -> DaemonProcess:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while not self._ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.kill()
                raise TimeoutError(f"daemon not ready: {self.output!r}")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    self.proc.wait(timeout=10)
                    raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.stderr()}")
                self.output += chunk
        for line in self.output.decode().splitlines():
            if line.startswith("peer id: "):
                self.peer_id = line.removeprefix("peer id: ")
            elif line.startswith("listening on "):
                self.addrs.append(line.removeprefix("listening on "))
        return self

    def _ready(self) -> bool:
        text = self.output
        return b"\nready\n" in text or (text.startswith(b'{"event": "ready"') and b"\n" in text)

    def stderr(self) -> str:
        """Everything the process wrote to stderr (once it has exited)."""
        if self._stderr is None and self.proc.poll() is not None and self.proc.stderr is not None:
            self._stderr = self.proc.stderr.read().decode()
        return self._stderr or ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.stderr()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()
