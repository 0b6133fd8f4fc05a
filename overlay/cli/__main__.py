"""``python -m overlay.cli``: the same as the ``overlay`` console script."""

from overlay.cli.main import main

raise SystemExit(main())
