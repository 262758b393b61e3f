"""A local, contract-strict implementation of Button's Order API (Button offers no sandbox).

Modules, from the inside out:

- ``validation``: Button's documented request rules as pure functions (``validate_create``...).
- ``state``: orders, their open / finalized / deleted life cycle, request history and counters.
- ``faults``: injected latency, errors, resets, hangs, outages and per-order rules.
- ``hold``: which requests park without an answer until a test releases them.
- ``server``: the aiohttp application (Button routes plus the ``/__sandbox/`` admin API).
- ``cli``: ``button-consumer sandbox`` arguments; ``python -m consumer.sandbox`` runs it alone.
- ``testing``: ``run_sandbox()``, a sandbox on a free loopback port for a test's duration.

Nothing here imports the service's own domain, engine or adapters: the sandbox implements
Button's contract independently, so a mapping bug in the service cannot be mirrored here.
This package imports nothing on its own, so ``consumer.sandbox.validation`` stays light.
"""
