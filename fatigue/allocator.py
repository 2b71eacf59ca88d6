"""Freed memory kept for the next training step instead of given back to the system (glibc).

A step allocates the same large tensors every time: one activation of the default model's
batch (32 clips of 30 frames) is 63 MB. glibc's malloc serves every block of 32 MB or more
(and, until it adapts, every block over 128 KB) with its own mmap and unmaps it when freed,
so each step got its memory back from the kernel as new pages, zeroed on first touch. On a
2-core CPU machine that was about 100,000 page faults a step and a quarter of the training
time (docs/performance.md#the-memory-allocator). Taking large blocks from the heap and
keeping freed memory there (up to TRIM_KEEP_BYTES at the heap's top; none from its middle
is given back) lets every later step reuse the same pages. The cost is resident memory: the
process stays near its peak until it exits. A training run repeats the same sizes, so it
does not grow over the run; a long-lived process whose tensor sizes keep changing would.

This is what PyTorch's CPU tuning guide gets from jemalloc or tcmalloc through LD_PRELOAD,
without installing anything. It changes where tensors live, never what is computed. Only
for work on the CPU: a GPU run's large host blocks are its data on the way to the GPU,
which this would keep in the process, unused, for the whole run.
"""
from __future__ import annotations

import ctypes
import os

import torch

# mallopt(3) parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
TRIM_KEEP_BYTES = 1 << 30  # freed memory at the heap's top beyond this goes back

_applied = False


def glibc() -> bool:
    """Whether this process runs on glibc (os.confstr knows only there)."""
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a name this system knows
        return False


def user_chose_allocator() -> bool:
    """Whether the environment sets glibc's malloc options (any MALLOC_* variable, a
    glibc.malloc tunable) or preloads another allocator (jemalloc, tcmalloc, mimalloc, whose
    mallopt would say yes and do nothing): the user's choice stands."""
    env = os.environ
    return (any(name.startswith("MALLOC_") for name in env)
            or "glibc.malloc" in env.get("GLIBC_TUNABLES", "")
            or "malloc" in env.get("LD_PRELOAD", ""))


def keep_freed_memory(device: torch.device) -> bool:
    """For work on `device`: on the CPU, serve large blocks from the heap and keep freed
    ones for reuse, for the rest of the process (its forked DataLoader workers included).
    True when in effect; False for a GPU, on a C library other than glibc (macOS, musl), or
    when the user chose (user_chose_allocator)."""
    global _applied
    if _applied:
        return True
    if device.type != "cpu" or not glibc() or user_chose_allocator():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # The trim threshold first: without it, freed heap memory would go back to the system.
    _applied = bool(mallopt(M_TRIM_THRESHOLD, TRIM_KEEP_BYTES)) and bool(mallopt(M_MMAP_MAX, 0))
    return _applied
