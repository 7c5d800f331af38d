"""
Keep freed CPU memory for reuse instead of returning it to the OS (glibc ``mallopt``).

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves blocks above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and unmaps them on free, so every large
activation of a ViT at detection resolution (a ViT-B MLP hidden layer for 7168 tokens is 88 MB)
is new memory, first touched one 4 KB page fault at a time (the lab's
``python -m hpvit_lab.memory_probe`` times a GELU and a copy into fresh and into reused memory,
each policy in a fresh process).

:func:`retain_freed_cpu_memory` turns glibc's ``mmap`` for large blocks off and raises its trim
threshold, so freed blocks stay in the heap and the next pass reuses them, as the CUDA caching
allocator does on a GPU. The price is resident memory: the process keeps its peak, and freed
blocks inside the heap serve only requests that fit in them, so a workload whose temporaries are
several GB and grow (detectron2's ViT-B at 1536x1536, with its 4 GB attention matrices per global
block) keeps growing the heap, where the system allocator runs it.
HPViT's attention and banded inference bound every temporary (``attention.BIAS_CHUNK_BYTES``,
``bands.INFERENCE_BAND_TOKENS``), which is where this policy pays. It changes the whole process
and only ``malloc`` calls made after it, so nothing calls it but a caller that owns its process
(``hpvit-demo`` on the CPU, the bench, or ``optimize_for_cpu_inference(retain_freed_memory=True)``).
``HPVIT_RETAIN_FREED_MEMORY=0`` in the environment turns it off.
"""
import ctypes
import ctypes.util
import os
import sys

__all__ = ["ENV_VAR", "retain_freed_cpu_memory", "retained"]

ENV_VAR = "HPVIT_RETAIN_FREED_MEMORY"

# mallopt parameters (glibc malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1  # mallopt takes an int: the largest trim threshold it can be given

_state = {"retained": False, "reason": "not requested"}


def retain_freed_cpu_memory() -> str:
    """
    Make glibc keep freed memory in the heap (no ``mmap`` for large blocks, trim threshold at its
    maximum, 2 GB). Idempotent.

    Returns:
        str: what was done, one line ("glibc keeps freed memory (mallopt M_MMAP_MAX=0,
        M_TRIM_THRESHOLD=2 GB)", or why nothing was: not Linux/glibc, or turned off by
        ``HPVIT_RETAIN_FREED_MEMORY=0``), also in :func:`retained`.
    """
    if _state["retained"]:
        return _state["reason"]
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        _state["reason"] = f"system allocator ({ENV_VAR}=0)"
        return _state["reason"]
    if not sys.platform.startswith("linux"):
        _state["reason"] = f"system allocator (mallopt is glibc's; this is {sys.platform})"
        return _state["reason"]
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        _state["reason"] = "system allocator (no glibc mallopt in this C library)"
        return _state["reason"]
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(_M_MMAP_MAX, 0) != 1 or mallopt(_M_TRIM_THRESHOLD, _INT_MAX) != 1:
        _state["reason"] = "system allocator (glibc refused mallopt)"
        return _state["reason"]
    _state.update(retained=True,
                  reason="glibc keeps freed memory (mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2 GB)")
    return _state["reason"]


def retained() -> str:
    """The allocator policy in force, one line (see :func:`retain_freed_cpu_memory`)."""
    return _state["reason"]
