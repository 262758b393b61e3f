"""``python -m bench`` (``make bench``): the service against ceilings and peers (bench/suite.py).

``python -m bench transport ...`` runs the transport benchmark instead; see bench/README.md.
"""

import sys

if sys.argv[1:2] == ["transport"]:
    from bench import transport

    raise SystemExit(transport.main(sys.argv[2:]))

from bench import suite

raise SystemExit(suite.main(sys.argv[1:]))
