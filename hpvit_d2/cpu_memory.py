"""
Keep freed CPU memory for reuse instead of returning it to the OS (glibc ``mallopt``).

PyTorch's CPU allocator takes every tensor from ``malloc``. glibc serves blocks above its mmap
threshold (at most 32 MB) with a fresh ``mmap`` and unmaps them on free, so every large
activation of a ViT at detection resolution (a ViT-B MLP hidden layer for 7168 tokens is 88 MB)
is new memory, first touched one 4 KB page fault at a time (``python -m hpvit_d2.cpu_memory``
times a GELU and a copy into fresh and into reused memory, each policy in a fresh process).

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

__all__ = ["ENV_VAR", "probe", "retain_freed_cpu_memory", "retained"]

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


def probe(megabytes: int = 88, repeats: int = 10) -> dict:
    """
    Time a GELU and a copy of a ``megabytes`` float32 tensor into fresh output tensors (what
    eager PyTorch does) and into one reused buffer, under this process's allocator policy, and
    count the minor page faults of each fresh GELU (this process's own, from ``getrusage``).

    Returns:
        dict: ``policy``, ``gelu_fresh_ms``, ``gelu_reused_ms``, ``copy_fresh_ms``,
        ``copy_reused_ms``, ``faults_per_fresh_gelu`` (the median over the calls: with kept
        memory the heap grows during the first calls, until small allocations made in between,
        such as a thread pool starting, no longer split the freed block), ``faults_of_each_gelu``.
    """
    import resource
    import statistics
    import time

    import torch

    x = torch.randn(megabytes * 2**18)
    out = torch.empty_like(x)

    def timed(fn):
        fn()
        faults, seconds = [], 0.0
        for _ in range(repeats):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            fn()
            seconds += time.perf_counter() - start
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return seconds / repeats * 1e3, faults

    gelu_fresh, faults = timed(lambda: torch.nn.functional.gelu(x))
    return {
        "policy": retained(),
        "gelu_fresh_ms": gelu_fresh,
        "gelu_reused_ms": timed(lambda: torch._C._nn.gelu(x, out=out))[0],
        "copy_fresh_ms": timed(lambda: x.clone())[0],
        "copy_reused_ms": timed(lambda: out.copy_(x))[0],
        "faults_per_fresh_gelu": statistics.median(faults),
        "faults_of_each_gelu": faults,
    }


def _main() -> int:
    """``python -m hpvit_d2.cpu_memory``: :func:`probe` under both policies, each in a fresh process."""
    import json
    import subprocess

    if os.environ.get("_HPVIT_PROBE_CHILD"):
        retain_freed_cpu_memory()
        print(json.dumps(probe()))
        return 0
    for value in ("0", "1"):
        env = dict(os.environ, _HPVIT_PROBE_CHILD="1", **{ENV_VAR: value})
        out = subprocess.run([sys.executable, "-m", "hpvit_d2.cpu_memory"], env=env, check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['policy']}: 88 MB GELU {r['gelu_fresh_ms']:.1f} ms into fresh memory "
              f"({r['faults_per_fresh_gelu']:.0f} page faults), {r['gelu_reused_ms']:.1f} ms "
              f"into a reused buffer; copy {r['copy_fresh_ms']:.1f} / {r['copy_reused_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
