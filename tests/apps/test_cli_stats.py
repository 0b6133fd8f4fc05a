"""`overlay stats` text output: the exit section (the JSON reply's ``exit``)."""

from __future__ import annotations

from overlay.cli.stats import format_stats


def test_exit_section_lists_counters_refusals_and_clients() -> None:
    reply = {"limits": {"exit.port_refused": 2}, "api": {"clients": 1},
             "exit": {"connections": 5, "active": 1, "failed": 0, "bytes_to_clients": 900,
                      "bytes_from_clients": 120, "refused": {"not_allowed": 1, "port": 2},
                      "clients": {"12D3KooWB": {"open": 1, "connections": 4, "bytes": 1020},
                                  "12D3KooWA": {"open": 0, "connections": 1, "bytes": 0}},
                      "ports": [80, 443]}}
    lines = format_stats(reply)
    assert lines[:2] == ["limits hit:", "  exit.port_refused: 2"]
    at = lines.index("exit: connections 5, active 1, failed 0, bytes to clients 900, "
                     "bytes from clients 120, ports 80,443")
    assert lines[at + 1:] == ["  refused: not allowed 1, port 2",
                              "  client 12D3KooWA: open 0, connections 1, bytes 0",
                              "  client 12D3KooWB: open 1, connections 4, bytes 1020"]


def test_no_exit_section_without_an_exit() -> None:
    lines = format_stats({"limits": {}, "api": {"clients": 0}})
    assert lines == ["limits hit: none", "api: clients 0"]
    assert not [line for line in format_stats({"limits": {}, "exit": {}})
                if line.startswith("exit")]
