"""
One global attention with decomposed relative positions (ViTDet's), computed four ways, on the
same inputs: time, peak memory and the difference to the chunked SDPA that HPViT runs.

    python -m hpvit_lab.bench_attention                  # ViT-B heads, 32x32 and 64x64 tokens
    python -m hpvit_lab.bench_attention --sides 64 96 --variants sdpa-chunked flex-compiled

Variants (``--variants``):
- ``sdpa-chunked``: ``hpvit_d2.modeling.attention`` (SDPA over chunks of query rows, each with its
  slice of the bias; the (heads, N, N) bias is never whole);
- ``sdpa-whole-bias``: SDPA with the whole (heads, N, N) bias as its mask;
- ``flex-eager`` / ``flex-compiled``: ``torch.nn.attention.flex_attention`` with a ``score_mod``
  that adds the two decomposed terms (``torch.compile`` of it for the second).

Each (variant, side) runs in a fresh subprocess: one first call (compiling, for ``flex-compiled``),
then ``--runs`` timed calls; "pass peak" is what the calls add to the process's resident memory at
their high-water mark (reset through /proc/self/clear_refs once the inputs are built). A side of 64 is a global block of ViT-B at 1024.
"""
import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from typing import Dict, List, Sequence

from hpvit_d2.cli.common import EXIT_OK, run
from .blocks import command_line, update_readme_block

from . import lab_env

__all__ = ["VARIANTS", "main", "measure"]

VARIANTS = ("sdpa-chunked", "sdpa-whole-bias", "flex-eager", "flex-compiled")


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(variant: str, side: int, heads: int, dim: int, runs: int, threads: int) -> Dict:
    """One (variant, side) in this process: {"first_s", "median_s", "peak_mb", "max_diff"}."""
    import torch
    import torch.nn.functional as F

    from hpvit_d2.modeling.attention import sdpa_with_rel_pos, decomposed_rel_pos_bias

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    n = side * side
    q, k, v = (torch.randn(1, heads, n, dim) for _ in range(3))
    table_h, table_w = (torch.randn(2 * side - 1, dim) * 0.02 for _ in range(2))
    scale = dim ** -0.5

    def chunked():
        return sdpa_with_rel_pos(q, k, v, table_h, table_w, (side, side), scale)

    if variant == "sdpa-chunked":
        fn = chunked
    elif variant == "sdpa-whole-bias":
        def fn():
            bias = decomposed_rel_pos_bias(q, table_h, table_w, (side, side), (side, side))
            return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    elif variant.startswith("flex"):
        from detectron2.modeling.backbone.utils import get_rel_pos
        from torch.nn.attention.flex_attention import flex_attention

        rows = q.reshape(-1, side, side, dim)
        term_h = torch.einsum("bhwc,hkc->bhwk", rows, get_rel_pos(side, side, table_h))
        term_w = torch.einsum("bhwc,wkc->bhwk", rows, get_rel_pos(side, side, table_w))
        term_h = term_h.reshape(1, heads, n, side).contiguous()
        term_w = term_w.reshape(1, heads, n, side).contiguous()

        def score_mod(score, b, h, qi, ki):
            return score + term_h[b, h, qi, ki // side] + term_w[b, h, qi, ki % side]

        attend = torch.compile(flex_attention) if variant == "flex-compiled" else flex_attention

        def fn():
            return attend(q, k, v, score_mod=score_mod, scale=scale)
    else:
        raise ValueError(f"variant {variant!r}: choose from {VARIANTS}")
    reference = chunked()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the resident high-water mark: the inputs are built
    except OSError:
        pass
    before = _status_mb("VmRSS")
    with torch.no_grad():
        start = time.perf_counter()
        out = fn()
        first = time.perf_counter() - start
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
    return {"first_s": first, "median_s": sorted(times)[len(times) // 2], "peak_mb": _status_mb("VmHWM") - before,
            "max_diff": float((out - reference).abs().max())}


def _measure_in_subprocess(variant: str, side: int, args) -> Dict:
    spec = json.dumps(dict(variant=variant, side=side, heads=args.heads, dim=args.dim,
                           runs=args.runs, threads=args.threads))
    proc = subprocess.run([sys.executable, "-m", "hpvit_lab.bench_attention", "--one", spec],
                          capture_output=True, text=True, env=lab_env())
    if proc.returncode != 0:  # reported in the table, not fatal (flex may not run here)
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": last[:160]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def markdown_table(rows: List[Dict]) -> str:
    lines = ["| variant | tokens | first call (s) | median (s) | vs sdpa-chunked | pass peak (MB) | "
             "max diff |", "|---|---|---:|---:|---:|---:|---:|"]
    base = {r["side"]: r["median_s"] for r in rows if r["variant"] == "sdpa-chunked" and "median_s" in r}
    for r in rows:
        tokens = f"{r['side']}x{r['side']}"
        if "error" in r:
            lines.append(f"| {r['variant']} | {tokens} | failed: {r['error']} | | | | |")
            continue
        ratio = f"{r['median_s'] / base[r['side']]:.2f}x" if r["side"] in base else "-"
        lines.append(f"| {r['variant']} | {tokens} | {r['first_s']:.2f} | {r['median_s']:.3f} | "
                     f"{ratio} | {r['peak_mb']:.0f} | {r['max_diff']:.1e} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpvit_lab.bench_attention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sides", type=int, nargs="+", default=[32, 64],
                   help="token map sides (64: a global block of ViT-B at 1024)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--dim", type=int, default=64, help="channels per head")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--readme", help="write the table into this README's 'bench-attention' block")
    p.add_argument("--one", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(**json.loads(args.one))))
        return EXIT_OK
    rows = []
    for side in args.sides:
        for variant in args.variants:
            print(f"[bench_attention] {variant} at {side}x{side} tokens ...", file=sys.stderr,
                  flush=True)
            rows.append({"variant": variant, "side": side, **_measure_in_subprocess(variant, side, args)})
    import torch

    table = markdown_table(rows)
    caption = (f"`{command_line('hpvit_lab.bench_attention', argv)}`, "
               f"{datetime.date.today().isoformat()}, CPU, torch {torch.__version__}, "
               f"{args.threads} threads: batch 1, {args.heads} heads of {args.dim}, one global "
               f"attention with decomposed relative positions, {args.runs} timed calls after one; "
               "each row in a fresh process.")
    print(table + "\n\n" + caption)
    if args.readme:
        update_readme_block(args.readme, "bench-attention", table + "\n\n" + caption)
    return EXIT_OK


def entry() -> None:
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
