"""
What keeping freed CPU memory buys (hpvit_d2.cpu_memory.retain_freed_cpu_memory): a GELU and a copy
of a large float32 tensor into fresh output tensors and into one reused buffer, with the page faults
each fresh GELU costs. ``python -m hpvit_lab.memory_probe`` runs it under both allocator policies,
each in a fresh process (the policy changes the whole process); docs/benchmarks.md reads it.
"""
import os
import sys

from hpvit_d2 import cpu_memory
from hpvit_lab import lab_env

__all__ = ["probe"]


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
        "policy": cpu_memory.retained(),
        "gelu_fresh_ms": gelu_fresh,
        "gelu_reused_ms": timed(lambda: torch._C._nn.gelu(x, out=out))[0],
        "copy_fresh_ms": timed(lambda: x.clone())[0],
        "copy_reused_ms": timed(lambda: out.copy_(x))[0],
        "faults_per_fresh_gelu": statistics.median(faults),
        "faults_of_each_gelu": faults,
    }


def _main() -> int:
    """``python -m hpvit_lab.memory_probe``: :func:`probe` under both policies, each in a fresh process."""
    import json
    import subprocess

    if os.environ.get("_HPVIT_PROBE_CHILD"):
        cpu_memory.retain_freed_cpu_memory()
        print(json.dumps(probe()))
        return 0
    for value in ("0", "1"):
        env = lab_env(_HPVIT_PROBE_CHILD="1", **{cpu_memory.ENV_VAR: value})
        out = subprocess.run([sys.executable, "-m", "hpvit_lab.memory_probe"], env=env, check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['policy']}: 88 MB GELU {r['gelu_fresh_ms']:.1f} ms into fresh memory "
              f"({r['faults_per_fresh_gelu']:.0f} page faults), {r['gelu_reused_ms']:.1f} ms "
              f"into a reused buffer; copy {r['copy_fresh_ms']:.1f} / {r['copy_reused_ms']:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
