"""
Params and FLOPs (fvcore) of the HPViT-B backbones against detectron2's ViT-B / ViTDet-B, with
the shapes of their outputs: ``python -m hpvit_lab.summary``, ``hpvit-summary``.

    python -m hpvit_lab.summary [--sizes 512 1024] [--markdown FILE]

The models are the benchmark's (hpvit_lab.variants, built from the shipped configs); FLOPs are
counted by hpvit_lab.flops (fvcore; one multiply-add = one flop; the fused attention counted as
the two matrix products it replaces, over the tokens it computes: HPViT skips window padding).
"""
import argparse
import datetime
import sys
from typing import List, Sequence

import torch

from hpvit_d2.cli.common import EXIT_OK, run
from .blocks import update_readme_block
from .variants import build_model

__all__ = ["ROWS", "describe", "main", "markdown_table"]

# (label, variant, part) in table order; ratios are against the first row.
ROWS = (
    ("ViT-B (detectron2 `ViT`, ViTDet's backbone)", "vit", "backbone"),
    ("ViT-B + SimpleFeaturePyramid (ViTDet-B)", "vit", "pyramid"),
    ("HPViT-B plain mode (`patch_stride=16`, one stage)", "plain", "backbone"),
    ("HPViT-B `stage_depths=(2, 2, 6, 2)`, conv pooling", "hpvit-2262-conv", "backbone"),
    ("HPViT-B `stage_depths=(2, 2, 6, 2)`, avg pooling", "hpvit-2262-avg", "backbone"),
    ("HPViT-B `stage_depths=(1, 1, 9, 1)`, conv pooling", "hpvit-1191-conv", "backbone"),
)


def describe(sizes: Sequence[int]) -> List[dict]:
    """One dict per row of ROWS: label, params (M), GFLOPs at each size, output shapes."""
    from hpvit_lab.flops import count_flops

    rows = []
    for label, variant, part in ROWS:
        row = {"label": label, "variant": variant, "part": part, "gflops": {}}
        for size in sizes:
            model = build_model(variant, part, size=size).eval()
            x = torch.zeros(1, 3, size, size)
            with torch.no_grad():
                row["gflops"][size] = count_flops(model, x).total() / 1e9
                row["shapes"] = {k: tuple(v.shape[1:]) for k, v in model(x).items()}
            row["params_m"] = sum(p.numel() for p in model.parameters()) / 1e6
        rows.append(row)
    return rows


def markdown_table(rows: List[dict], sizes: Sequence[int]) -> str:
    head = "| backbone | params (M) | " + " | ".join(
        f"GFLOPs {s}x{s} | vs ViT-B" for s in sizes) + " |"
    sep = "|---|---:|" + "---:|---:|" * len(sizes)
    lines = [head, sep]
    for row in rows:
        cells = [row["label"], f"{row['params_m']:.1f}"]
        for s in sizes:
            cells += [f"{row['gflops'][s]:.1f}", f"{row['gflops'][s] / rows[0]['gflops'][s]:.2f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpvit_lab.summary", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--markdown", help="also write the table (with its caption) to this file")
    parser.add_argument("--readme", help="write the table into this README's 'summary' block")
    args = parser.parse_args(argv)
    rows = describe(args.sizes)
    table = markdown_table(rows, args.sizes)
    caption = (f"`python -m hpvit_lab.summary --sizes {' '.join(map(str, args.sizes))}`, "
               f"{datetime.date.today().isoformat()}: fvcore counts of one image (one multiply-add "
               "= one flop).")
    print(table + "\n\n" + caption)
    for row in rows:
        shapes = ", ".join(f"{k} {v}" for k, v in row["shapes"].items())
        print(f"  {row['label']}: {shapes}", file=sys.stderr)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n\n" + caption + "\n")
    if args.readme:
        update_readme_block(args.readme, "summary", table + "\n\n" + caption)
    return EXIT_OK


def entry() -> None:
    """``python -m hpvit_lab.summary``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
