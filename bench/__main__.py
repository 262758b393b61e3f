"""``python -m bench`` (``make bench``): the transport benchmark; see bench/README.md."""

from bench.transport import main

raise SystemExit(main())
