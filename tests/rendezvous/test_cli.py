"""`overlay rendezvous` through real daemon processes: an introducer, a
peer that registers and one that discovers it (text and JSON), then
unregister and "nobody" (exit 4)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlay.cli import main
from tests.daemon.helpers import DaemonProcess


@dataclass
class Trio:
    point: DaemonProcess
    a: DaemonProcess
    b: DaemonProcess


@pytest.fixture(scope="module")
def trio() -> Iterator[Trio]:
    root = Path(tempfile.mkdtemp(prefix="ovl-rdv-", dir="/tmp"))
    try:
        with DaemonProcess(root / "r", "--dns", "off", "--introducer") as point:
            boot = ("--bootstrap", point.addrs[0])
            with DaemonProcess(root / "a", "--dns", "off", *boot) as a, \
                    DaemonProcess(root / "b", "--dns", "off", *boot) as b:
                yield Trio(point, a, b)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def run(node: DaemonProcess, *args: str) -> int:
    return main(["--home", str(node.home), "rendezvous", *args])


def test_register_discover_unregister(trio: Trio, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(trio.a, "register", "cli-chat", "--ttl", "7200") == 0
    out = capsys.readouterr().out
    assert out == (f"registered 'cli-chat' at {trio.point.peer_id} for 2 h "
                   "(kept alive until unregistered)\n")

    assert run(trio.b, "discover", "cli-chat") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{trio.a.peer_id}  {' '.join(trio.a.addrs)}"]

    assert run(trio.b, "discover", "cli-chat", "--json", "--at", trio.point.addrs[0]) == 0
    reply = json.loads(capsys.readouterr().out)
    assert [p["peer_id"] for p in reply["peers"]] == [trio.a.peer_id]
    assert reply["points"][0]["point"] == trio.point.peer_id and reply["cookie"]

    # With the cookie, only news: none yet, so exit 4 and a one-line reason.
    assert run(trio.b, "discover", "cli-chat", "--cookie", reply["cookie"],
               "--at", trio.point.peer_id) == 4
    err = capsys.readouterr().err.strip()
    assert err == ("overlay rendezvous discover: nobody is registered under 'cli-chat' "
                   "(1 rendezvous point asked)")

    # The discoverer's daemon kept the addresses: connecting by ID works.
    assert main(["--home", str(trio.b.home), "connect", f"/p2p/{trio.a.peer_id}"]) == 0
    capsys.readouterr()

    assert run(trio.a, "discover") == 0  # every namespace, this node marked
    assert f"[cli-chat] {trio.a.peer_id}" in capsys.readouterr().out

    assert run(trio.a, "unregister", "cli-chat") == 0
    assert capsys.readouterr().out == f"unregistered 'cli-chat' at {trio.point.peer_id}\n"
    assert run(trio.b, "discover", "cli-chat") == 4


def test_the_point_refuses_a_short_ttl_with_status_2(
        trio: Trio, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(trio.a, "register", "cli-short", "--ttl", "600") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("overlay rendezvous register: the rendezvous point refused "
                          "(E_INVALID_TTL): ttl 600 s is outside 7200..259200 s")
    assert "\n" not in err


def test_a_point_that_is_no_introducer(trio: Trio, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(trio.a, "register", "x", "--at", trio.b.addrs[0]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("overlay rendezvous register:") and "protocol_not_supported" in err
