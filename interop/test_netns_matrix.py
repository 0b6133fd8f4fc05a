"""A CI-sized piece of the hole-punching matrix (interop/netns/punch_matrix.py).

Three cells, two tries each, with real daemons and 20 ms on each NAT's WAN
link (80 ms between the peers):

- port-restricted cone x port-restricted cone: punched, first attempt;
- symmetric (random) dialling a full cone: direct; a full cone dialling a
  symmetric NAT: direct too (B, the symmetric side, dials A's cone from its
  listening socket after birthday's HELLOs, or A's confirmed address);
- symmetric x symmetric: stays relayed, still reachable, and B says why
  (both symmetric, from birthday's HELLOs) without a DCUtR attempt.

Each try starts fresh daemons on new ports and flushes the NATs' mappings
afterwards.  The full matrix (21 cells x 10 tries) runs from
``bench/punch_matrix.py``; its latest table is in docs/nat.md.  Needs root,
iproute2 and nftables; without root the tests skip.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # `netns` lives beside this file, not in the package
    sys.path.insert(0, str(HERE))

from netns import Lab, NatKind  # noqa: E402
from netns.daemons import lab_for_test  # noqa: E402
from netns.punch_matrix import (  # noqa: E402
    ALL_CELLS,
    CellResult,
    TryResult,
    format_table,
    goal_of,
    parse_cell,
    run_cell,
)

DELAY_MS = 20.0
TRIES = 2
LAB_RTT_MS = 4 * DELAY_MS


@pytest.fixture
def lab() -> Iterator[Lab]:
    yield from lab_for_test(tools=(("conntrack", "conntrack"),))


def _show(cell: CellResult) -> str:
    return f"\n{format_table([cell])}\n" + "\n".join(str(t) for t in cell.tries)


def _public_ip(kind: NatKind, index: int) -> str:
    """Where a peer of the two-peer matrix topology appears from outside."""
    return (f"198.51.100.{8 * index + 2}" if kind is NatKind.NONE
            else f"203.0.113.{100 + index}")


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_two_port_restricted_cones_punch_on_the_first_attempt(lab: Lab) -> None:
    kind = NatKind.PORT_RESTRICTED_CONE
    cell = run_cell(lab, kind, kind, TRIES, delay_ms=DELAY_MS)
    print(_show(cell))
    assert len(cell.tries) == TRIES, _show(cell)
    for got in cell.tries:
        assert got.outcome == "direct" and got.how == "punched", _show(cell)
        assert got.attempts == 1, _show(cell)
        assert got.reachable and got.ping_path == "direct", _show(cell)
        # A dialled B's NAT (203.0.113.102), not its LAN address.
        assert got.direct_addr is not None and "/ip4/203.0.113.102/udp/" in got.direct_addr
        # The introducer's stop CONNECT named A's NAT mapping, and B sent
        # its three punch packets there before the relayed connection was up.
        assert got.hint_packets == 3, _show(cell)
        # The relayed round trip crosses both delayed WAN links twice.
        assert got.rtt_ms is not None and got.rtt_ms >= LAB_RTT_MS, _show(cell)
        assert got.elapsed_ms is not None and got.elapsed_ms >= got.rtt_ms, _show(cell)
        assert got.elapsed_rtts == round(got.elapsed_ms / LAB_RTT_MS, 2)
        assert got.exits == [0, 0], _show(cell)
    summary = cell.summary()
    assert summary["direct_rate"] == 1.0 and summary["first_attempt_rate"] == 1.0
    assert summary["goal_met"] is True


def _assert_direct_to_b(cell: CellResult, b_index: int) -> None:
    for got in cell.tries:
        assert got.outcome == "direct", _show(cell)
        assert got.reachable and got.ping_path == "direct", _show(cell)
        # The direct connection leads to B's NAT, whichever side dialled.
        b_ip = _public_ip(NatKind(got.b_kind), b_index)
        assert got.direct_addr is not None and f"/ip4/{b_ip}/udp/" in got.direct_addr, (
            _show(cell))


@pytest.mark.netns
@pytest.mark.timeout(90)
def test_a_symmetric_nat_dialling_a_full_cone_goes_direct(lab: Lab) -> None:
    # A (behind the symmetric NAT) dials B's full cone when B's SYNC comes:
    # the full cone lets in whatever port A's NAT picked.
    cell = run_cell(lab, NatKind.SYMMETRIC_RANDOM, NatKind.FULL_CONE, TRIES, delay_ms=DELAY_MS,
                    alternate=False)
    print(_show(cell))
    assert [(t.a_kind, t.b_kind) for t in cell.tries] == [("symmetric-random", "full-cone")] * 2
    _assert_direct_to_b(cell, 2)
    assert cell.summary()["goal_met"] is True


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_a_full_cone_dialling_a_symmetric_nat_goes_direct(lab: Lab) -> None:
    # DCUtR alone fails here (A would dial the port B's NAT gave the
    # introducer); B dials A instead: unilaterally, or from its listening
    # socket once birthday's HELLOs said B is the symmetric side.
    cell = run_cell(lab, NatKind.FULL_CONE, NatKind.SYMMETRIC_RANDOM, TRIES, delay_ms=DELAY_MS,
                    alternate=False)
    print(_show(cell))
    assert [(t.a_kind, t.b_kind) for t in cell.tries] == [("full-cone", "symmetric-random")] * 2
    for got in cell.tries:
        assert got.verdicts == ["endpoint-independent", "endpoint-dependent"], _show(cell)
        assert got.how == "unilateral" or got.how.startswith("birthday (hard side"), _show(cell)
        assert got.attempts == 0, _show(cell)  # no DCUtR attempt was needed
        assert got.reachable and got.ping_path == "direct", _show(cell)
    assert cell.summary()["goal_met"] is True


@pytest.mark.netns
@pytest.mark.timeout(150)
def test_two_symmetric_nats_stay_relayed_reachable_and_say_why(lab: Lab) -> None:
    cell = run_cell(lab, NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL, TRIES,
                    delay_ms=DELAY_MS)
    print(_show(cell))
    assert len(cell.tries) == TRIES, _show(cell)
    for got in cell.tries:
        assert got.outcome == "relayed", _show(cell)
        # B's session ended at once with the reason from the HELLOs, and no
        # DCUtR attempt was spent on it.
        assert got.how.startswith("both sides are behind symmetric NATs"), _show(cell)
        assert got.attempts == 0, _show(cell)
        assert got.elapsed_ms is None and got.direct_addr is None
        assert got.reachable and got.ping_path == "relayed", _show(cell)
        assert got.exits == [0, 0], _show(cell)
    summary = cell.summary()
    assert summary["direct"] == 0 and summary["reachable"] == TRIES
    assert summary["goal_met"] is True
    assert "reachable 2/2" in format_table([cell])


# -- the runner's own logic, without a lab ---------------------------------------------

def test_cells_goals_and_the_table_without_a_lab() -> None:
    assert len(ALL_CELLS) == 21 and len(set(ALL_CELLS)) == 21
    assert parse_cell("port-restr") == (NatKind.PORT_RESTRICTED_CONE,) * 2
    assert parse_cell("full-cone:sym-rand") == (NatKind.FULL_CONE, NatKind.SYMMETRIC_RANDOM)
    with pytest.raises(Exception, match="want KIND"):
        parse_cell("cone:nope")
    assert goal_of(NatKind.SYMMETRIC_RANDOM, NatKind.SYMMETRIC_SEQUENTIAL) == ("relayed", 1.0)
    assert goal_of(NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC_RANDOM) == ("direct", 0.95)
    assert goal_of(NatKind.NONE, NatKind.SYMMETRIC_SEQUENTIAL) == ("direct", 1.0)
    cell = CellResult(NatKind.PORT_RESTRICTED_CONE, NatKind.SYMMETRIC_RANDOM, DELAY_MS)
    cell.tries = [TryResult(0, "port-restricted-cone", "symmetric-random", "direct",
                            "punched", 2, 800.0, 300.0, 85.0, 10.0, 3.75, reachable=True)]
    cell.tries += [TryResult(i, "symmetric-random", "port-restricted-cone", "relayed",
                             "no luck", 3, reachable=True) for i in range(1, 20)]
    summary = cell.summary()
    assert summary["direct_rate"] == 0.05 and summary["first_attempt_rate"] == 0.0
    assert summary["goal_met"] is False
    assert summary["failures"] == {"no luck [A=sym-rand B=port-restr]": 19}
    row = format_table([cell]).splitlines()[-1]
    assert row.startswith("| port-restr x sym-rand | 20 | 1/20 | 0/1 | 800 / 800 | 10.0 / 10.0 ")
    assert "MISSED" in row and "19x no luck" in row and "reachable 20/20" in row
