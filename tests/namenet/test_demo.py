"""The seed demo runs in-process and passes."""

from __future__ import annotations

import io
import json

import pytest

from overlay.seed_demo import run_seed_demo, seed_demo_report


async def test_seed_demo_passes_and_prints_a_table() -> None:
    out = io.StringIO()
    assert await run_seed_demo(out, timeout=120.0, pow_bits=8)
    text = out.getvalue()
    assert "1 introduction node + 10 peers" in text
    assert "OK: 20/20 resolutions and exchanges succeeded" in text
    assert text.count("alice.ovl") >= 10 and text.count("bob.ovl") >= 10


async def test_seed_demo_json_has_every_check() -> None:
    report = await seed_demo_report(peer_count=3, timeout=60.0, pow_bits=4)
    assert report.ok, report
    assert len(report.nodes) == 4 and len(report.checks) == 6
    assert all(c.peer_id_ok and c.addrs_ok for c in report.checks)
    out = io.StringIO()
    assert await run_seed_demo(out, peers=2, timeout=60.0, as_json=True, pow_bits=4)
    doc = json.loads(out.getvalue())
    assert doc["ok"] is True and all(item["ok"] for item in doc["checks"])


def test_overlay_demo_command_runs_the_seed_demo(capsys: pytest.CaptureFixture[str]) -> None:
    from overlay.cli import main

    assert main(["demo", "--peers", "3", "--pow-bits", "4", "--json", "--timeout", "60"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and len(doc["nodes"]) == 4 and len(doc["checks"]) == 6
    assert main(["demo", "--peers", "1"]) == 2
