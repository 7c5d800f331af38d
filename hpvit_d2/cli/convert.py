"""
Convert a plain-ViT checkpoint (MAE, DeiT/timm, Hugging Face ViT/ViTMAE/DeiT directory or
.safetensors, detectron2 ViTDet) into a file that detectron2's ``DetectionCheckpointer`` (and the
stock ``lazyconfig_train_net.py``) loads into a config's model as its initialisation.

    python -m hpvit_d2.convert SRC DST [--config CFG] [--strict] [--allow-partial]
    hpvit-convert SRC DST --config mask_rcnn_hpvit_tiny.py

The target is the ViT backbone of ``--config`` (a path or a shipped config's name; default
mask_rcnn_hpvit_b.py); the output holds its keys under the backbone's prefix
(``backbone.bottom_up.`` for HPViT, ``backbone.net.`` for ViTDet) and the conversion report.
A source of another width, depth or patch size is refused (the message names both and a config
that fits). ``--strict`` also refuses a source that lacks a pre-trained block, patch or position
weight. Nothing is written when a check fails. Exit codes: 0 written, 2 refused or unreadable.
"""
import argparse
import sys
from typing import Sequence

from .common import EXIT_OK, add_debug_flag, run

__all__ = ["convert", "main"]

DEFAULT_CONFIG = "mask_rcnn_hpvit_b.py"


def convert(src: str, dst: str, config: str = DEFAULT_CONFIG, require: str = "architecture"):
    """
    Convert ``src`` for ``config``'s model and write ``dst`` atomically.

    Returns:
        LoadReport of the conversion (what was loaded, resized, left at initialisation, unused).
    Raises:
        CheckpointError: unreadable source, or one ``require`` refuses; ``dst`` is not written.
    """
    from detectron2.config import instantiate

    from ..checkpoint import HPViTCheckpointer, save_atomic
    from ..model_zoo import get_config

    model = instantiate(get_config(config).model)
    checkpointer = HPViTCheckpointer(model, require=require)
    checkpointer.load(src)
    report = checkpointer.report
    # What the checkpointer loaded, as it now sits in the model: only the tensors that came from src.
    state = {k: v for k, v in model.state_dict().items() if k in set(report.loaded)}
    save_atomic({"model": state, "__author__": "hpvit_d2.convert",
                 "conversion_report": report.conversion.to_dict() if report.conversion else None},
                dst)
    return report


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpvit_d2.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="plain-ViT checkpoint: .pth/.pt, .pkl, .safetensors, or a "
                                    "Hugging Face model directory")
    parser.add_argument("dst", help="output .pth for DetectionCheckpointer / train.init_checkpoint")
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help=f"config (path or shipped name) whose backbone is the target "
                             f"(default {DEFAULT_CONFIG})")
    parser.add_argument("--strict", action="store_true",
                        help="refuse a source missing any pre-trained block, patch or position weight")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write whatever fits, even from a ViT of another size")
    add_debug_flag(parser)
    args = parser.parse_args(argv)
    require = "nothing" if args.allow_partial else "backbone" if args.strict else "architecture"
    report = convert(args.src, args.dst, args.config, require)
    print(report.summary())
    print(f"wrote {len(report.loaded)} tensors to {args.dst}")
    return EXIT_OK


def entry() -> None:
    """Console command ``hpvit-convert``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
