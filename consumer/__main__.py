"""``python -m consumer`` is the same as the ``button-consumer`` command."""

from consumer.cli import main

raise SystemExit(main())
