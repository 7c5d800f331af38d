"""
``make pretrain``: make the lab's shipped MAEs again, and the measurement that chose the
detection one's lr.

    python -m hpvit_lab.pretrain                              # RECIPE -> the shipped directory
    python -m hpvit_lab.pretrain --checkpoint mae_tiny_shapes64   # the classification MAE
    python -m hpvit_lab.pretrain --output DIR                 # elsewhere (the shipped one untouched)
    python -m hpvit_lab.pretrain --sweep-lr 5e-4 1e-3 2e-3    # the proxy that chose RECIPE's lr
    python -m hpvit_lab.pretrain --smoke --output DIR         # every step, a few iterations

Two checkpoints, one per input resolution, each pre-trained at the resolution its miniatures
fine-tune at (as MAE's ImageNet models are pre-trained and fine-tuned at 224 px):
``mae_tiny_shapes`` (``RECIPE``: 256 px crops of the detection images, a 16 x 16 grid) for
detection and segmentation, and ``mae_tiny_shapes64`` (``RECIPE_64``: whole 64 px single-shape
images, a 4 x 4 grid) for classification. Started from the 256 px one, the plain ViT-tiny at
64 px interpolates its 16 x 16 position grid down to 4 x 4 (issue 32's pilot: 35% against 59%
top-1 on val after 6 epochs from the 64 px one).

The model is transformers' ``ViTMAEForPreTraining`` with the encoder of the tiny configs' ViT
(width, depth, heads and patch read off ``mask_rcnn_hpvit_tiny.py``) and MAE's lightweight
decoder, trained by ``hpvit_lab.mae.pretrain_mae`` on ``UNLABELLED_SPLIT`` (shapes images drawn
from their own generator seed: no train, val or test image) with ``RECIPE``. The result goes to
``projects/HPViT/checkpoints/mae_tiny_shapes/`` (``hpvit_lab.shipped``): ``config.json``,
``model.safetensors``, ``SHA256SUMS``, ``recipe.json`` (settings, command, loss summary,
duration) and a README whose blocks this command writes.

``--sweep-lr``: for each lr, a short pre-training (``--sweep-steps``), converted with the public
converter and fine-tuned as HPViT-tiny (the tiny config's recipe, ``--proxy-iters`` iterations)
on the train split, scored by box AP on the val split; no test image is used. The lr with the
best proxy is the one ``RECIPE`` ships.
"""
import argparse
import datetime
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, List, Sequence

from hpvit_d2.cli.common import EXIT_OK, run
from .blocks import command_line, update_readme_block
from .runs import CommandJob, TrainRun, cpu_name, format_table, run_lanes, run_metrics, timing_text

__all__ = ["CHECKPOINTS", "RECIPE", "RECIPE_64", "UNLABELLED_SPLIT", "UNLABELLED_SPLIT_64",
           "main", "mae_settings", "unlabelled_images"]

# The unlabelled images: their own generator seed, so none is a train, val or test image.
UNLABELLED_SPLIT = dict(split="unlabelled", num_images=10000, image_size=256, seed=7)
# The shipped recipe on top of the tiny trunk's size: 256x256 crops of 35-100% of an image (a
# 16 x 16 grid, the detectors' own at 256 px), batch 64, AdamW with MAE's parameter groups, lr
# chosen by --sweep-lr (the checkpoint README's 'pretrain-sweep' block).
RECIPE = dict(image_size=256, batch_size=64, steps=3000, lr=5e-4, min_crop_scale=0.35,
              max_crop_scale=1.0, weight_decay=0.05, decay_only_matrices=True)
# The classification MAE: whole single-shape images at the classification task's 64 px, drawn by
# its generator from their own seed (no train, val or test image); batch 256 (a 4 x 4 grid keeps
# 4 tokens a crop), MAESettings' lr 1.5e-3 (not swept), crops of 60-100% that keep the shape.
UNLABELLED_SPLIT_64 = dict(kind="classification", num_images=20000, image_size=64, seed=98)
RECIPE_64 = dict(image_size=64, batch_size=256, steps=5000, lr=1.5e-3, min_crop_scale=0.6,
                 max_crop_scale=1.0, weight_decay=0.05, decay_only_matrices=True)
# checkpoint name -> (its unlabelled images, its recipe)
CHECKPOINTS = {"mae_tiny_shapes": (UNLABELLED_SPLIT, RECIPE),
               "mae_tiny_shapes64": (UNLABELLED_SPLIT_64, RECIPE_64)}
PROXY_CONFIG = "mask_rcnn_hpvit_tiny.py"
# The proxy fine-tune: lr and layer decay at which HPViT-tiny's 480 iterations keep learning to
# the end (at the config's lr 4e-4 / layer decay 0.75 every candidate stalled near the same AP).
PROXY_OVERRIDES = ("optimizer.lr=8e-4", "optimizer.params.lr_decay_rate=0.9")


def mae_settings(checkpoint: str = "mae_tiny_shapes", **changes):
    """``MAESettings`` of the tiny configs' trunk with ``checkpoint``'s recipe and ``changes``."""
    from hpvit_d2.model_zoo import get_config
    from .mae import MAESettings

    trunk = get_config(PROXY_CONFIG).model.backbone.bottom_up
    settings = MAESettings(width=trunk.embed_dim, depth=trunk.depth, heads=trunk.num_heads,
                           patch_size=trunk.patch_size, **CHECKPOINTS[checkpoint][1])
    return replace(settings, **changes)


def unlabelled_images(checkpoint: str = "mae_tiny_shapes", num_images: int = 0) -> Path:
    """Generate (once) ``checkpoint``'s unlabelled images (``num_images``, default its split's);
    returns the directory pre-training reads (class folders of the classification generator are
    read as one folder of images: their labels are never used)."""
    from hpvit_d2.data.shapes import data_root, generate_shapes_dataset
    from hpvit_d2.data.shapes_classification import generate_shapes_classification

    split = dict(CHECKPOINTS[checkpoint][0])
    num_images = num_images or split["num_images"]
    if split.pop("kind", "detection") == "classification":
        per_class = max(1, num_images // 4)
        tree = generate_shapes_classification(data_root(), train_per_class=per_class,
                                              val_per_class=1, image_size=split["image_size"],
                                              seed=split["seed"])
        return Path(tree) / "train"
    json_file = generate_shapes_dataset(data_root(), **dict(split, num_images=num_images))
    return Path(json_file).parent / "images"


def pretrain_job(settings, image_dir: Path, out_dir: Path, log_file: Path,
                 name: str = "mae") -> CommandJob:
    """``python -m hpvit_lab.pretrain_mae`` as a lane job (reuses ``out_dir`` when it was
    pre-trained with the same settings)."""
    from .mae import HISTORY_FILE
    from .pretrain_mae import settings_argv

    return CommandJob(name, [sys.executable, "-m", "hpvit_lab.pretrain_mae", "--images",
                             str(image_dir), "--output", str(out_dir), *settings_argv(settings)],
                      log_file, cost=2.0 * settings.steps,
                      outputs=(out_dir / HISTORY_FILE, out_dir / "model.safetensors"))


def loss_summary(losses: Sequence[float], points: int = 10) -> List[Dict]:
    """The loss curve in ``points`` pieces: the mean loss of each tenth of the steps."""
    size = max(1, len(losses) // points)
    return [{"steps": f"{k * size + 1}-{min(len(losses), (k + 1) * size)}",
             "mean_loss": round(statistics.mean(losses[k * size:(k + 1) * size]), 4)}
            for k in range(min(points, len(losses)))]


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from .shipped import SHIPPED_MAE

    p = argparse.ArgumentParser(prog="python -m hpvit_lab.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", choices=sorted(CHECKPOINTS), default="mae_tiny_shapes",
                   help="which shipped MAE to make: its images and recipe (default "
                        "mae_tiny_shapes, the detection and segmentation one)")
    p.add_argument("--output", default=None,
                   help="where the checkpoint goes (default: the shipped directory "
                        f"{SHIPPED_MAE.parent}/CHECKPOINT)")
    p.add_argument("--work-dir", default="output/pretrain",
                   help="pre-training runs, logs and the sweep's fine-tunes")
    p.add_argument("--steps", type=int, default=None, help="default: the checkpoint's recipe")
    p.add_argument("--lr", type=float, default=None, help="default: the checkpoint's recipe")
    p.add_argument("--images", type=int, default=None,
                   help="unlabelled images generated for pre-training (default: the "
                        "checkpoint's split)")
    p.add_argument("--sweep-lr", type=float, nargs="+", metavar="LR",
                   help="measure the proxy for each lr instead of writing the checkpoint")
    p.add_argument("--sweep-steps", type=int, default=1000)
    p.add_argument("--proxy-iters", type=int, default=480)
    p.add_argument("--proxy-overrides", nargs="*", default=list(PROXY_OVERRIDES),
                   metavar="KEY=VALUE", help="the proxy fine-tune's recipe on top of the config "
                                             f"(default: {' '.join(PROXY_OVERRIDES)})")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                   help="torch threads of the pre-training (default: every core)")
    p.add_argument("--smoke", action="store_true",
                   help="a few steps of everything on a few images (tests)")
    p.add_argument("--readme", help="also write the block into this file (default: the "
                                    "checkpoint directory's README.md)")
    args = p.parse_args(argv)
    args.argv = list(argv)
    split, recipe = CHECKPOINTS[args.checkpoint]
    args.output = args.output or str(SHIPPED_MAE.parent / args.checkpoint)
    args.steps = recipe["steps"] if args.steps is None else args.steps
    args.lr = recipe["lr"] if args.lr is None else args.lr
    args.images = split["num_images"] if args.images is None else args.images
    if args.sweep_lr and args.checkpoint != "mae_tiny_shapes":
        p.error(f"--sweep-lr: the proxy fine-tunes a detector; it measures mae_tiny_shapes only "
                f"(got --checkpoint {args.checkpoint})")
    if args.smoke:
        args.steps, args.sweep_steps, args.images, args.proxy_iters = 3, 3, 16, 2
    if min(args.steps, args.sweep_steps, args.images, args.proxy_iters) < 1 or args.lr <= 0:
        p.error("--steps, --sweep-steps, --images, --proxy-iters and --lr must be positive")
    return args


def _smoke_changes(args) -> Dict:
    return dict(batch_size=4, image_size=min(64, CHECKPOINTS[args.checkpoint][1]["image_size"])) \
        if args.smoke else {}


def write_checkpoint(args) -> Dict:
    """Pre-train with ``RECIPE`` (all CPU threads) and write the checkpoint directory."""
    from .mae import read_history
    from .shipped import write_sums

    settings = mae_settings(args.checkpoint, steps=args.steps, lr=args.lr,
                            **_smoke_changes(args))
    work = Path(args.work_dir).resolve() / args.checkpoint
    job = pretrain_job(settings, unlabelled_images(args.checkpoint, args.images), work / "mae",
                       work / "mae.log")
    run_lanes([[job]], tag="pretrain", threads=args.threads)
    history = read_history(str(work / "mae"))
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copyfile(work / "mae" / name, out / f".{name}.tmp")
        os.replace(out / f".{name}.tmp", out / name)
    sums = write_sums(out)
    command = command_line("hpvit_lab.pretrain", args.argv)
    recipe = {"command": command, "date": datetime.date.today().isoformat(),
              "settings": history["settings"],
              "unlabelled_split": dict(CHECKPOINTS[args.checkpoint][0], num_images=args.images),
              "seconds": round(history["seconds"], 1), "threads": args.threads,
              "loss_summary": loss_summary(history["losses"]), "sha256": sums}
    (out / "recipe.json").write_text(json.dumps(recipe, indent=2) + "\n")
    s = history["settings"]
    rows = "\n".join(f"| {r['steps']} | {r['mean_loss']:.4f} |" for r in recipe["loss_summary"])
    block = (f"`{command}`, {recipe['date']}, CPU ({cpu_name()}), {args.threads} thread(s), "
             f"{history['seconds'] / 60:.1f} min: encoder {s['depth']} x {s['width']} "
             f"({s['heads']} heads, patch {s['patch_size']}), decoder {s['decoder_depth']} x "
             f"{s['decoder_width']}; {s['steps']} steps of {s['batch_size']} {s['image_size']}px "
             f"crops ({s['min_crop_scale']:.2f}-{s['max_crop_scale']:.2f} of an image) from "
             f"{s['num_images']} unlabelled images, mask ratio {s['mask_ratio']}, AdamW lr "
             f"{s['lr']:g} (warm-up {s['warmup_fraction']:.0%}, cosine), weight decay "
             f"{s['weight_decay']} {'on weight matrices only' if s['decay_only_matrices'] else 'on every parameter'}, "
             f"seed {s['seed']}.\n\n| steps | mean loss (normalised pixels) |\n|---|---:|\n{rows}\n\n"
             + "".join(f"- `{name}` sha256 `{digest}`\n" for name, digest in sums.items()))
    readme = args.readme or (str(out / "README.md") if (out / "README.md").is_file() else None)
    if readme:
        update_readme_block(readme, "pretrain", block.rstrip())
    print("\n" + block)
    print(f"[pretrain] wrote {out} (config.json, model.safetensors, SHA256SUMS, recipe.json)")
    return recipe


def sweep(args) -> List[Dict]:
    """The lr proxy: short pre-trainings, each converted and fine-tuned as HPViT-tiny on train,
    scored by box AP on val. Two lanes of one thread."""
    from .shipped import conversion_job

    work = Path(args.work_dir).resolve() / "sweep"
    image_dir = unlabelled_images(args.checkpoint, args.images)
    train, val = (("hpvit_shapes_train_mini", "hpvit_shapes_val_mini") if args.smoke
                  else ("hpvit_shapes_train", "hpvit_shapes_val"))
    lanes: List[List] = [[], []]
    runs = {}
    for k, lr in enumerate(args.sweep_lr):
        tag = f"lr{lr:g}"
        settings = mae_settings(args.checkpoint, steps=args.sweep_steps, lr=lr,
                                **_smoke_changes(args))
        init = work / f"init_{tag}.pth"
        runs[lr] = TrainRun(f"proxy {tag}", PROXY_CONFIG, work / f"proxy_{tag}", args.proxy_iters,
                            [*args.proxy_overrides, f"train.init_checkpoint={init}",
                             f"dataloader.train.dataset.names={train}",
                             f"dataloader.test.dataset.names={val}"],
                            needs=(f"convert_{tag}",))
        lanes[k % 2] += [pretrain_job(settings, image_dir, work / f"mae_{tag}", work / f"mae_{tag}.log",
                                      name=f"mae_{tag}"),
                         conversion_job(work / f"mae_{tag}", PROXY_CONFIG, init, work,
                                        name=f"convert_{tag}", needs=(f"mae_{tag}",))]
        lanes[k % 2].append(runs[lr])
    durations: Dict[str, float] = {}
    wall = run_lanes(lanes, tag="pretrain-sweep", reuse=True, durations=durations)
    from .mae import read_history

    rows = []
    for lr, job in runs.items():
        history = read_history(str(work / f"mae_lr{lr:g}"))
        metrics = run_metrics(job, ("bbox/AP",))
        rows.append({"lr": f"{lr:g}", "final_loss": statistics.mean(history["losses"][-50:]),
                     "box_ap": metrics["bbox/AP"], "mask_ap": metrics.get("segm/AP")})
    best = max(rows, key=lambda r: r["box_ap"])
    table = format_table(rows, (("MAE lr", "lr", "{}"), ("loss (last 50 steps)", "final_loss", "{:.4f}"),
                                ("proxy box AP (val)", "box_ap", "{:.1f}"),
                                ("proxy mask AP (val)", "mask_ap", "{:.1f}")))
    caption = (f"`{command_line('hpvit_lab.pretrain', args.argv)}`, "
               f"{datetime.date.today().isoformat()}, CPU: each lr pre-trains {args.sweep_steps} "
               f"steps (otherwise RECIPE), is converted with `hpvit_d2.convert --strict` and "
               f"fine-tuned as HPViT-tiny for {args.proxy_iters} iterations (the config with "
               f"{' '.join(args.proxy_overrides) or 'no override'}, seed 0) on {train}, scored on {val}. Best proxy: lr {best['lr']}. "
               f"Two lanes of one thread, {timing_text(wall, lanes, durations)}.")
    report = table + "\n\n" + caption
    (work / "sweep.md").write_text(report + "\n")
    print("\n" + report)
    if args.readme:
        update_readme_block(args.readme, "pretrain-sweep", report)
    return rows


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    start = time.time()
    if args.sweep_lr:
        sweep(args)
    else:
        write_checkpoint(args)
    print(f"[pretrain] done in {time.time() - start:.0f}s")
    return EXIT_OK


def entry() -> None:
    """``make pretrain``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
