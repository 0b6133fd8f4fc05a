"""What a daily user of `overlay` meets without a daemon: help texts,
completion scripts, broken pipes, readable times, plurals, progress lines
and the `cmd/overlay` launcher."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from overlay.cli import build_parser, main
from overlay.cli.common import format_duration, format_until, format_when, plural
from overlay.cli.completion import SHELLS, command_tree, render
from overlay.cli.progress import ProgressLine, SlowWait
from tests.daemon.helpers import REPO, cli_command

NOW = 1_795_000_000.0  # 2026-11-18 11:06:40 UTC, a fixed "now"


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    out: list[tuple[str, argparse.ArgumentParser]] = []

    def walk(parser: argparse.ArgumentParser, path: str) -> None:
        out.append((path, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    walk(child, f"{path} {name}")

    walk(build_parser(), "overlay")
    return out


# -- help ------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "parser"), _parsers()[1:], ids=lambda v: str(v))
def test_every_subcommand_has_a_description_an_example_and_argument_help(
        path: str, parser: argparse.ArgumentParser) -> None:
    if path == "overlay sim":
        return  # the simulator's own parser answers `sim --help`
    assert parser.description, f"{path} has no description"
    assert parser.epilog and "example" in parser.epilog and "overlay" in parser.epilog, path
    for action in parser._actions:
        if not action.option_strings and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{path}: positional {action.dest} has no help"


def test_subcommand_help_shows_its_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dht", "put", "--help"]) == 0
    out = capsys.readouterr().out
    assert "overlay dht put -f photo.jpg" in out and "10,173 bytes" in out


def test_dht_put_limit_matches_the_daemon() -> None:
    from overlay.cli.dht import MAX_VALUE_BYTES
    from overlay.daemon.ops_dht import MAX_VALUE_BYTES as DAEMON_LIMIT

    assert MAX_VALUE_BYTES == DAEMON_LIMIT == 10_173


def test_errors_name_the_full_subcommand(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--home", str(tmp_path), "dht", "put", "x" * 10_174]) == 2
    err = capsys.readouterr().err
    assert err == ("overlay dht put: the value is 10,174 bytes; "
                   "the limit is 10,173 bytes\n")
    assert main(["--home", str(tmp_path), "name", "list", "extra"]) == 2
    assert capsys.readouterr().err.startswith("overlay name list: unrecognized arguments")


def test_demo_says_it_is_lighter_than_a_daemon() -> None:
    from overlay.cli.core import _demo_note

    note = _demo_note(16)
    assert "proof of work 16 bits (a daemon requires 20)" in note and "quorum 3" in note


# -- wording -----------------------------------------------------------------------------


def test_readable_times() -> None:
    later = NOW + 23 * 3600 + 120
    assert format_when(later, NOW) == "2026-11-19 10:08 UTC (in 23 h)"
    assert format_until(later, NOW) == "until 2026-11-19 10:08 UTC (in 23 h)"
    assert format_when(NOW - 300, NOW).endswith("(5 min ago)")
    assert format_when(NOW, NOW).endswith("(now)")
    assert format_when(None, NOW) == "-"
    assert [format_duration(s) for s in (40, 300, 7200, 5 * 86400)] == [
        "40 s", "5 min", "2 h", "5 d"]


def test_plurals() -> None:
    assert plural(1, "peer") == "1 peer"
    assert plural(0, "peer") == "0 peers"
    assert plural(2, "entry", "entries") == "2 entries"


# -- completion ------------------------------------------------------------------------


def _commands() -> set[str]:
    return {word for node in command_tree(build_parser()) for word, _ in node.words}


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_script_names_every_subcommand(shell: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", shell]) == 0
    script = capsys.readouterr().out
    assert script == render(shell, build_parser())
    for word in _commands():
        assert word in script, f"{word} missing from the {shell} script"
    for option in ("--json", "--home", "--limit", "--output"):
        assert option.lstrip("-") in script


def _bash_complete(script: Path, line: str) -> list[str]:
    words = line.split(" ")
    program = (f"source {script}\n"
               f"COMP_WORDS=({' '.join(repr(w) for w in words)}); "
               f"COMP_CWORD={len(words) - 1}\n"
               "_overlay_complete\n"
               'printf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run([_shell("bash"), "--norc", "-c", program], capture_output=True,
                          text=True, timeout=30, check=True)
    return sorted(done.stdout.split())


def test_bash_completion_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    script = tmp_path / "overlay.bash"
    script.write_text(capsys.readouterr().out)
    subprocess.run(["bash", "-n", str(script)], check=True, timeout=30)
    assert _bash_complete(script, "overlay dht find") == ["find-peer", "find-providers"]
    assert "register" in _bash_complete(script, "overlay --home /tmp/x name ")
    assert _bash_complete(script, "overlay daemon --dht-mode ") == ["client", "server"]
    assert {"bash", "fish", "zsh"} <= set(_bash_complete(script, "overlay completion "))
    assert "--limit" in _bash_complete(script, "overlay dht find-providers --")


def _shell(name: str) -> str:
    path = shutil.which(name)
    # A missing shell fails (scripts/test.sh installs it), never skips.
    assert path is not None, f"{name} is not installed: apt-get install {name}"
    return path


def _zsh_complete(script: Path, line: str) -> list[str]:
    """Run the zsh function with stand-ins for the completion builtins,
    which need a live line editor: they print what would be offered."""
    words = line.split(" ")
    program = (
        "_describe() { local name=${@[-1]}; print -l -- ${${(P)name}%%:*} }\n"
        "compadd() { [[ $1 == -- ]] && shift; print -l -- $@ }\n"
        "_files() { print FILES }\n"
        "compdef() { }\n"
        f"source {script}\n"
        f"words=({' '.join(repr(w) for w in words)}); CURRENT={len(words)}\n"
        "_overlay\n")
    done = subprocess.run([_shell("zsh"), "-f", "-c", program], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return sorted(done.stdout.split())


def test_zsh_completion_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "zsh"]) == 0
    script = tmp_path / "_overlay"
    script.write_text(capsys.readouterr().out)
    subprocess.run([_shell("zsh"), "-n", str(script)], check=True, timeout=30)
    assert {"find-peer", "find-providers", "put"} <= set(_zsh_complete(script, "overlay dht "))
    assert "register" in _zsh_complete(script, "overlay --home /tmp/x name ")
    assert _zsh_complete(script, "overlay daemon --dht-mode ") == ["client", "server"]
    assert _zsh_complete(script, "overlay dht get -o ") == ["FILES"]
    assert "--limit" in _zsh_complete(script, "overlay dht find-providers --")


def _fish_complete(script: Path, line: str) -> list[str]:
    done = subprocess.run([_shell("fish"), "--no-config", "-c",
                           f"source {script}; complete -C {line!r}"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return sorted(row.split("\t")[0] for row in done.stdout.splitlines())


def test_fish_completion_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "fish"]) == 0
    script = tmp_path / "overlay.fish"
    script.write_text(capsys.readouterr().out)
    subprocess.run([_shell("fish"), "--no-execute", str(script)], check=True, timeout=30)
    assert _fish_complete(script, "overlay dht find") == ["find-peer", "find-providers"]
    assert {"register", "release", "resolve"} <= set(
        _fish_complete(script, "overlay --home /x name re"))
    assert _fish_complete(script, "overlay daemon --dht-mode ") == ["client", "server"]


# -- broken pipes ------------------------------------------------------------------------


def _closed_pipe_run(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Run with stdout a pipe whose read end is already closed, so the
    first write fails with EPIPE whatever the timing."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(argv, stdout=write_end, stderr=subprocess.PIPE, timeout=60,
                              cwd=REPO)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("args", [
    ["completion", "bash"],
    ["--help"],
    ["sim", "--nodes", "20", "--lookups", "5"],
])
def test_broken_pipe_exits_141_quietly(args: list[str]) -> None:
    done = _closed_pipe_run(cli_command(*args))
    assert done.returncode == 141, done.stderr
    assert done.stderr == b""


# -- progress ----------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.wrote = asyncio.Event()

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.wrote.set()
        return super().write(text)


async def test_slow_wait_shows_seconds_on_a_terminal_then_clears() -> None:
    tty = _Terminal()
    async with SlowWait("looking up", after=0.0, line=ProgressLine(stream=tty)) as wait:
        wait.estimate = 3.0
        await asyncio.wait_for(tty.wrote.wait(), 10)
    text = tty.getvalue()
    assert "looking up… " in text and "(expected about 3 s)" in text
    assert text.endswith("\r\x1b[K")


async def test_slow_wait_finish_clears_before_output() -> None:
    tty = _Terminal()
    async with SlowWait("connecting", after=0.0, line=ProgressLine(stream=tty)) as wait:
        await asyncio.wait_for(tty.wrote.wait(), 10)
        wait.finish()
        shown = tty.getvalue()
        assert shown.endswith("\r\x1b[K") and "connecting… " in shown
    assert tty.getvalue() == shown  # the ticker was stopped, not just hidden


async def test_slow_wait_is_silent_when_piped_or_json() -> None:
    piped = io.StringIO()
    async with SlowWait("looking up", after=0.0, line=ProgressLine(stream=piped)):
        await asyncio.sleep(0)  # let a ticker (there must be none) run once
    tty = _Terminal()
    async with SlowWait("looking up", after=0.0, line=ProgressLine(False, stream=tty)):
        await asyncio.sleep(0)  # the same: a ticker that must not exist gets its turn
    assert piped.getvalue() == "" and tty.getvalue() == ""


# -- cmd/overlay ---------------------------------------------------------------------------


def test_cmd_overlay_runs_from_a_checkout(tmp_path: Path) -> None:
    """A copy of the checkout whose version string differs: the launcher
    must import that copy, not the installed package, from any directory
    and with a clean environment."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "overlay", checkout / "overlay",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (checkout / "cmd").mkdir()
    shutil.copy2(REPO / "cmd" / "overlay", checkout / "cmd" / "overlay")
    init = checkout / "overlay" / "__init__.py"
    text = init.read_text()
    assert "AGENT_VERSION" in text
    init.write_text(text + '\nAGENT_VERSION = "overlay/checkout-copy"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, str(checkout / "cmd" / "overlay"), "--version"],
                          capture_output=True, text=True, timeout=60, cwd=elsewhere,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "overlay/checkout-copy"
    assert not (REPO / "cmd" / "__init__.py").exists()
