"""The plan of `overlay demo --nat` (pure): which peers, which pairs, in
which rounds, with which goal; and what the command says before it builds
anything (no root, a missing tool, options of the other demos).  The run
itself is interop/test_demo_nat.py."""

from __future__ import annotations

import os
import shutil
from itertools import combinations_with_replacement
from pathlib import Path

import pytest

from overlay.cli import main
from overlay.demo_nat import NAMES, PAIRS, PEER_KINDS, goal_of, missing_requirement, schedule
from overlay.lab.natkinds import NatKind

SYMMETRIC = {NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL}


def _klass(kind: NatKind) -> str:
    return "symmetric" if kind in SYMMETRIC else kind.value


def test_every_pair_of_kinds_is_tried_once_at_least() -> None:
    classes = sorted({_klass(k) for k in PEER_KINDS})
    tried = {frozenset((_klass(PEER_KINDS[a - 1]), _klass(PEER_KINDS[b - 1]))) for a, b in PAIRS}
    wanted = {frozenset(pair) for pair in combinations_with_replacement(classes, 2)}
    assert tried == wanted
    # Both symmetric allocations meet the port-restricted cone (birthday).
    against_port = {PEER_KINDS[x - 1] for a, b in PAIRS for x, y in ((a, b), (b, a))
                    if PEER_KINDS[y - 1] is NatKind.PORT_RESTRICTED_CONE}
    assert SYMMETRIC <= against_port


def test_every_kind_dials_and_is_dialled() -> None:
    kinds = set(PEER_KINDS)
    assert {PEER_KINDS[a - 1] for a, _ in PAIRS} == kinds
    assert {PEER_KINDS[b - 1] for _, b in PAIRS} == kinds


def test_pairs_are_distinct_peers_and_unique() -> None:
    assert len(set(PAIRS)) == len(PAIRS)
    assert all(a != b and 1 <= a <= len(PEER_KINDS) and 1 <= b <= len(PEER_KINDS)
               for a, b in PAIRS)
    assert len({frozenset(p) for p in PAIRS}) == len(PAIRS)


def test_goals_follow_the_issue() -> None:
    for a in NatKind:
        for b in NatKind:
            want = "relayed" if a in SYMMETRIC and b in SYMMETRIC else "direct"
            assert goal_of(a, b) == want == goal_of(b, a)
    relayed = [p for p in PAIRS if goal_of(PEER_KINDS[p[0] - 1], PEER_KINDS[p[1] - 1])
               == "relayed"]
    assert len(relayed) == 1


def test_rounds_never_use_a_peer_twice_and_cover_every_pair() -> None:
    rounds = schedule(PAIRS)
    assert sorted(p for r in rounds for p in r) == sorted(PAIRS)
    for r in rounds:
        peers = [x for pair in r for x in pair]
        assert len(peers) == len(set(peers)), r
    # Bounded: the busiest peer is in four pairs, and greedy needs no more
    # than one round over that here.
    assert len(rounds) <= 5


def test_schedule_keeps_order_within_a_round() -> None:
    assert schedule([(1, 2), (3, 4), (2, 3), (1, 4)]) == [[(1, 2), (3, 4)], [(2, 3), (1, 4)]]
    assert schedule([]) == []


def test_names_are_owned_by_peers_of_the_demo() -> None:
    assert len({name for name, _ in NAMES}) == len(NAMES)
    assert all(1 <= owner <= len(PEER_KINDS) for _, owner in NAMES)


# -- what the command says before building anything ------------------------------

def test_without_root_it_says_so_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert main(["--home", str(tmp_path), "demo", "--nat", "--json"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "needs root" in err, err


def test_a_missing_tool_is_named(monkeypatch: pytest.MonkeyPatch,
                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which",
                        lambda name, *a, **k: None if name == "nft" else real_which(name))
    assert missing_requirement() is not None
    assert main(["--home", str(tmp_path), "demo", "--nat"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "`nft` (package nftables)" in err, err


def test_options_of_the_other_demos_are_refused(capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path) -> None:
    for extra in (["--nodes", "3"], ["--peers", "4"], ["--pow-bits", "8"]):
        assert main(["--home", str(tmp_path), "demo", "--nat", *extra]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "--nat" in err, (extra, err)
