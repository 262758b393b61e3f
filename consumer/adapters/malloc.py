"""glibc's allocator, told to give large freed blocks back to the system (``mallopt(3)``).

glibc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with a mapping of
its own, unmapped when freed. But each time such a block is freed it raises the threshold to
that block's size (up to 32 MiB on 64-bit systems), so later blocks of that size come from the
heap, whose free space goes back to the system only from its top. A process that grows large
tables once keeps their freed predecessors resident: here the profile store's dicts, doubled
again and again while a restore reads a million profiles, and librdkafka's fetch buffers. In
the bench's state test that was about 20 MB of a million profiles' peak RSS (387-396 MB
against 368-375 MB with the threshold fixed).

Setting the threshold with ``mallopt`` fixes it: glibc's dynamic adjustment is off from then on.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the threshold (``<malloc.h>``)."""
MMAP_THRESHOLD_BYTES = 128 * 1024
"""glibc's own starting value: blocks from 128 KiB up are mapped, and unmapped when freed."""


def fix_mmap_threshold(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES`` for the rest of the process.

    Call it early, once. It does nothing when the C library is not glibc (musl, macOS) or when
    the environment already chooses a threshold (``MALLOC_MMAP_THRESHOLD_``, or
    ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES``): an operator's setting wins.

    Returns:
        whether the threshold was set.
    """
    if not _glibc():
        return False
    tunables = environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_MMAP_THRESHOLD_" in environ or "glibc.malloc.mmap_threshold" in tunables:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def _glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False
