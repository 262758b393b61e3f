"""glibc's allocator, told to give large freed blocks back to the system (``mallopt(3)``).

glibc serves a block of at least ``M_MMAP_THRESHOLD`` bytes (128 KiB at start) with a mapping of
its own, unmapped when freed. But each time such a block is freed it raises the threshold to
that block's size (up to 32 MiB on 64-bit systems), so later blocks of that size come from the
heap, whose free space goes back to the system only from its top. A process that grows large
tables once keeps their freed predecessors resident: here the profile store's dicts, doubled
again and again while a restore reads a million profiles, and librdkafka's fetch buffers. In
the bench's state test that was about 20 MB of a million profiles' peak RSS (386-401 MB
against 374-380 MB with the threshold fixed at 1 MiB).

Setting the threshold with ``mallopt`` fixes it: glibc's dynamic adjustment is off from then on.
1 MiB rather than glibc's starting 128 KiB: the tables that matter are megabytes, and each
mapped block costs a fresh mapping and its page faults (about 0.5 ms per MiB written), which
smaller blocks, such as most of librdkafka's fetch buffers, are spared. At 128 KiB the peak was
the same (370-377 MB).
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping

M_MMAP_THRESHOLD = -3
"""``mallopt``'s parameter number for the threshold (``<malloc.h>``)."""
MMAP_THRESHOLD_BYTES = 1024 * 1024
"""Blocks from 1 MiB up are mapped, and unmapped when freed (glibc starts at 128 KiB)."""


def fix_mmap_threshold(environ: Mapping[str, str] = os.environ) -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES`` for the rest of the process.

    Call it early, once. It does nothing when the C library is not glibc (musl, macOS) or when
    the environment already chooses a threshold (``MALLOC_MMAP_THRESHOLD_``, or
    ``glibc.malloc.mmap_threshold`` in ``GLIBC_TUNABLES``): an operator's setting wins.

    Returns:
        whether the threshold was set.
    """
    if not is_glibc():
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


def is_glibc() -> bool:
    """Whether the C library this Python runs on is glibc (``mallopt`` is glibc's)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION") is not None
    except (ValueError, OSError, AttributeError):  # not a GNU system
        return False
