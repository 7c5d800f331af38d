"""
``make demo``: the project's use in one command. The lab's shipped MAE (an off-the-shelf plain
ViT checkpoint, sha256-checked) is converted with the public converter into the tiny HPViT Mask
R-CNN and the equal-size ViTDet baseline, both are fine-tuned on the embedded shapes data with
their tuned recipes (``hpvit_lab/recipes.json``), evaluated with COCOEvaluator on the val split,
and compared. One seed: a demo, not a verdict (``make reproduce`` gives the verdicts).

    python -m hpvit_lab.demo_run                 # DEMO_ITERS iterations per model (default 480)
    DEMO_ITERS=240 python -m hpvit_lab.demo_run  # the short mode: about half the time, lower AP
    python -m hpvit_lab.demo_run --iters 2 --train-dataset hpvit_shapes_train_mini \\
        --val-dataset hpvit_shapes_val_mini --output-dir /tmp/demo   # a smoke run

Both models train through the project's training entry (``python -m hpvit_d2.cli.train``),
as two processes side by side with an even share of the CPU threads (``--sequential`` runs one
after the other with all of them). Writes to ``--output-dir`` (default ``output/demo``):

- ``hpvit_tiny.json``, ``vitdet_tiny.json``: metrics per model (COCO box and mask AP, params,
  backbone GFLOPs, latency, s/iteration, recipe);
- ``comparison.md``: the comparison table (also printed);
- ``training_curves.png``: losses against iteration, from each run's ``metrics.json``;
- ``predictions_{k}.png``: ground truth and both models' predictions on val images (Visualizer);
- ``hpvit_tiny/``, ``vitdet_tiny/``: each run's output directory (log, metrics.json, weights).
"""
import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hpvit_d2.engine.metrics import read_metrics
from hpvit_d2.overrides import ConfigError
from hpvit_d2.cli.common import EXIT_OK, run as run_command
from .blocks import command_line
from .runs import TrainRun, argv_with, cpu_name, format_table, publish, run_lanes, run_metrics

__all__ = ["DEFAULT_ITERS", "MODELS", "main", "markdown_table", "parse_args", "run_demo"]

DEFAULT_ITERS = 480


# (arm of the detection task, output directory name)
MODELS = (("hpvit/mae", "hpvit_tiny"), ("vitdet/mae", "vitdet_tiny"))

# (column title, key in the per-model metrics, format)
COLUMNS = (
    ("model", "model", "{}"),
    ("params (M)", "params_m", "{:.2f}"),
    ("backbone GFLOPs", "gflops", "{:.2f}"),
    ("latency (ms/img)", "latency_ms", "{:.0f}"),
    ("s/iter (train)", "s_per_iter", "{:.2f}"),
    ("box AP", "bbox/AP", "{:.1f}"),
    ("mask AP", "segm/AP", "{:.1f}"),
    ("box AP50", "bbox/AP50", "{:.1f}"),
    ("box APs", "bbox/APs", "{:.1f}"),
    ("box APm", "bbox/APm", "{:.1f}"),
    ("box APl", "bbox/APl", "{:.1f}"),
    ("mask APs", "segm/APs", "{:.1f}"),
    ("mask APm", "segm/APm", "{:.1f}"),
    ("mask APl", "segm/APl", "{:.1f}"),
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iters", type=int, default=None,
                   help=f"training iterations per model (env DEMO_ITERS; default {DEFAULT_ITERS})")
    p.add_argument("--output-dir", default="output/demo")
    p.add_argument("--train-dataset", default="hpvit_shapes_train")
    p.add_argument("--val-dataset", default="hpvit_shapes_val")
    p.add_argument("--num-vis", type=int, default=4, help="val images drawn with predictions")
    p.add_argument("--latency-images", type=int, default=10, help="val images timed per model")
    p.add_argument("--checkpoint", default=None,
                   help="the MAE both models start from (default: the lab's shipped one)")
    p.add_argument("--readme", help="write the table into this README's 'demo' block")
    p.add_argument("--sequential", action="store_true",
                   help="train one model after the other, each with all CPU threads")
    args = p.parse_args(argv)
    if args.iters is None:
        env = os.environ.get("DEMO_ITERS", str(DEFAULT_ITERS))
        try:
            args.iters = int(env)
        except ValueError:
            p.error(f"DEMO_ITERS must be an integer number of iterations, got {env!r}")
    if args.iters < 1:
        p.error(f"--iters / DEMO_ITERS must be >= 1, got {args.iters}")
    return args


# ---------------------------------------------------------------------------------------------
# Measuring the trained models
# ---------------------------------------------------------------------------------------------


def _read_metrics(run: TrainRun) -> Dict[str, float]:
    """Final metrics and mean s/iteration from the run's metrics.json."""
    return run_metrics(run, ("bbox/AP", "segm/AP"))


def _load_model(run: TrainRun):
    """(cfg, model in eval mode) with the run's final weights."""
    from hpvit_d2 import model_zoo

    cfg = model_zoo.get_config(run.config)
    return cfg, model_zoo.build_model(cfg, str(run.output_dir / "model_final.pth"), strict=True)


def _model_inputs(dataset_dicts: Sequence[dict]) -> List[dict]:
    """Test-time inputs ({"image": (3, H, W) uint8 RGB, "height", "width"}) of dataset dicts."""
    import numpy as np
    import torch
    from detectron2.data.detection_utils import read_image

    inputs = []
    for d in dataset_dicts:
        img = read_image(d["file_name"], format="RGB")
        inputs.append({"image": torch.as_tensor(np.ascontiguousarray(img.transpose(2, 0, 1))),
                       "height": d["height"], "width": d["width"]})
    return inputs


def measure_latency(model, inputs: Sequence[dict]) -> Dict[str, float]:
    """Median latency (ms) over ``inputs``, batch 1, the model run as the predictor runs it on
    the CPU (``optimize_for_cpu_inference``)."""
    import torch
    from hpvit_d2.modeling import optimize_for_cpu_inference

    with torch.no_grad():
        optimize_for_cpu_inference(model, retain_freed_memory=False)
        model([inputs[0]])  # warm-up
        times = []
        for x in inputs:
            t = time.perf_counter()
            model([x])
            times.append(time.perf_counter() - t)
    return {"latency_ms": 1000 * statistics.median(times),
            "latency_threads": torch.get_num_threads()}


# ---------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------


def markdown_table(rows: Sequence[Dict]) -> str:
    """The comparison table, one row per model, every column of ``COLUMNS``."""
    return format_table(rows, COLUMNS)


def plot_curves(runs: Sequence[TrainRun], path: Path) -> None:
    """Total loss and its main terms against iteration, one line per model, from metrics.json."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ("total_loss", "loss_cls", "loss_box_reg", "loss_mask")
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2))
    for run in runs:
        records = [r for r in read_metrics(run.output_dir / "metrics.json")
                   if "total_loss" in r]
        for ax, key in zip(axes, keys):
            ax.plot([r["iteration"] + 1 for r in records], [r[key] for r in records],
                    marker="o", markersize=2, label=run.name)
    for ax, key in zip(axes, keys):
        ax.set_title(key)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def draw_predictions(runs: Sequence[TrainRun], models, dataset_dicts: Sequence[dict],
                     inputs: Sequence[dict], metadata, out_dir: Path,
                     score_thresh: float = 0.3) -> List[Path]:
    """One PNG per image: ground truth, then each model's predictions (score >= score_thresh)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from detectron2.utils.visualizer import Visualizer

    paths = []
    for k, (d, x) in enumerate(zip(dataset_dicts, inputs)):
        rgb = x["image"].permute(1, 2, 0).numpy()
        panels = [("ground truth", Visualizer(rgb, metadata).draw_dataset_dict(d).get_image())]
        for run, model in zip(runs, models):
            with torch.no_grad():
                inst = model([x])[0]["instances"].to("cpu")
            inst = inst[inst.scores >= score_thresh]
            panels.append((f"{run.name} ({len(inst)} >= {score_thresh})",
                           Visualizer(rgb, metadata).draw_instance_predictions(inst).get_image()))
        fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
        for ax, (title, img) in zip(axes, panels):
            ax.imshow(img)
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        fig.tight_layout()
        path = out_dir / f"predictions_{k}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def run_demo(argv: Sequence[str]) -> List[Dict[str, float]]:
    """Everything ``make demo`` does; returns one row of measurements per model."""
    args = parse_args(argv)
    import torch
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from hpvit_d2.data.shapes import SHAPES_SPLITS, ensure_shapes_split

    from .shipped import SHIPPED_MAE, verify_checkpoint
    from .study import build_job, conversion_jobs, model_costs, recipe_for
    from .tasks import TASKS

    task = TASKS["detection"]
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (args.train_dataset, args.val_dataset):
        if name not in SHAPES_SPLITS:
            raise ConfigError(f"{name!r} is not a shapes dataset; choose from "
                              f"{sorted(SHAPES_SPLITS)}")
        ensure_shapes_split(name)  # generate once here, not in both training processes
    checkpoint = Path(args.checkpoint or SHIPPED_MAE).resolve()
    sums = verify_checkpoint(checkpoint)
    recipes = {arm: recipe_for(task, arm) for arm, _ in MODELS}
    runs = [build_job(task, arm, 0, "val", recipes[arm][0], out / slug, checkpoint, sums, out,
                      name=task.models[arm.split("/")[0]].label, iters=args.iters,
                      datasets=(args.train_dataset, args.val_dataset))
            for arm, slug in MODELS]
    conversions = conversion_jobs(task, [arm.split("/")[0] for arm, _ in MODELS], checkpoint,
                                  out, sums)

    start = time.time()
    lanes = ([conversions + runs] if args.sequential
             else [[conversion, run] for conversion, run in zip(conversions, runs)])
    train_wall = run_lanes(lanes, tag="demo")

    # One thread: comparable latencies, and no OpenMP oversubscription on a busy machine.
    torch.set_num_threads(1)
    val_dicts = DatasetCatalog.get(args.val_dataset)
    timed = val_dicts[: max(1, args.latency_images)]
    inputs = _model_inputs(timed)
    costs = model_costs(task, [arm.split("/")[0] for arm, _ in MODELS], smoke=False)
    models, rows = [], []
    for (arm, _), run in zip(MODELS, runs):
        cfg, model = _load_model(run)
        models.append(model)
        recipe, how = recipes[arm]
        row = {"model": run.name, "arm": arm, "config": f"configs/{run.config}",
               "iterations": run.iters, "train_dataset": args.train_dataset,
               "val_dataset": args.val_dataset, "checkpoint": str(checkpoint),
               "checkpoint_sha256": sums["model.safetensors"], "recipe": recipe,
               "recipe_source": how, "batch_size": cfg.dataloader.train.total_batch_size,
               "train_wall_seconds_both": train_wall, **costs[arm.split("/")[0]]}
        row.update(_read_metrics(run))
        row.update(measure_latency(model, inputs))
        (out / f"{run.output_dir.name}.json").write_text(json.dumps(row, indent=2))
        rows.append(row)

    table = markdown_table(rows)
    import datetime

    command = command_line("hpvit_lab.demo_run", argv_with(argv, "--iters", args.iters))
    recipe_text = "; ".join(
        f"{row['model']} lr {row['recipe']['lr']:g}, layer decay {row['recipe']['layer_decay']:g}, "
        f"drop path {row['recipe']['drop_path']:g} ({row['recipe_source']})" for row in rows)
    caption = (f"`make demo` (`{command}`), "
               f"{datetime.date.today().isoformat()}, CPU ({cpu_name()}, {os.cpu_count()} cores): "
               f"both fine-tuned from the lab's shipped MAE (`{os.path.relpath(checkpoint)}`, "
               f"sha256 {sums['model.safetensors'][:12]}...) for {args.iters} iterations of batch "
               f"{rows[0]['batch_size']}, seed 0, {args.train_dataset} -> {args.val_dataset}; "
               f"{recipe_text}; conversion and training side by side in "
               f"{train_wall / 60:.1f} min; latency: batch 1, {rows[0]['latency_threads']} "
               f"thread(s), median of {len(inputs)} images; backbone GFLOPs: one 256x256 input "
               f"(fvcore). One seed: a demo, not a verdict (`make reproduce`).")
    plot_curves(runs, out / "training_curves.png")
    shown = val_dicts[: args.num_vis]
    vis = draw_predictions(runs, models, shown, _model_inputs(shown),
                           MetadataCatalog.get(args.val_dataset), out)
    publish(table + "\n\n" + caption, out / "comparison.md", args.readme, "demo")
    print(f"\n[demo] done in {time.time() - start:.0f}s (training both: {train_wall:.0f}s). "
          f"Wrote {out}/comparison.md, {', '.join(r.output_dir.name + '.json' for r in runs)}, "
          f"training_curves.png and {len(vis)} predictions_*.png")
    return rows


def main(argv: Sequence[str]) -> int:
    run_demo(argv)
    return EXIT_OK


def entry() -> None:
    """``make demo``."""
    sys.exit(run_command(main))


if __name__ == "__main__":
    entry()
