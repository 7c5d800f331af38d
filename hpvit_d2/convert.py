"""
Convert a plain-ViT checkpoint (MAE, DeiT/timm, detectron2 ViTDet, bare) into a file that
detectron2's DetectionCheckpointer loads into an HPViT model.

    python -m hpvit_d2.convert SRC DST [--config CFG] [--prefix P] [--strict]

Without --config the target is the default HPViT-B, stored under ``backbone.bottom_up.`` (the
prefix of configs/mask_rcnn_hpvit_b.py). Exit codes: 0 written, 2 unreadable or unknown input,
3 strict check failed (nothing written).
"""
import argparse
import sys

__all__ = ["main"]


def build_target(config: str = None):
    """(prefix, backbone) that the converted weights are for."""
    from .checkpoint import find_vit_backbone

    if config is None:
        from .modeling import HPViT

        return "backbone.bottom_up.", HPViT()
    from detectron2.config import LazyConfig, instantiate

    cfg = LazyConfig.load(config)
    return find_vit_backbone(instantiate(cfg.model))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpvit_d2.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="plain-ViT checkpoint: .pth/.pt (torch) or .pkl (detectron2)")
    parser.add_argument("dst", help="output .pth for DetectionCheckpointer / train.init_checkpoint")
    parser.add_argument("--config", help="LazyConfig whose model's ViT backbone is the target")
    parser.add_argument("--prefix", help="override the key prefix of the backbone in the detector")
    parser.add_argument("--strict", action="store_true",
                        help="fail if any pre-trained block, patch or position weight is missing")
    args = parser.parse_args(argv)

    from .checkpoint import CheckpointError, convert_plain_vit, load_checkpoint_file, save_atomic

    try:
        source = load_checkpoint_file(args.src)
        prefix, target = build_target(args.config)
        state, report = convert_plain_vit(source, target)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prefix = args.prefix if args.prefix is not None else prefix
    print(report.summary())
    if args.strict and report.missing_pretrained:
        print(f"error: --strict: {len(report.missing_pretrained)} pre-trained backbone weights are "
              f"missing or mismatched in {args.src} (e.g. {report.missing_pretrained[0]}); "
              "nothing written", file=sys.stderr)
        return 3
    save_atomic(
        {
            "model": {prefix + k: v for k, v in state.items()},
            "__author__": "hpvit_d2.convert",
            "conversion_report": report.to_dict(),
        },
        args.dst,
    )
    print(f"wrote {len(state)} tensors under {prefix!r} to {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
