"""Benchmarks that choose between designs; results and how to reproduce them are in README.md.

Performance is compared as ratios of candidates run side by side in the same process tree on the
same machine, never asserted by timed tests.
"""
