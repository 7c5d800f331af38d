"""
Pre-train a small masked autoencoder on a folder of unlabelled images with Hugging Face
``transformers``' ``ViTMAEForPreTraining``; write it with ``save_pretrained``.

    python -m hpvit_lab.pretrain_mae --images DIR --output DIR [--steps N] [--image-size S] ...
    python -m hpvit_lab.pretrain_mae --images unlabelled/ --output mae/ --width 128 --depth 6 --heads 4

Every field of ``hpvit_lab.mae.MAESettings`` is a flag (``--mask-ratio``, ``--lr``,
``--min-crop-scale`` ...). The output directory (``config.json`` + ``model.safetensors`` +
``mae_pretrain.json``, the settings and the loss curve) is what ``hpvit_d2.convert`` and every
loading path read; a directory pre-trained with the same settings on as many images is reused. A
progress line every 15 s. Exit codes: 0 written or reused, 2 bad input (no images, unequal sizes).
"""
import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import List, Sequence

from hpvit_d2.cli.common import EXIT_OK, add_debug_flag, run

__all__ = ["main", "parse_args", "settings_argv"]

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def _parse_bool(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"{text!r}: give true or false")
    return text.lower() in ("true", "1")


def settings_argv(settings) -> List[str]:
    """The flags that give ``settings`` (an ``MAESettings``) to this command."""
    argv = []
    for field in dataclasses.fields(settings):
        if field.name != "num_images":
            argv += ["--" + field.name.replace("_", "-"), str(getattr(settings, field.name))]
    return argv


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from .mae import MAESettings

    p = argparse.ArgumentParser(prog="python -m hpvit_lab.pretrain_mae", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, metavar="DIR",
                   help="folder of equally sized RGB images (.jpg, .png; subfolders too)")
    p.add_argument("--output", required=True, metavar="DIR", help="save_pretrained directory")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    settings = p.add_argument_group("settings (hpvit_lab.mae.MAESettings)")
    for field in dataclasses.fields(MAESettings):
        if field.name == "num_images":
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = _parse_bool if field.type is bool else field.type
        settings.add_argument(flag, type=kind, default=field.default, help=f"default {field.default}")
    add_debug_flag(p)
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    from .mae import MAESettings, load_images, pretrain_mae
    from hpvit_d2.overrides import ConfigError

    folder = Path(args.images)
    files = sorted(str(f) for f in folder.rglob("*") if f.suffix.lower() in _IMAGE_SUFFIXES) \
        if folder.is_dir() else []
    if not files:
        raise ConfigError(f"--images {folder}: no .jpg/.png images found there; give a folder of "
                          "unlabelled images")
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(MAESettings)
              if f.name != "num_images"}
    settings = MAESettings(**values)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    last = [time.time()]

    def progress(step: int, loss: float, seconds: float):
        if time.time() - last[0] >= 15 or step + 1 == settings.steps:
            eta = seconds / (step + 1) * (settings.steps - step - 1)
            print(f"[mae] step {step + 1}/{settings.steps} loss {loss:.4f} "
                  f"({seconds:.0f}s, eta {eta:.0f}s)", flush=True)
            last[0] = time.time()

    print(f"[mae] ViTMAEForPreTraining (width {settings.width}, {settings.depth} blocks, "
          f"{settings.heads} heads, patch {settings.patch_size}, {settings.image_size}px crops) on "
          f"{len(files)} images of {folder}, {settings.steps} steps of {settings.batch_size}",
          flush=True)
    try:
        images = load_images(files)
    except ValueError as e:  # np.stack of unequal sizes
        raise ConfigError(f"--images {folder}: the images must all have one size ({e})") from None
    history = pretrain_mae(images, args.output, settings, progress)
    if history["cached"]:
        print(f"[mae] reused {args.output} (pre-trained with the same settings)", flush=True)
    else:
        print(f"[mae] wrote {os.path.abspath(args.output)} in {history['seconds']:.0f}s", flush=True)
    return EXIT_OK


def entry() -> None:
    """``python -m hpvit_lab.pretrain_mae``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
