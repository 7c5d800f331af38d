"""
Convert a plain-ViT checkpoint (MAE, DeiT/timm, Hugging Face ViT/ViTMAE/DeiT directory or
.safetensors, detectron2 ViTDet) into a file that detectron2's ``DetectionCheckpointer`` (and the
stock ``lazyconfig_train_net.py``) loads into a config's model as its initialisation.

    python -m hpvit_d2.convert SRC DST [--config-file CFG] [KEY=VALUE ...] [--strict] [--allow-partial]
    hpvit-convert deit_small_patch16_224.pth init.pth      # picks mask_rcnn_hpvit_s.py
    hpvit-convert mae.pth init.pth --config-file mask_rcnn_vitdet_b.py

The target is the ViT backbone of ``--config-file`` (a path or a shipped config's name, with
``KEY=VALUE`` overrides); without it, the shipped HPViT Mask R-CNN config whose ViT has the
checkpoint's width, depth and patch size (ViT-Ti/S/B/L: mask_rcnn_hpvit_{ti,s,b,l}.py), named in
the output. The output holds the backbone's keys under its prefix (``backbone.bottom_up.`` for
HPViT, ``backbone.net.`` for ViTDet) and the conversion report. A source of another width, depth
or patch size is refused (the message names both and a config that fits). ``--strict`` also
refuses a source that lacks a pre-trained block, patch or position weight. Nothing is written
when a check fails. Exit codes: 0 written, 2 refused or unreadable.
"""
import argparse
import sys
from typing import Optional, Sequence, Tuple

from .common import (EXIT_OK, add_debug_flag, add_overrides, check_output_path, log_to_stderr,
                     parse_command, program_name, run)

__all__ = ["argument_parser", "config_fitting_checkpoint", "convert", "main"]

DEFAULT_CONFIG = "mask_rcnn_hpvit_b.py"


def config_fitting_checkpoint(src: str) -> Tuple[str, str]:
    """
    The shipped HPViT Mask R-CNN config whose ViT has ``src``'s width, depth and patch size, and
    that geometry in words.

    Raises:
        CheckpointError: ``src`` is unreadable, holds no ViT, or no shipped config fits it.
    """
    from ..checkpoint import CheckpointError
    from ..checkpoint.io import load_checkpoint_file
    from ..checkpoint.plain_vit import extract_state_dict, timm_named, vit_geometry, vit_key_prefix
    from ..shipped_configs import configs_fitting

    state, _ = timm_named(extract_state_dict(load_checkpoint_file(src)))
    prefix = vit_key_prefix(state)
    if prefix is None:
        raise CheckpointError(f"{src}: no patch_embed.proj.weight among its {len(state)} tensors: "
                              "not a ViT checkpoint, so no config can be chosen for it")
    geometry = vit_geometry(state, prefix)
    fitting = [n for n in configs_fitting(geometry) if n.startswith("mask_rcnn_hpvit_")]
    if not fitting:
        raise CheckpointError(
            f"{src}: no shipped HPViT config has its ViT ({geometry}); give --config-file with "
            f"one of that size, e.g. --config-file mask_rcnn_hpvit_b.py "
            f"model.backbone.bottom_up.embed_dim={geometry.width} "
            f"model.backbone.bottom_up.depth={geometry.depth} model.backbone.bottom_up.num_heads=H")
    return fitting[0], str(geometry)


def convert(src: str, dst: str, config: str = DEFAULT_CONFIG, require: str = "architecture",
            overrides: Sequence[str] = ()):
    """
    Convert ``src`` for ``config``'s model (with ``overrides``) and write ``dst`` atomically.

    Returns:
        LoadReport of the conversion (what was loaded, resized, left at initialisation, unused).
    Raises:
        CheckpointError: unreadable source, or one ``require`` refuses; ``dst`` is not written.
    """
    from detectron2.config import instantiate

    from ..checkpoint import HPViTCheckpointer, save_atomic
    from ..model_zoo import get_config

    model = instantiate(get_config(config, overrides).model)
    checkpointer = HPViTCheckpointer(model, require=require)
    checkpointer.load(src)
    report = checkpointer.report
    # What the checkpointer loaded, as it now sits in the model: only the tensors that came from src.
    state = {k: v for k, v in model.state_dict().items() if k in set(report.loaded)}
    save_atomic({"model": state, "__author__": "hpvit_d2.convert",
                 "conversion_report": report.conversion.to_dict() if report.conversion else None},
                dst)
    return report


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("hpvit-convert"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="plain-ViT checkpoint: .pth/.pt, .pkl, .safetensors, or a "
                                    "Hugging Face model directory")
    parser.add_argument("dst", help="output .pth for DetectionCheckpointer / train.init_checkpoint")
    parser.add_argument("--config-file", "--config", dest="config", default=None,
                        help="config (path or shipped name) whose backbone is the target "
                             "(default: the shipped HPViT config that fits the checkpoint)")
    add_overrides(parser)
    parser.add_argument("--strict", action="store_true",
                        help="refuse a source missing any pre-trained block, patch or position weight")
    parser.add_argument("--allow-partial", action="store_true",
                        help="write whatever fits, even from a ViT of another size")
    add_debug_flag(parser)
    return parser


def main(argv: Sequence[str]) -> int:
    args = parse_command(argument_parser(), argv)
    check_output_path("DST", args.dst, "file", example="init.pth")
    log_to_stderr()
    require = "nothing" if args.allow_partial else "backbone" if args.strict else "architecture"
    config = args.config
    if config is None:
        config, geometry = config_fitting_checkpoint(args.src)
        print(f"config: {config} (the shipped HPViT config whose ViT fits the checkpoint's: "
              f"{geometry}; --config-file chooses another)")
    # The checkpointer logs the load report (stderr); here only what was written.
    report = convert(args.src, args.dst, config, require, args.opts)
    print(f"wrote {len(report.loaded)} tensors to {args.dst} (for {config})")
    return EXIT_OK


def entry() -> None:
    """Console command ``hpvit-convert``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
