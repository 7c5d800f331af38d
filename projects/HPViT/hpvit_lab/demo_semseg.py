"""
``make demo``'s semantic segmentation companion: train the tiny HPViT UperNet and its equal-size
plain-ViT baseline on the embedded shapes label maps with the same budget, evaluate both with
detectron2's SemSegEvaluator, and compare them.

    python -m hpvit_lab.demo_semseg                 # 600 iterations per model, batch 4
    python -m hpvit_lab.demo_semseg --iters 300     # half the time; both models then still
                                                       # predict background everywhere
    python -m hpvit_lab.demo_semseg --iters 2 --train-dataset hpvit_shapes_sem_seg_train_mini \\
        --val-dataset hpvit_shapes_sem_seg_val_mini --output-dir /tmp/demo_semseg   # smoke run

Both models (configs/semseg_hpvit_tiny.py, configs/semseg_vit_tiny.py: the tiny trunk, the 256x256
shapes images downscaled to about 128x128, 5 classes = background + 4 shapes) train through the project's
training entry, as two processes side by side with an even share of the CPU threads
(``--sequential``: one after the other), exactly as ``make demo`` trains the detectors. Writes to
``--output-dir`` (default ``output/demo_semseg``):

- ``results.json``: per model, every SemSegEvaluator metric (mIoU, fwIoU, mACC, pACC, per-class
  IoU and accuracy), params, GFLOPs (one val image as evaluated: 128x128 in, fvcore),
  latency (the same input), s/iteration, and
  the wall times;
- ``comparison.md``: the comparison table (also printed);
- ``semseg_hpvit_tiny/``, ``semseg_vit_tiny/``: each run's output directory, and its log.
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from hpvit_d2.overrides import ConfigError
from hpvit_d2.cli.common import EXIT_OK, command_line, run
from .demo_run import measure_model
from .runs import TrainRun, argv_with, format_table, publish, run_lanes, run_metrics

__all__ = ["DEFAULT_ITERS", "MODELS", "main", "markdown_table", "parse_args", "run_demo"]

DEFAULT_ITERS = 600

MODELS = (
    ("HPViT-tiny", "semseg_hpvit_tiny.py", "semseg_hpvit_tiny"),
    ("ViT-tiny + SFP", "semseg_vit_tiny.py", "semseg_vit_tiny"),
)

# (column title, key in the per-model results, format)
COLUMNS = (
    ("model", "model", "{}"),
    ("params (M)", "params_m", "{:.2f}"),
    ("GFLOPs", "gflops", "{:.2f}"),
    ("latency (ms/img)", "latency_ms", "{:.0f}"),
    ("s/iter (train)", "s_per_iter", "{:.2f}"),
    ("mIoU", "sem_seg/mIoU", "{:.1f}"),
    ("fwIoU", "sem_seg/fwIoU", "{:.1f}"),
    ("mACC", "sem_seg/mACC", "{:.1f}"),
    ("pACC", "sem_seg/pACC", "{:.1f}"),
    ("IoU bg", "sem_seg/IoU-background", "{:.1f}"),
    ("IoU circle", "sem_seg/IoU-circle", "{:.1f}"),
    ("IoU rectangle", "sem_seg/IoU-rectangle", "{:.1f}"),
    ("IoU triangle", "sem_seg/IoU-triangle", "{:.1f}"),
    ("IoU star", "sem_seg/IoU-star", "{:.1f}"),
)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iters", type=int, default=DEFAULT_ITERS,
                   help=f"training iterations per model (default {DEFAULT_ITERS})")
    p.add_argument("--output-dir", default="output/demo_semseg")
    p.add_argument("--train-dataset", default="hpvit_shapes_sem_seg_train")
    p.add_argument("--val-dataset", default="hpvit_shapes_sem_seg_val")
    p.add_argument("--latency-images", type=int, default=10, help="val images timed per model")
    p.add_argument("--readme", help="write the table into this README's 'demo-semseg' block")
    p.add_argument("--sequential", action="store_true",
                   help="train one model after the other, each with all CPU threads")
    args = p.parse_args(argv)
    if args.iters < 1:
        p.error(f"--iters must be >= 1, got {args.iters}")
    return args


def markdown_table(rows: Sequence[Dict]) -> str:
    """The comparison table, one row per model, every column of ``COLUMNS``."""
    return format_table(rows, COLUMNS)


def _read_metrics(run: TrainRun) -> Dict[str, float]:
    """Final metrics and mean s/iteration from the run's metrics.json."""
    return run_metrics(run, ("sem_seg/mIoU",), prefixes=("sem_seg/",))


def _test_inputs(cfg, dataset_dicts: Sequence[dict]) -> List[dict]:
    """Model inputs as the evaluation feeds them: the config's test mapper (resize) applied."""
    from detectron2.config import instantiate

    mapper = instantiate(cfg.dataloader.test.mapper)
    return [{k: v for k, v in mapper(d).items() if k in ("image", "height", "width")}
            for d in dataset_dicts]


def run_demo(argv: Sequence[str]) -> List[Dict]:
    """Everything the semantic demo does; returns one row of measurements per model."""
    args = parse_args(argv)
    import torch
    from detectron2.data import DatasetCatalog

    from hpvit_d2 import model_zoo
    from hpvit_d2.data.shapes_semseg import SHAPES_SEM_SEG_SPLITS, ensure_shapes_sem_seg_split

    start = time.time()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in (args.train_dataset, args.val_dataset):
        if name not in SHAPES_SEM_SEG_SPLITS:
            raise ConfigError(f"{name!r} is not a shapes semantic dataset; choose from "
                              f"{sorted(SHAPES_SEM_SEG_SPLITS)}")
        ensure_shapes_sem_seg_split(name)  # generate once here, not in both training processes
    data = [f"dataloader.train.dataset.names={args.train_dataset}",
            f"dataloader.test.dataset.names={args.val_dataset}"]
    runs = [TrainRun(name, cfg, out / slug, args.iters, data) for name, cfg, slug in MODELS]
    lanes = [runs] if args.sequential else [[run] for run in runs]
    train_wall = run_lanes(lanes, tag="demo_semseg")

    torch.set_num_threads(1)  # comparable latencies, no oversubscription on a busy machine
    timed = DatasetCatalog.get(args.val_dataset)[: max(1, args.latency_images)]
    rows = []
    for demo in runs:
        cfg = model_zoo.get_config(demo.config)
        inputs = _test_inputs(cfg, timed)
        model = model_zoo.build_model(cfg, str(demo.output_dir / "model_final.pth"), strict=True,
                                      verbose=False)
        row = {"model": demo.name, "config": f"configs/{demo.config}", "iterations": args.iters,
               "batch_size": cfg.dataloader.train.total_batch_size,
               "train_dataset": args.train_dataset, "val_dataset": args.val_dataset}
        row.update(_read_metrics(demo))
        row.update(measure_model(model, inputs))
        rows.append(row)

    table = markdown_table(rows)
    total_wall = time.time() - start
    import datetime
    import os

    command = command_line("hpvit_lab.demo_semseg", argv_with(argv, "--iters", args.iters))
    caption = (f"`make demo-semseg` (`{command}`), "
               f"{datetime.date.today().isoformat()}, CPU, {os.cpu_count()} cores: "
               f"{args.iters} iterations per model, batch {rows[0]['batch_size']} (images at "
               f"~128x128), {args.train_dataset} -> {args.val_dataset} (SemSegEvaluator, 5 "
               f"classes); latency: batch 1, {rows[0]['latency_threads']} thread(s), median of "
               f"{len(inputs)} val images at the test resolution (128x128 in, scores upsampled "
               f"to 256x256); GFLOPs: one of them (fvcore). Wall time {total_wall:.0f} s "
               f"({train_wall:.0f} s training both "
               f"{'one after the other' if args.sequential else 'side by side'}).")
    results = {"models": rows, "train_wall_seconds": train_wall, "total_wall_seconds": total_wall,
               "sequential": args.sequential}
    (out / "results.json").write_text(json.dumps(results, indent=2))
    publish(table + "\n\n" + caption, out / "comparison.md", args.readme, "demo-semseg")
    print(f"\n[demo_semseg] done in {total_wall:.0f}s. Wrote {out}/results.json and comparison.md")
    return rows


def main(argv: Sequence[str]) -> int:
    run_demo(argv)
    return EXIT_OK


def entry() -> None:
    """``python -m hpvit_lab.demo_semseg``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
