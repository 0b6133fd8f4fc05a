"""``bench_relay.py`` with variants that set any module constant, measured
in the same rounds as the defaults.

    .venv/bin/python bench/relay_ab.py --mb 30 --rounds 7 \\
        --variant batch1:overlay.mux.yamux._WRITE_BATCH=65519 \\
        --variant ahead0:overlay.secure.stream._READ_AHEAD=0

Same arguments and output as ``bench_relay.py``; a variant's knobs may also
be ``module.NAME=int``, set in all three processes before the variant's
transfer and restored after it.  (``bench_relay.py``'s own knobs still work;
a knob changes only itself: the rest of the circuit's yamux configuration
stays what the circuit transport would pick.)
A constant is read where it is used, so this works for module-level
constants looked up at run time (``SPLICE_CHUNK``, ``_WRITE_BATCH``,
``_READ_AHEAD``), not for defaults baked into signatures.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing.connection
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_relay as br  # noqa: E402

_original_parse = br.parse_variant
_original_apply = br.apply_knobs
_defaults: dict[str, object] = {}


def _split(knobs: dict[str, int]) -> tuple[dict[str, int], dict[str, int]]:
    dotted = {k: v for k, v in knobs.items() if "." in k}
    return dotted, {k: v for k, v in knobs.items() if "." not in k}


def parse_variant(text: str) -> tuple[str, dict[str, int]]:
    name, _, rest = text.partition(":")
    knobs: dict[str, int] = {}
    plain = []
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        if "." in key:
            knobs[key] = int(value)
        else:
            plain.append(item)
    _, base = _original_parse(f"{name}:{','.join(plain)}")
    return name, {**base, **knobs}


def apply_knobs(host: Any, knobs: dict[str, int]) -> None:
    dotted, plain = _split(knobs)
    for key, value in _defaults.items():  # restore everything first
        module, _, attr = key.rpartition(".")
        setattr(importlib.import_module(module), attr, value)
    for key, value in dotted.items():
        module_name, _, attr = key.rpartition(".")
        module = importlib.import_module(module_name)
        _defaults.setdefault(key, getattr(module, attr))
        setattr(module, attr, value)
    _original_apply(host, plain)


def _patch() -> None:
    br.parse_variant = parse_variant  # type: ignore[assignment]
    br.apply_knobs = apply_knobs  # type: ignore[assignment]


_original_child_main = br.child_main


def child_main(role: str, pipe: multiprocessing.connection.Connection,
               args: argparse.Namespace) -> None:
    _patch()
    _original_child_main(role, pipe, args)


def main() -> None:
    _patch()
    br.child_main = child_main  # type: ignore[assignment]
    br.main()


if __name__ == "__main__":
    main()
