"""``python -m flash``: the ``flash`` command."""

from flash.cli import main

raise SystemExit(main())
