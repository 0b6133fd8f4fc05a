"""`overlay holepunch status` text output from a daemon's reply."""

from __future__ import annotations

import pytest

from overlay.cli.holepunch import RECENT_SHOWN, print_status


def test_off_says_how_to_turn_it_on(capsys: pytest.CaptureFixture[str]) -> None:
    print_status({"enabled": False, "active": [], "counters": {}, "recent": []})
    assert "off" in capsys.readouterr().out


def test_sessions_show_outcome_time_and_attempts(capsys: pytest.CaptureFixture[str]) -> None:
    recent = [{"peer": f"12D3Koo{i}", "role": "initiator", "ok": i % 2 == 0,
               "how": "punched" if i % 2 == 0 else "no direct path", "attempts": 1,
               "rtt_ms": 40.5, "elapsed_ms": 160.2} for i in range(RECENT_SHOWN + 3)]
    print_status({"enabled": True, "active": ["12D3KooActive"],
                  "counters": {"sessions": 13, "punched": 7}, "recent": recent})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "hole punching: on, 1 session running"
    assert "counters: punched 7, sessions 13" in out
    assert f"latest {RECENT_SHOWN} of {RECENT_SHOWN + 3}:" in out
    shown = [line for line in out if line.startswith("  12D3Koo") and "(initiator)" in line]
    assert len(shown) == RECENT_SHOWN
    # The newest last: the oldest three are not shown.
    assert all("12D3Koo0 " not in line for line in shown)
    assert shown[-1].startswith(f"  12D3Koo{RECENT_SHOWN + 2} (initiator): direct, punched")
    assert "[160 ms, relayed RTT 40 ms, 1 attempt]" in shown[-1]


def test_repunch_counters_get_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    repunch = {"watching": 2, "busy": 1, "dead": 3, "repunches": 2, "peer_redialled": 1,
               "direct_again": 2, "still_relayed": 1, "migrated": 4}
    print_status({"enabled": True, "active": [], "counters": {}, "recent": [],
                  "repunch": repunch})
    out = capsys.readouterr().out
    assert ("re-punch: watching 2 punched paths (1 in use); dead 3, re-punched 2 "
            "(+1 by the peer), direct again 2, still relayed 1, QUIC migrations 4") in out
