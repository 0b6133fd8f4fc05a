"""The `overlay` command line: one module per command group, all of them
built on ``overlay.cli.common`` (and ``overlay.cli.core`` for the node
commands), none importing a sibling that imports it back.  ``main`` (in
``overlay.cli.main``) assembles the parser; ``python -m overlay.cli`` runs it."""

from overlay.cli.common import EXIT_USAGE
from overlay.cli.main import build_parser, main

__all__ = ["EXIT_USAGE", "build_parser", "main"]
