"""
Params and FLOPs (fvcore) of HPViT backbones against detectron2's ViTDet, with stage shapes.

    python -m hpvit_d2.summary [--size 1024] [--depths 2,2,6,2 1,1,9,1] [--pool conv]

FLOPs are fvcore's counts (one multiply-add = one flop), for one image of size x size.
"""
import argparse
import time

import torch

__all__ = ["describe", "main"]


def _count(model: torch.nn.Module, size: int):
    from .flops import count_flops

    x = torch.zeros(1, 3, size, size)
    with torch.no_grad():
        shapes = {k: tuple(v.shape[1:]) for k, v in model(x).items()}
        total = count_flops(model, x).total()
    params = sum(p.numel() for p in model.parameters())
    return params, total, shapes


def describe(size: int, stage_depths_list, pool_type: str = "conv"):
    """Rows (name, params, GFLOPs, stage shapes) for ViTDet-B and HPViT-B variants at ``size``."""
    from detectron2.modeling import SimpleFeaturePyramid, ViT
    from detectron2.modeling.backbone.fpn import LastLevelMaxPool

    from .modeling import HPViT

    vit = ViT(img_size=1024, window_size=14, use_rel_pos=True,
              window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10))
    candidates = [("ViTDet-B (ViT + SimpleFeaturePyramid)",
                   SimpleFeaturePyramid(vit, "last_feat", 256, (4.0, 2.0, 1.0, 0.5),
                                        top_block=LastLevelMaxPool(), norm="LN", square_pad=size))]
    candidates.append(("ViT-B plain (ViTDet backbone alone)", vit))
    candidates.append(("HPViT-B plain mode", HPViT(patch_stride=16, stage_depths=(12,), out_features=("scale4",), window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10))))
    for depths in stage_depths_list:
        candidates.append((f"HPViT-B {tuple(depths)} {pool_type}",
                           HPViT(stage_depths=depths, pool_type=pool_type)))
    rows = []
    for name, model in candidates:
        start = time.perf_counter()
        params, flops, shapes = _count(model.eval(), size)
        rows.append((name, params, flops / 1e9, shapes, time.perf_counter() - start))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--depths", nargs="+", default=["2,2,6,2", "1,1,9,1"])
    parser.add_argument("--pool", default="conv", choices=["conv", "avg", "max"])
    args = parser.parse_args(argv)
    depths = [tuple(int(d) for d in s.split(",")) for s in args.depths]
    rows = describe(args.size, depths, args.pool)
    base = rows[1][2]
    print(f"\nInput {args.size}x{args.size}, fvcore FLOPs (multiply-adds), CPU\n")
    print("| model | params (M) | GFLOPs | vs ViT-B | output shapes (C, H, W) |")
    print("|---|---:|---:|---:|---|")
    for name, params, gflops, shapes, _ in rows:
        shape_text = ", ".join(f"{k} {v}" for k, v in shapes.items())
        print(f"| {name} | {params / 1e6:.1f} | {gflops:.1f} | {gflops / base:.2f}x | {shape_text} |")


if __name__ == "__main__":
    main()
