"""glibc's mmap threshold, fixed: a large block freed goes back to the system, also the second
time (``consumer.adapters.malloc``). Each case runs in a fresh interpreter, whose allocator has
not yet adjusted its threshold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumer.adapters.malloc import fix_mmap_threshold, is_glibc

SCRIPT = """
import sys
from consumer.adapters.malloc import fix_mmap_threshold

def rss_kib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])

if sys.argv[1] == "fixed":
    assert fix_mmap_threshold({})
size = 8 * 1024 * 1024
pages = bytes(size // 4096)

def touched():
    block = bytearray(size)
    block[::4096] = pages  # every page written: resident, whatever the allocator zeroed
    return block

block = touched()  # mapped (above the starting threshold); freeing it raises the threshold
del block
before = rss_kib()
block = touched()  # unfixed: now from the heap
del block
print(rss_kib() - before)
"""


ROOT = Path(__file__).resolve().parents[2]
"""The checkout under test: the child imports ``consumer`` from it."""
ALLOCATOR_SETTINGS = ("MALLOC_", "GLIBC_TUNABLES", "LD_PRELOAD", "PYTHONMALLOC")
"""Environment variables that change the allocator (several turn glibc's dynamic threshold off
on their own): the child runs without them."""


def _retained_kib(mode: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(ALLOCATOR_SETTINGS)}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    return int(done.stdout.strip())


@pytest.mark.skipif(not is_glibc(), reason="glibc's allocator only")
def test_a_large_block_freed_the_second_time_stays_resident_unless_the_threshold_is_fixed() -> None:
    """Without the fix, glibc serves the second 8 MiB block from its heap and keeps it after
    the free; with it, the block is mapped and unmapped again."""
    assert _retained_kib("dynamic") >= 6 * 1024
    assert _retained_kib("fixed") <= 1024


def test_an_operators_setting_wins() -> None:
    """A threshold chosen in the environment is left alone."""
    assert not fix_mmap_threshold({"MALLOC_MMAP_THRESHOLD_": "65536"})
    assert not fix_mmap_threshold({"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=65536"})
