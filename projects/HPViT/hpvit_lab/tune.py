"""
Fair tuning on val: every arm of a task gets the same budget, the points of the task's grid
(``Task.grid`` in hpvit_lab.tasks: lr, layer decay, drop path), one seed (``TUNE_SEED``, not a verdict seed), scored on
the val split. The best point of each arm is written to ``hpvit_lab/recipes.json``, which the
studies (``make reproduce``, ``make demo-semseg``, ``make demo-classify``) and ``make demo``
read. No test image is used.

    python -m hpvit_lab.tune detection                 # every arm of the full study
    python -m hpvit_lab.tune classify --arms hpvit/mae plain/mae
    python -m hpvit_lab.tune detection --readme        # also the docs' 'tune-detection' block
    python -m hpvit_lab.tune detection --smoke --output-dir /tmp/tune   # tests: no recipe written
"""
import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

from hpvit_d2.cli.common import EXIT_OK, run
from .blocks import command_line, update_readme_block
from . import study
from .runs import balanced_lanes, run_lanes, timing_text
from .tasks import TASKS

__all__ = ["TUNE_SEED", "main"]

TUNE_SEED = 100


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from .shipped import shipped_checkpoint

    p = argparse.ArgumentParser(prog="python -m hpvit_lab.tune", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("task", choices=sorted(TASKS))
    p.add_argument("--arms", nargs="+", default=None, help="default: every arm of the task")
    p.add_argument("--points", type=int, nargs="+", default=None,
                   help="grid points to run (indices; default all)")
    p.add_argument("--output-dir", default=None, help="default output/tune/TASK")
    p.add_argument("--checkpoint", default=None,
                   help="the MAE the mae arms start from (default: the task's shipped one)")
    p.add_argument("--readme", nargs="?", const="", default=None,
                   help="write the tuning table into the task's docs ('tune-TASK' block)")
    p.add_argument("--lanes", type=int, default=2,
                   help="processes side by side, one thread each (default 2)")
    p.add_argument("--smoke", action="store_true", help="mini splits, 2 iterations; writes no "
                                                        "recipe")
    args = p.parse_args(argv)
    args.argv = list(argv)
    task = TASKS[args.task]
    args.checkpoint = args.checkpoint or str(shipped_checkpoint(task.checkpoint))
    args.arms = args.arms or list(task.full_arms)
    unknown = sorted(set(args.arms) - set(task.full_arms))
    if unknown:
        p.error(f"--arms {' '.join(unknown)}: {args.task} has {' '.join(task.full_arms)}")
    grid = TASKS[args.task].grid
    args.points = args.points if args.points is not None else list(range(len(grid)))
    if any(not 0 <= k < len(grid) for k in args.points):
        p.error(f"--points: indices 0..{len(grid) - 1}")
    args.output_dir = args.output_dir or f"output/tune/{args.task}"
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    from .shipped import verify_checkpoint

    task = TASKS[args.task]
    grid = TASKS[args.task].grid
    start = time.time()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint).resolve()
    needs_mae = sorted({a.split("/")[0] for a in args.arms if a.endswith("/mae")})
    sums = verify_checkpoint(checkpoint) if needs_mae else {"model.safetensors": "unused"}
    splits = study._split_names(task, args.smoke)
    if task.runner == "detectron2":
        study.ensure_splits(splits["train"], splits["val"])
    jobs = study.conversion_jobs(task, needs_mae, checkpoint, out, sums)
    planned = []
    for k in args.points:
        for arm in args.arms:
            run_dir = out / f"{arm.replace('/', '_')}_p{k}"
            job = study.build_job(task, arm, TUNE_SEED, "val", grid[k], run_dir, checkpoint,
                                  sums, out, args.smoke, name=f"{arm} p{k}")
            jobs.append(job)
            planned.append((arm, k, job))
    ordered = [j for j in jobs if not j.needs] + [j for j in jobs if j.needs]
    lanes = balanced_lanes(ordered, lambda j: study.job_cost(task, j), args.lanes)
    durations: Dict[str, float] = {}
    wall = run_lanes(lanes, tag=f"tune-{task.name}", reuse=True, threads=1, durations=durations)

    # the split scored: a detectron2 dataset name, or the classification tree's val/ folder
    val_split = splits["val"] if task.runner == "detectron2" else "the ImageFolder val/"
    scores: Dict[str, Dict[int, float]] = {arm: {} for arm in args.arms}
    for arm, k, job in planned:
        scores[arm][k] = study.read_record(task, job, val_split)[task.metric]
    best = {arm: max(points, key=points.get) for arm, points in scores.items()}
    lines = ["| point | lr | layer decay | drop path | " +
             " | ".join(f"{task.models[a.split('/')[0]].label} / {a.split('/')[1]}" for a in args.arms)
             + " |", "|---:|---:|---:|---:|" + "---:|" * len(args.arms)]
    for k in args.points:
        g = grid[k]
        cells = [f"**{scores[a][k]:.1f}**" if best[a] == k else f"{scores[a][k]:.1f}"
                 for a in args.arms]
        lines.append(f"| {k} | {g['lr']:g} | {g['layer_decay']:g} | {g['drop_path']:g} | "
                     + " | ".join(cells) + " |")
    caption = (f"`{command_line('hpvit_lab.tune', args.argv)}`, {datetime.date.today().isoformat()}, "
               f"CPU, {args.lanes} lane(s) of one thread: {task.metric_label} on the val split "
               f"({val_split}), "
               f"seed {TUNE_SEED}, the same {len(args.points)} points for every arm; bold: the "
               f"arm's choice, written to hpvit_lab/recipes.json; {timing_text(wall, lanes, durations)}.")
    report = "\n".join(lines) + "\n\n" + caption
    (out / "tuning.md").write_text(report + "\n")
    (out / "scores.json").write_text(json.dumps(scores, indent=2))
    print("\n" + report)
    if not args.smoke:
        recipes = json.loads(study.RECIPES_FILE.read_text()) if study.RECIPES_FILE.is_file() else {}
        for arm, k in best.items():
            recipes.setdefault(task.name, {})[arm] = {
                **grid[k], "point": k, "val_metric": round(scores[arm][k], 2),
                "tuned": datetime.date.today().isoformat()}
        tmp = study.RECIPES_FILE.with_suffix(".tmp")
        tmp.write_text(json.dumps(recipes, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, study.RECIPES_FILE)
        print(f"[tune] wrote {study.RECIPES_FILE}")
    if args.readme is not None:
        update_readme_block(args.readme or task.docs, f"tune-{task.name}", report)
    print(f"[tune] done in {time.time() - start:.0f}s")
    return EXIT_OK


def entry() -> None:
    """``python -m hpvit_lab.tune``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
