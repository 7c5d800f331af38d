"""
``make reproduce``: the paper's comparison in miniature, on the embedded shapes data, on the CPU,
with three seeds so that a verdict can be believed.

    python -m hpvit_lab.reproduce [--output-dir output/reproduce] [--seeds 0 1 2]
    python -m hpvit_lab.reproduce --seeds 0          # one seed: quick, prints no verdict
    python -m hpvit_lab.reproduce --pools conv avg   # HPViT with each pooling, for the ablation
    python -m hpvit_lab.reproduce --smoke            # every stage, a few steps each, no verdict

1. Pre-train a small MAE of the tiny configs' ViT (width 128, 6 blocks, 4 heads, patch 16; MAE's
   lightweight decoder: 1 block of width 64) on unlabelled shapes images with Hugging Face
   ``ViTMAEForPreTraining``, through ``python -m hpvit_lab.pretrain_mae``; written with
   ``save_pretrained`` to ``mae/`` and reused by the next run when its settings match.
2. Convert it with the project's public converter, as a user would:
   ``python -m hpvit_d2.convert mae/ init_<config>.pth --config <config> --strict``.
3. Fine-tune HPViT-tiny and ViTDet-tiny from it and both again from scratch, for every seed: the
   tiny configs' recipe, the same iterations.
4. Evaluate every run with COCOEvaluator (the training entry's final evaluation) and write
   ``results.json`` (one record per run: backbone, pool, init, seed and detectron2's flat metrics),
   ``results.md`` (means with ranges, the paired per-seed differences and the verdicts) and
   ``curves.png``.

Every step is a subprocess in one of two lanes of one CPU thread each (``hpvit_lab.runs``),
started once the steps it needs are done; a fine-tune whose directory holds a finished run of the
same command is reused, and a rerun whose fine-tunes from the MAE are all reused neither
pre-trains nor converts again.

The claims checked: MAE pre-training helps HPViT (box AP, MAE minus scratch, >= +3), and HPViT from
MAE beats ViTDet from the same MAE (> 0). A claim is "shown" only when the mean of the paired
per-seed differences clears its threshold and every seed agrees in sign, with at least 3 seeds;
one seed or a smoke run prints the numbers and no verdict.
"""
import argparse
import datetime
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, replace
from functools import lru_cache
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hpvit_d2.engine.metrics import read_metrics
from .mae import MAESettings, read_history
from hpvit_d2.cli.common import EXIT_OK, command_line, run as run_command, update_readme_block
from .runs import CommandJob, TrainRun, balanced_lanes, replay_wall, run_lanes, run_metrics

__all__ = ["BACKBONES", "CLAIMS", "MIN_SEEDS_FOR_VERDICT", "mae_job", "main", "markdown_report",
           "mae_settings", "paired_differences", "run_reproduce", "unlabelled_images", "verdict"]

# backbone -> (label, config)
BACKBONES = {"hpvit": ("HPViT-tiny", "mask_rcnn_hpvit_tiny.py"),
             "vitdet": ("ViTDet-tiny", "mask_rcnn_vitdet_tiny.py")}
UNLABELLED_SPLIT = dict(split="unlabelled", num_images=3000, image_size=256, seed=7)
# The pre-training recipe on top of the tiny trunk's size (mae_settings): 128x128 crops of 10-50%
# of a 256x256 image (objects at 0.7-1.6x the size the detectors see them), 1200 steps of 64,
# AdamW 1.5e-3, MAE's lightweight decoder (MAESettings' defaults: 1 block of width 64).
MAE_RECIPE = dict(image_size=128, batch_size=64, steps=1200, min_crop_scale=0.1, max_crop_scale=0.5)
# Rough single-thread costs, to balance the two lanes.
SECONDS_PER_ITER = {"mask_rcnn_hpvit_tiny.py": 2.0, "mask_rcnn_vitdet_tiny.py": 1.2}
MAE_SECONDS_PER_STEP = 0.4
DEFAULT_SEEDS = (0, 1, 2)
MIN_SEEDS_FOR_VERDICT = 3
# name -> (text, (backbone, pool or None, init) minus (backbone, pool or None, init), threshold);
# a pool of None is the config's own.
CLAIMS = {
    "mae_helps_hpvit": ("MAE pre-training helps HPViT-tiny (MAE - scratch)",
                        ("hpvit", None, "mae"), ("hpvit", None, "scratch"), 3.0),
    "hpvit_beats_vitdet": ("HPViT-tiny from MAE beats ViTDet-tiny from the same MAE",
                           ("hpvit", None, "mae"), ("vitdet", None, "mae"), 0.0),
    "mae_helps_vitdet": ("MAE pre-training helps ViTDet-tiny (MAE - scratch), for reference",
                         ("vitdet", None, "mae"), ("vitdet", None, "scratch"), 0.0),
}


@lru_cache(maxsize=None)
def config_pool() -> str:
    """The pooling the HPViT-tiny config ships (``model.backbone.bottom_up.pool_type``)."""
    from hpvit_d2.model_zoo import get_config

    return get_config(BACKBONES["hpvit"][1]).model.backbone.bottom_up.pool_type


@lru_cache(maxsize=None)
def config_batch_size() -> int:
    """The tiny configs' fine-tuning batch (``dataloader.train.total_batch_size``)."""
    from hpvit_d2.model_zoo import get_config

    return get_config(BACKBONES["hpvit"][1]).dataloader.train.total_batch_size


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hpvit_lab.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default="output/reproduce")
    p.add_argument("--seeds", type=int, nargs="+", default=list(DEFAULT_SEEDS),
                   help="fine-tuning seeds (a verdict needs at least 3)")
    p.add_argument("--iters", type=int, default=240, help="fine-tuning iterations per run")
    p.add_argument("--batch-size", type=int, default=None,
                   help="fine-tuning images per iteration (default: the tiny configs' 4); with "
                        "--iters, a longer fine-tune at a smaller cost per iteration")
    p.add_argument("--pools", nargs="+", choices=("conv", "avg", "max"), default=None,
                   help="run HPViT-tiny with each of these poolings (default: the config's); "
                        "more than one also writes the pooling comparison")
    p.add_argument("--mae-steps", type=int, default=MAE_RECIPE["steps"], help="MAE pre-training steps")
    p.add_argument("--mae-images", type=int, default=UNLABELLED_SPLIT["num_images"],
                   help="unlabelled images generated for pre-training")
    p.add_argument("--train-dataset", default="hpvit_shapes_train")
    p.add_argument("--val-dataset", default="hpvit_shapes_val")
    p.add_argument("--readme", help="write the report into this README's 'reproduce' block (and "
                                    "'reproduce-pools' with several --pools)")
    p.add_argument("--block", default="reproduce",
                   help="name of the README block to write (default 'reproduce'; its pooling "
                        "comparison goes to NAME-pools)")
    p.add_argument("--smoke", action="store_true",
                   help="a few steps of every stage (tests): mini splits, 4 MAE steps, 2 iterations, "
                        "no verdict")
    args = p.parse_args(argv)
    args.argv = list(argv)
    if args.smoke:
        args.mae_steps, args.mae_images, args.iters = 4, 16, 2
        args.train_dataset, args.val_dataset = "hpvit_shapes_train_mini", "hpvit_shapes_val_mini"
    if min(args.iters, args.mae_steps, args.mae_images,
           1 if args.batch_size is None else args.batch_size) < 1:
        p.error("--iters, --batch-size, --mae-steps and --mae-images must be >= 1")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed is given twice")
    args.pools = list(dict.fromkeys(args.pools or [config_pool()]))
    return args


def mae_settings(steps: int, num_images: int) -> MAESettings:
    """The MAE of the tiny configs' trunk (width, depth, heads, patch read off
    ``mask_rcnn_hpvit_tiny.py``) with ``MAE_RECIPE``, ``steps`` steps on ``num_images`` images."""
    from hpvit_d2.model_zoo import get_config

    trunk = get_config(BACKBONES["hpvit"][1]).model.backbone.bottom_up
    settings = MAESettings(width=trunk.embed_dim, depth=trunk.depth, heads=trunk.num_heads,
                           patch_size=trunk.patch_size, **MAE_RECIPE)
    return replace(settings, steps=steps, batch_size=min(settings.batch_size, num_images))


def unlabelled_images(num_images: int) -> Path:
    """Generate (once) the unlabelled shapes split; returns its image directory."""
    from hpvit_d2.data.shapes import data_root, generate_shapes_dataset

    json_file = generate_shapes_dataset(data_root(), **dict(UNLABELLED_SPLIT, num_images=num_images))
    return Path(json_file).parent / "images"


def mae_job(mae_dir: Path, image_dir: Path, settings: MAESettings, log_file: Path) -> CommandJob:
    """The pre-training as a lane job named "mae": ``python -m hpvit_lab.pretrain_mae``
    (reuses ``mae_dir`` when it was pre-trained with the same settings)."""
    from .mae import HISTORY_FILE
    from .pretrain_mae import settings_argv

    return CommandJob("mae", [sys.executable, "-m", "hpvit_lab.pretrain_mae", "--images",
                              str(image_dir), "--output", str(mae_dir), *settings_argv(settings)],
                      log_file, cost=MAE_SECONDS_PER_STEP * settings.steps,
                      outputs=(mae_dir / HISTORY_FILE, mae_dir / "config.json",
                               mae_dir / "model.safetensors"))


def _variants(args) -> List[Tuple[str, Optional[str]]]:
    """(backbone, pool) of every fine-tuned model: HPViT with each pooling, then ViTDet."""
    return [("hpvit", pool) for pool in args.pools] + [("vitdet", None)]


def _run_name(backbone: str, pool: Optional[str], init: str, seed: int) -> str:
    return f"{backbone}{'_' + pool if pool else ''}_{init}_seed{seed}"


def _cost(job) -> float:
    """Rough single-thread seconds of a job (lane balancing only)."""
    if isinstance(job, TrainRun):
        return job.iters * SECONDS_PER_ITER[job.config]
    return job.cost


def plan(args, out: Path, image_dir: Path) -> Tuple[List[List], List[Dict]]:
    """
    Every job of the run, in two lanes, and one record per fine-tune.

    The MAE pre-training (``python -m hpvit_lab.pretrain_mae``), the two conversions
    (``python -m hpvit_d2.convert ... --strict``) and the fine-tunes (per seed, init, backbone and
    pooling) are placed by ``balanced_lanes``, the jobs that need nothing first: the scratch runs
    start at once, beside the pre-training; a fine-tune from MAE waits for its conversion.
    """
    jobs = [mae_job(out / "mae", image_dir, mae_settings(args.mae_steps, args.mae_images),
                    out / "mae.log")]
    inits = {}
    for backbone, (_, config) in BACKBONES.items():
        inits[backbone] = out / f"init_{Path(config).stem}.pth"
        jobs.append(CommandJob(f"convert_{backbone}", [
            sys.executable, "-m", "hpvit_d2.convert", str(out / "mae"), str(inits[backbone]),
            "--config-file", config, "--strict"], out / f"convert_{backbone}.log", needs=("mae",),
            cost=10.0, outputs=(inits[backbone],)))
    data = [f"dataloader.train.dataset.names={args.train_dataset}",
            f"dataloader.test.dataset.names={args.val_dataset}"]
    if args.batch_size:
        data.append(f"dataloader.train.total_batch_size={args.batch_size}")
    records = []
    for seed in args.seeds:
        for init in ("scratch", "mae"):
            for backbone, pool in _variants(args):
                label, config = BACKBONES[backbone]
                name = _run_name(backbone, pool, init, seed)
                checkpoint = str(inits[backbone]) if init == "mae" else ""
                pooling = [f"model.backbone.bottom_up.pool_type={pool}"] if pool else []
                jobs.append(TrainRun(
                    f"{label}{' ' + pool if pool else ''} {init} s{seed}", config, out / name,
                    args.iters, [f"train.init_checkpoint={checkpoint}", f"train.seed={seed}",
                                 *pooling, *data],
                    needs=(f"convert_{backbone}",) if init == "mae" else ()))
                records.append({"backbone": backbone, "pool": pool, "init": init, "seed": seed,
                                "run": name, "config": f"configs/{config}",
                                "iterations": args.iters,
                                "batch_size": args.batch_size or config_batch_size()})
    independent = [job for job in jobs if not job.needs]
    return balanced_lanes(independent + [job for job in jobs if job.needs], _cost), records


def finetune_records(records: List[Dict], lanes: List[List], durations: Dict[str, float]) -> List[Dict]:
    """The records with each run's final metrics and its duration (s, one thread)."""
    runs = {job.output_dir.name: job for lane in lanes for job in lane if isinstance(job, TrainRun)}
    for record in records:
        job = runs[record["run"]]
        record.update(run_metrics(job, ("bbox/AP", "segm/AP")))
        record["seconds"] = durations.get(job.name)
    return records


def _select(records: List[Dict], backbone: str, pool: Optional[str], init: str) -> Dict[int, Dict]:
    """seed -> record of one (backbone, pool, init); a pool of None is the config's own."""
    if backbone == "hpvit" and pool is None:
        pool = config_pool()
    return {r["seed"]: r for r in records
            if r["backbone"] == backbone and r["init"] == init and (backbone != "hpvit" or r["pool"] == pool)}


def paired_differences(records: List[Dict], a: Tuple, b: Tuple, key: str = "bbox/AP") -> Dict[int, float]:
    """seed -> ``a``'s metric minus ``b``'s, for the seeds both have; ``a``/``b`` are
    (backbone, pool, init)."""
    left, right = _select(records, *a), _select(records, *b)
    return {seed: left[seed][key] - right[seed][key] for seed in sorted(set(left) & set(right))}


def verdict(differences: Sequence[float], threshold: float, smoke: bool = False) -> Optional[str]:
    """
    "shown" when the mean difference clears ``threshold`` (>= for a positive threshold, > for 0)
    and every seed is positive; "the opposite" when every seed is negative; "not separable from
    noise" otherwise. None (no verdict) for a smoke run or fewer than ``MIN_SEEDS_FOR_VERDICT``
    seeds: one seed is not evidence.
    """
    if smoke or len(differences) < MIN_SEEDS_FOR_VERDICT:
        return None
    mean = statistics.mean(differences)
    clears = mean >= threshold if threshold > 0 else mean > threshold
    if clears and all(d > 0 for d in differences):
        return "shown"
    if all(d < 0 for d in differences):
        return "the opposite (every seed below 0)"
    if all(d > 0 for d in differences):
        return f"not shown (every seed above 0, mean below {threshold:+.1f})"
    return "not separable from noise (the seeds disagree in sign)"


def _no_verdict(seeds: int, smoke: bool) -> str:
    if smoke:
        return "no verdict (smoke run)"
    return f"no verdict ({seeds} seed(s); a verdict needs at least {MIN_SEEDS_FOR_VERDICT})"


def _summary(values: Sequence[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.1f}" if len(values) == 1 else f"{mean:.1f} ({min(values):.1f} to {max(values):.1f})"


def _signed(values: Sequence[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:+.1f}" if len(values) == 1 else f"{mean:+.1f} ({min(values):+.1f} to {max(values):+.1f})"


def _label(backbone: str, pool: Optional[str], show_pool: bool) -> str:
    label = BACKBONES[backbone][0]
    return f"{label} {pool} pools" if backbone == "hpvit" and show_pool else label


def means_table(records: List[Dict], variants: Sequence[Tuple[str, Optional[str]]], show_pool: bool) -> List[str]:
    lines = ["| model | init | seeds | box AP | mask AP | box AP50 | box APs | box APm | box APl |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for backbone, pool in variants:
        for init in ("mae", "scratch"):
            rows = list(_select(records, backbone, pool, init).values())
            if not rows:
                continue
            cells = [_summary([r[key] for r in rows]) for key in
                     ("bbox/AP", "segm/AP", "bbox/AP50", "bbox/APs", "bbox/APm", "bbox/APl")]
            lines.append(f"| {_label(backbone, pool, show_pool)} | {init} | {len(rows)} | "
                         + " | ".join(cells) + " |")
    return lines


def claims_table(records: List[Dict], smoke: bool) -> Tuple[List[str], Dict]:
    """The paired per-seed differences of each claim (box and mask AP) and its verdict."""
    lines = ["| claim | threshold (box AP) | box AP per seed | box AP mean (range) | "
             "mask AP mean (range) | verdict |", "|---|---:|---|---:|---:|---|"]
    outcome = {}
    for name, (text, a, b, threshold) in CLAIMS.items():
        box = paired_differences(records, a, b, "bbox/AP")
        mask = paired_differences(records, a, b, "segm/AP")
        if not box:
            continue
        said = verdict(list(box.values()), threshold, smoke)
        outcome[name] = {"box_ap_per_seed": box, "mask_ap_per_seed": mask, "threshold": threshold,
                         "verdict": said}
        per_seed = ", ".join(f"s{seed} {d:+.1f}" for seed, d in box.items())
        bar = f">= {threshold:+.1f}" if threshold > 0 else "> 0"
        lines.append(f"| {text} | {bar} | {per_seed} | {_signed(list(box.values()))} | "
                     f"{_signed(list(mask.values()))} | "
                     f"{said or _no_verdict(len(box), smoke)} |")
    return lines, outcome


def pools_table(records: List[Dict], pools: Sequence[str], smoke: bool) -> List[str]:
    """HPViT-tiny with each pooling: means with ranges, and the MAE gain per seed."""
    lines = ["| pools | init | seeds | box AP | mask AP | MAE - scratch, box AP per seed | "
             "MAE - scratch, box AP mean (range) | verdict (>= +3.0) |",
             "|---|---|---:|---:|---:|---|---:|---|"]
    for pool in pools:
        gain = paired_differences(records, ("hpvit", pool, "mae"), ("hpvit", pool, "scratch"))
        said = verdict(list(gain.values()), CLAIMS["mae_helps_hpvit"][3], smoke)
        for init in ("mae", "scratch"):
            rows = list(_select(records, "hpvit", pool, init).values())
            first = init == "mae"
            lines.append(
                f"| {pool}{' (shipped)' if pool == config_pool() else ''} | {init} | {len(rows)} | "
                f"{_summary([r['bbox/AP'] for r in rows])} | {_summary([r['segm/AP'] for r in rows])} | "
                + (f"{', '.join(f's{s} {d:+.1f}' for s, d in gain.items())} | "
                   f"{_signed(list(gain.values()))} | {said or _no_verdict(len(gain), smoke)} |" if first and gain
                   else "| | |"))
    return lines


def markdown_report(records: List[Dict], mae: Dict, args, wall_seconds: float,
                    default_wall: Optional[float] = None,
                    replayed: Optional[float] = None) -> Tuple[str, Optional[str]]:
    """The 'reproduce' block (the four-way comparison with the config's pooling) and, with more
    than one pooling, the 'reproduce-pools' block. ``replayed``: this command's jobs replayed on
    their measured durations (s), reported instead of the wall time when runs were reused."""
    seeds = sorted({r["seed"] for r in records})
    variants = [("hpvit", None), ("vitdet", None)]
    lines = means_table(records, variants, show_pool=False)
    claim_lines, _ = claims_table(records, args.smoke)
    settings = mae["settings"]
    encoder = MAESettings(**{k: v for k, v in settings.items() if k in MAESettings.__dataclass_fields__})
    mae_time = f"{mae['seconds'] / 60:.1f} min on one thread{', reused' if mae.get('cached') else ''}"
    command = command_line("hpvit_lab.reproduce", args.argv)
    timing = f"Wall time {wall_seconds / 60:.1f} min on {os.cpu_count()} cores, two lanes of one thread"
    if replayed is not None and wall_seconds < 0.9 * replayed:
        timing = (f"Finished runs of the same commands reused (this command: {wall_seconds / 60:.1f} "
                  f"min); on their measured durations its jobs take {replayed / 60:.1f} min on "
                  f"{os.cpu_count()} cores, two lanes of one thread")
    if default_wall is not None:
        timing += (f"; the default run's jobs (3 seeds, the config's pooling) replayed on their "
                   f"measured durations: {default_wall / 60:.1f} min")
    caption = (
        f"`{command}`, {datetime.date.today().isoformat()}, CPU: MAE (encoder {encoder.depth} x "
        f"{encoder.width}, decoder {encoder.decoder_depth} x {encoder.decoder_width}: "
        f"{100 * encoder.decoder_cost_ratio():.0f}% of the encoder's compute per token) "
        f"{settings['steps']} steps of {settings['batch_size']} {settings['image_size']}px crops on "
        f"{settings['num_images']} unlabelled images (mask ratio {settings['mask_ratio']}, final loss "
        f"{statistics.mean(mae['losses'][-20:]):.3f}, {mae_time}); fine-tuning {args.iters} "
        f"iterations{f' of batch {args.batch_size}' if args.batch_size else ''} each, seeds "
        f"{', '.join(map(str, seeds))}, the tiny configs' recipe "
        f"(HPViT-tiny: {config_pool()} pools); {args.train_dataset} -> {args.val_dataset}, "
        f"COCOEvaluator; ranges are min to max over seeds. {timing}.")
    report = "\n".join(lines + [""] + claim_lines + ["", caption])
    pools = None
    if len(args.pools) > 1:
        pools = "\n".join(pools_table(records, args.pools, args.smoke) + ["", caption])
    return report, pools


def plot(records: List[Dict], mae: Dict, out: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6))
    losses = mae["losses"]
    window = max(1, len(losses) // 50)
    smooth = [statistics.mean(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
    left.plot(range(1, len(losses) + 1), smooth)
    left.set(title="MAE pre-training (transformers ViTMAE)", xlabel="step",
             ylabel="reconstruction loss (norm. pixels)")
    colours = {}
    for record in records:
        key = (record["backbone"], record["pool"], record["init"])
        colour = colours.setdefault(key, f"C{len(colours)}")
        rows = [r for r in read_metrics(out / record["run"] / "metrics.json") if "total_loss" in r]
        label = f"{BACKBONES[record['backbone']][0]}{' ' + record['pool'] if record['pool'] else ''} {record['init']}"
        right.plot([r["iteration"] + 1 for r in rows], [r["total_loss"] for r in rows], color=colour,
                   linewidth=0.8, label=label if record["seed"] == min(r["seed"] for r in records) else None,
                   linestyle="-" if record["init"] == "mae" else "--")
    right.set(title="fine-tuning (Mask R-CNN), every seed", xlabel="iteration", ylabel="total loss")
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def default_wall(lanes: List[List], durations: Dict[str, float], args, out: Path, image_dir: Path) -> Optional[float]:
    """The wall time of ``make reproduce``'s default run (3 seeds, the config's pooling), replayed
    from the measured durations of this run's jobs; None when this run lacks one of them."""
    default = parse_args(["--output-dir", str(out), "--iters", str(args.iters),
                          "--train-dataset", args.train_dataset, "--val-dataset", args.val_dataset])
    if set(default.seeds) - set(args.seeds) or args.smoke or args.batch_size:
        return None
    default_lanes, _ = plan(default, out, image_dir)
    names = {job.name for lane in default_lanes for job in lane}
    if not names <= set(durations):
        return None
    return replay_wall(default_lanes, durations)


def run_reproduce(argv: Sequence[str]) -> List[Dict]:
    """Everything ``make reproduce`` does; returns the records written to results.json."""
    args = parse_args(argv)
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    from hpvit_d2.data.shapes import ensure_shapes_split

    start = time.time()
    for name in (args.train_dataset, args.val_dataset):
        ensure_shapes_split(name)  # generated once here, not in every training process
    image_dir = unlabelled_images(args.mae_images)
    lanes, records = plan(args, out, image_dir)
    durations: Dict[str, float] = {}
    not_run: set = set()  # a rerun whose fine-tunes are all reused neither pre-trains nor converts
    run_lanes(lanes, tag="reproduce", reuse=True, durations=durations, not_run=not_run)
    mae = read_history(str(out / "mae"))
    mae["cached"] = "mae" in not_run or "[mae] reused" in (out / "mae.log").read_text()
    if mae["cached"]:
        durations["mae"] = mae["seconds"]
    records = finetune_records(records, lanes, durations)
    replayed = replay_wall(lanes, durations) if all(
        job.name in durations for lane in lanes for job in lane) else None
    report, pools = markdown_report(records, mae, args, time.time() - start,
                                    default_wall(lanes, durations, args, out, image_dir), replayed)
    _, outcome = claims_table(records, args.smoke)
    (out / "results.json").write_text(json.dumps(records, indent=2))
    (out / "claims.json").write_text(json.dumps(outcome, indent=2))
    (out / "results.md").write_text(report + "\n" + (f"\n{pools}\n" if pools else ""))
    plot(records, mae, out, out / "curves.png")
    print("\n" + report + (f"\n\n{pools}" if pools else ""))
    if args.readme:
        update_readme_block(args.readme, args.block, report)
        if pools:
            update_readme_block(args.readme, f"{args.block}-pools", pools)
    print(f"\n[reproduce] done in {time.time() - start:.0f}s; wrote {out}/results.json, "
          "claims.json, results.md, curves.png")
    return records


def main(argv: Sequence[str]) -> int:
    run_reproduce(argv)
    return EXIT_OK


def entry() -> None:
    """``make reproduce``."""
    sys.exit(run_command(main))


if __name__ == "__main__":
    entry()
