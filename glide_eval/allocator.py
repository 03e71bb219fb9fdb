"""Keep glibc's malloc from returning tensor memory to the kernel after every op.

CPU torch allocates activations with malloc. glibc serves blocks over its mmap threshold
with fresh mmaps and gives free memory at the top of the heap back above its trim
threshold, so a forward pass of many few-MiB activations page-faults all of them in again
on every call: the toy base model at batch 16 takes ~3,500 minor page faults per forward
pass, and system time was 11% of the default sweep's CPU time. Raising both thresholds
(what MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ do) keeps the memory in the process
for reuse: 0-16 faults per forward and 1.15-1.4x faster sampling (`bench/allocator.py`), at the
cost of holding up to TRIM_THRESHOLD of freed memory.

`tune_glibc_malloc()` is called once per `glide-eval` process. It does nothing off glibc or
when the user already chose malloc settings through the environment.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
TRIM_THRESHOLD = 256 << 20
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def user_chose_malloc_settings(environ=os.environ) -> bool:
    return any(k in environ for k in USER_SETTINGS) or "glibc.malloc." in environ.get("GLIBC_TUNABLES", "")


def tune_glibc_malloc(environ=os.environ) -> bool:
    """Raise glibc's mmap and trim thresholds; True when applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or user_chose_malloc_settings(environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
