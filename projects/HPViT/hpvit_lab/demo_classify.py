"""
``make demo-classify``: the paper's classification comparison in miniature, on the CPU. HPViT-tiny
and the plain ViT of the same blocks (timm models through ``projects/HPViT/classify.py``), each
fine-tuned from ``make reproduce``'s MAE and from scratch, on the embedded shapes ImageFolder.

    python -m hpvit_lab.demo_classify                       # 4 runs, two lanes of one thread
    python -m hpvit_lab.demo_classify --epochs 2 --train-per-class 8 --val-per-class 4 \\
        --mae-steps 2 --output-dir /tmp/demo_classify        # smoke run

1. The shapes ImageFolder (``hpvit_d2.data.shapes_classification``: one shape per 64x64 image,
   4 classes; ``--train-per-class`` / ``--val-per-class`` images per class).
2. The MAE of ``make reproduce`` (``hpvit_lab.reproduce.mae_settings``, the tiny configs' ViT:
   width 128, 6 blocks, 4 heads, patch 16), reused from ``--mae-dir`` (default
   ``output/reproduce/mae``) when it was pre-trained with those settings, else pre-trained there
   (``python -m hpvit_lab.pretrain_mae``), so the two commands share one checkpoint.
3. Four ``classify.py`` runs with one recipe (``RECIPE``): ``hpvit_tiny_patch16_224`` with the
   tiny detection configs' trunk (width 128, 6 blocks, stages (1, 1, 3, 1), 1/4 .. 1/32, their
   pooling) and the same model in plain mode (``patch_stride=16, stage_depths=(6,)``: timm's ViT
   with average pooling), each ``--pretrained``
   from the MAE directory and from scratch.
4. Writes ``results.json`` (one record per run: model, init, top-1/top-5 of the last epoch and the
   best, params, s/epoch) and ``comparison.md``; ``--readme`` writes the 'demo-classify' block.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from hpvit_d2.cli.common import EXIT_OK, command_line, run
from .runs import CommandJob, argv_with, balanced_lanes, format_table, publish, run_lanes

__all__ = ["MODELS", "RECIPE", "main", "run_demo"]

MODELS = ("hpvit", "plain")


def model_kwargs(model: str) -> Tuple[str, List[str]]:
    """(label, ``--model-kwargs``) of ``model``: the trunk of ``mask_rcnn_hpvit_tiny.py`` (width,
    depth, heads, stages, pooling), or the same blocks in plain mode."""
    from hpvit_d2.model_zoo import get_config

    trunk = get_config("mask_rcnn_hpvit_tiny.py").model.backbone.bottom_up
    size = [f"embed_dim={trunk.embed_dim}", f"depth={trunk.depth}", f"num_heads={trunk.num_heads}"]
    if model == "plain":
        return "ViT-tiny (plain)", [*size, "patch_stride=16", f"stage_depths=({trunk.depth},)"]
    stages = ",".join(map(str, trunk.stage_depths))
    return (f"HPViT-tiny ({stages}) {trunk.pool_type}",
            [*size, f"stage_depths=({stages})", f"pool_type={trunk.pool_type}"])
# One recipe for all four runs, sized for a CPU: batch 32, no gradient accumulation, AdamW lr 3e-4
# with layer decay 0.75, 2 warm-up epochs then cosine, crops of 50-100% of the image and flips,
# label smoothing 0.1; no RandAugment, random erasing or mixup (a 30-epoch run on 1000 images is
# not regularisation-bound). Measured here: from scratch at lr 5e-4 or 1e-3 the tiny ViT does not
# leave chance within 400 steps; from the MAE at 3e-4 it does after about 100.
RECIPE = ["--batch-size", "32", "--accum-steps", "1", "--lr", "3e-4", "--layer-decay", "0.75",
          "--warmup-epochs", "2", "--aa", "", "--reprob", "0", "--scale", "0.5", "1.0",
          "--mixup", "0", "--cutmix", "0", "--drop-path", "0.0", "--workers", "1",
          "--img-size", "64"]
# Rough single-thread seconds per epoch of 1000 images (lane balancing only).
_SECONDS_PER_EPOCH = {"hpvit": 25.0, "plain": 5.0}

COLUMNS = (
    ("model", "label", "{}"),
    ("init", "init", "{}"),
    ("params (M)", "params_m", "{:.2f}"),
    ("s/epoch", "s_per_epoch", "{:.1f}"),
    ("top-1 (last)", "top1", "{:.1f}"),
    ("top-1 (best)", "best_top1", "{:.1f}"),
    ("top-5 (last)", "top5", "{:.1f}"),
    ("eval loss", "loss", "{:.3f}"),
)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from .reproduce import MAE_RECIPE, UNLABELLED_SPLIT

    p = argparse.ArgumentParser(prog="python -m hpvit_lab.demo_classify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/demo_classify")
    p.add_argument("--mae-dir", default="output/reproduce/mae",
                   help="the MAE save_pretrained directory (shared with make reproduce)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--train-per-class", type=int, default=250)
    p.add_argument("--val-per-class", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mae-steps", type=int, default=MAE_RECIPE["steps"])
    p.add_argument("--mae-images", type=int, default=UNLABELLED_SPLIT["num_images"])
    p.add_argument("--readme", help="write the table into this README's 'demo-classify' block")
    args = p.parse_args(argv)
    if min(args.epochs, args.train_per_class, args.val_per_class, args.mae_steps, args.mae_images) < 1:
        p.error("--epochs, --train-per-class, --val-per-class, --mae-steps and --mae-images "
                "must be >= 1")
    return args


def _classify_job(args, out: Path, tree: str, model: str, init: str, mae_dir: Path) -> CommandJob:
    name = f"{model}_{init}"
    argv = [sys.executable, "-m", "hpvit_d2.cli.classify", "--data-dir", tree,
            "--model", "hpvit_tiny_patch16_224", "--model-kwargs", *model_kwargs(model)[1],
            "--epochs", str(args.epochs), "--seed", str(args.seed), *RECIPE,
            "--output", str(out / name)]
    if init == "mae":
        argv += ["--pretrained", str(mae_dir), "--strict"]
    scale = args.train_per_class * 4 / 1000
    return CommandJob(name, argv, out / f"{name}.log", needs=("mae",) if init == "mae" else (),
                      cost=_SECONDS_PER_EPOCH[model] * args.epochs * scale)


def _record(out: Path, model: str, init: str) -> Dict:
    """One run's numbers from its summary.json and log.jsonl."""
    run_dir = out / f"{model}_{init}"
    summary = json.loads((run_dir / "summary.json").read_text())
    epochs = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line]
    log = (out / f"{model}_{init}.log").read_text()
    params = next(float(line.split(": ")[1].split("M params")[0])
                  for line in log.splitlines() if "M params" in line)
    return {"model": model, "label": model_kwargs(model)[0], "init": init, "params_m": params,
            "epochs": len(epochs), "top1": summary["last"]["top1"], "top5": summary["last"]["top5"],
            "loss": summary["last"]["loss"], "best_top1": summary["best_top1"],
            "s_per_epoch": statistics.mean(e["seconds"] for e in epochs),
            "top1_per_epoch": [e["top1"] for e in epochs]}


def run_demo(argv: Sequence[str]) -> List[Dict]:
    """Everything ``make demo-classify`` does; returns one record per run."""
    args = parse_args(argv)
    from hpvit_d2.data.shapes_classification import ensure_shapes_classification
    from .reproduce import mae_job, mae_settings, unlabelled_images

    start = time.time()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    mae_dir = Path(args.mae_dir).resolve()
    tree = ensure_shapes_classification(train_per_class=args.train_per_class,
                                        val_per_class=args.val_per_class, image_size=64)
    settings = mae_settings(args.mae_steps, args.mae_images)
    jobs = [mae_job(mae_dir, unlabelled_images(args.mae_images), settings, out / "mae.log")]
    for init in ("scratch", "mae"):
        for model in MODELS:
            jobs.append(_classify_job(args, out, tree, model, init, mae_dir))
    wall = run_lanes(balanced_lanes(jobs, lambda job: job.cost), tag="demo_classify")
    records = [_record(out, model, init) for model in MODELS for init in ("mae", "scratch")]
    table = format_table(records, COLUMNS)
    reused = "[mae] reused" in (out / "mae.log").read_text()
    command = command_line("hpvit_lab.demo_classify", argv_with(argv, "--epochs", args.epochs))
    caption = (
        f"`make demo-classify` (`{command}`), "
        f"{datetime.date.today().isoformat()}, CPU, {os.cpu_count()} cores: shapes ImageFolder "
        f"{args.train_per_class * 4} train / {args.val_per_class * 4} val images (64x64, 4 "
        f"classes), {args.epochs} epochs per run, seed {args.seed}, recipe "
        f"`{' '.join(repr(a) if a == '' else a for a in RECIPE)}`; MAE: `{args.mae_dir}` ({settings.steps} steps"
        f"{', reused' if reused else ''}); wall time {wall / 60:.1f} min, two lanes of one thread.")
    (out / "results.json").write_text(json.dumps({"runs": records, "wall_seconds": wall}, indent=2))
    publish(table + "\n\n" + caption, out / "comparison.md", args.readme, "demo-classify")
    print(f"\n[demo_classify] done in {time.time() - start:.0f}s; wrote {out}/results.json, "
          "comparison.md")
    return records


def main(argv: Sequence[str]) -> int:
    run_demo(argv)
    return EXIT_OK


def entry() -> None:
    """``make demo-classify``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
