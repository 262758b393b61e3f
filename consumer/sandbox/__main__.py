"""``python -m consumer.sandbox``: run the Button sandbox without the service's main CLI."""

import argparse

from consumer.sandbox.cli import HelpWithDefaults, add_arguments, run_from_args

parser = argparse.ArgumentParser(
    prog="python -m consumer.sandbox",
    description="A local, contract-strict Button Order API for tests, demos and benchmarks.",
    formatter_class=HelpWithDefaults,
)
add_arguments(parser)
raise SystemExit(run_from_args(parser.parse_args()))
