"""
The lab's one harness for a multi-seed study of any task of ``hpvit_lab.tasks.TASKS``:

    python -m hpvit_lab.study detection           # make reproduce: HPViT/MAE, HPViT/scratch,
                                                  #   ViTDet/MAE, 5 seeds, the two primary claims
    python -m hpvit_lab.study detection --full    # make reproduce-full: + ViTDet/scratch, MAE's
                                                  #   gain for each and the interaction
    python -m hpvit_lab.study semseg              # make demo-semseg: UperNet, mIoU of the shapes
    python -m hpvit_lab.study classify            # make demo-classify: timm, top-1
    python -m hpvit_lab.study TASK --seeds 0      # a quick look: the numbers, no verdict
    python -m hpvit_lab.study TASK --readme       # also the task's docs block (TASK-study)

Claims (``hpvit_lab.tasks``): "supported" when the Holm-corrected one-sided paired t test
rejects at 0.05 (Holm within a claim family: the primary claims, and the secondary ones of
``--full``), "contradicted" when the one-sided 95% upper bound is below 0, "inconclusive"
otherwise, and no verdict below 5 seeds. Writes ``results.json`` (one record per run: arm, model,
init, seed, test_dataset, weights, the metrics; detection also backbone, pool, config_file),
``claims.json`` (the statistics, the evaluation noise, params and FLOPs) and ``results.md`` to
``--output-dir``. A run whose directory holds a finished run of the same command is reused.

What it does: the runs
(seed x arm, each a subprocess of the project's own commands in one of two lanes of one thread),
the reused runs, the records, the claims statistics (``hpvit_lab.claims``), the evaluation noise
(``hpvit_lab.eval_noise``) and the report written into the docs. The tuning on val
(``hpvit_lab.tune``) builds its runs with the same functions.

The MAE arms start from the lab's shipped checkpoint (``hpvit_lab.shipped``), checked against its
sha256, converted with the public converter for the detectron2 tasks and read directly by the
classification command (``--pretrained DIR --strict``), as a user would. Verdicts are judged on the
task's held-out test split; nothing is chosen on it.
"""
import argparse
import ast
import datetime
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from hpvit_d2.cli.common import EXIT_OK, run
from .blocks import command_line, update_readme_block
from . import claims as stats
from .runs import (CommandJob, TrainRun, balanced_lanes, cpu_name, run_lanes, timing_text,
                   run_metrics)
from .tasks import TASKS, Claim, Task

__all__ = ["RECIPES_FILE", "Recipe", "build_job", "conversion_jobs", "ensure_splits", "job_cost",
           "parse_args", "read_record", "recipe_for", "run_study"]

RECIPES_FILE = Path(__file__).with_name("recipes.json")
README_FILE = Path(__file__).resolve().parents[3] / "README.md"
Recipe = Dict[str, float]  # lr, layer_decay, drop_path


# ---------------------------------------------------------------------------------------------
# Recipes
# ---------------------------------------------------------------------------------------------


def recipe_for(task: Task, arm: str) -> Tuple[Recipe, str]:
    """(recipe, where it comes from): the tuned recipe of ``arm`` from ``recipes.json``, or the
    first point of the task's tuning grid when the arm was never tuned."""
    try:
        tuned = json.loads(RECIPES_FILE.read_text()).get(task.name, {}).get(arm)
    except (OSError, ValueError):
        tuned = None
    if tuned:
        return {k: tuned[k] for k in ("lr", "layer_decay", "drop_path")}, "tuned on val"
    return dict(task.grid[0]), "untuned (the grid's first point)"


def recipe_args(task: Task, model: str, recipe: Recipe) -> List[str]:
    """The recipe as overrides (detectron2) or flags (timm)."""
    if task.runner == "timm":
        return ["--lr", f"{recipe['lr']:g}", "--layer-decay", f"{recipe['layer_decay']:g}",
                "--drop-path", f"{recipe['drop_path']:g}"]
    trunk = task.models[model].trunk
    return [f"optimizer.lr={recipe['lr']:g}",
            f"optimizer.params.lr_decay_rate={recipe['layer_decay']:g}",
            f"{trunk}.drop_path_rate={recipe['drop_path']:g}"]


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------


def _split_names(task: Task, smoke: bool) -> Dict[str, str]:
    return task.smoke_splits if smoke else task.splits


def init_path(out: Path, task: Task, model: str, sums: Dict[str, str]) -> Path:
    """The converted MAE of ``model`` (named by the checkpoint's sha256, so a changed
    checkpoint is converted again and no finished run is reused for it)."""
    return out / f"init_{Path(task.models[model].config).stem}_{sums['model.safetensors'][:12]}.pth"


def conversion_jobs(task: Task, models: Sequence[str], checkpoint: Path, out: Path,
                    sums: Dict[str, str]) -> List[CommandJob]:
    """The public converter, once per model that starts from the MAE (detectron2 tasks)."""
    from .shipped import conversion_job

    if task.runner != "detectron2":
        return []
    return [conversion_job(checkpoint, task.models[m].config, init_path(out, task, m, sums), out,
                           name=f"convert_{m}") for m in models]


def classify_tree(task: Task, smoke: bool) -> str:
    """The shapes ImageFolder of the classification task (generated once)."""
    from hpvit_d2.data.shapes_classification import ensure_shapes_classification

    sizes = {k: int(v) for k, v in _split_names(task, smoke).items()}
    return ensure_shapes_classification(**sizes)


def _timm_size_kwargs() -> List[str]:
    """Width, depth and heads of the tiny configs' trunk."""
    from hpvit_d2.model_zoo import get_config

    trunk = get_config(TASKS["detection"].models["hpvit"].config).model.backbone.bottom_up
    return [f"embed_dim={trunk.embed_dim}", f"depth={trunk.depth}", f"num_heads={trunk.num_heads}"]


def build_job(task: Task, arm: str, seed: int, split: str, recipe: Recipe, run_dir: Path,
              checkpoint: Path, sums: Dict[str, str], init_dir: Path, smoke: bool = False,
              name: str = "", iters: int = 0, datasets: Optional[Tuple[str, str]] = None):
    """
    One run of ``arm`` (``MODEL/INIT``) with ``seed`` and ``recipe``, evaluated on ``split``
    ("val" for tuning, "test" for verdicts), writing to ``run_dir``; ``iters`` and
    ``datasets`` (train, evaluation) replace the task's iterations and splits (detectron2 tasks).
    """
    model, init = arm.split("/")
    name = name or f"{task.models[model].label} {init} s{seed}"
    splits = _split_names(task, smoke)
    if task.runner == "detectron2":
        start = str(init_path(init_dir, task, model, sums)) if init == "mae" else ""
        iters = 2 if smoke else (iters or task.iters)
        train, evaluate = datasets or (splits["train"], splits[split])
        return TrainRun(name, task.models[model].config, run_dir, iters, [
            *recipe_args(task, model, recipe), f"train.init_checkpoint={start}",
            f"train.seed={seed}", f"dataloader.train.dataset.names={train}",
            f"dataloader.test.dataset.names={evaluate}"],
            needs=(f"convert_{model}",) if init == "mae" else ())
    tree = classify_tree(task, smoke)
    schedule = list(task.schedule)
    if smoke:
        schedule[schedule.index("--epochs") + 1] = "1"
    argv = [sys.executable, "-m", "hpvit_d2.cli.classify", "--data-dir", tree,
            "--model", "hpvit_tiny_patch16_224", "--model-kwargs", *_timm_size_kwargs(),
            *task.models[model].timm_kwargs, "--img-size", splits["image_size"],
            "--seed", str(seed), *schedule, *recipe_args(task, model, recipe),
            "--output", str(run_dir)]
    if split == "test":
        argv.append("--test")
    if init == "mae":
        argv += ["--pretrained", str(checkpoint), "--strict"]
    epochs = int(schedule[schedule.index("--epochs") + 1])
    return CommandJob(name, argv, run_dir.parent / f"{run_dir.name}.log",
                      cost=task.seconds_per_unit[model] * epochs,
                      outputs=(run_dir / "summary.json",), is_run=True)


def ensure_splits(*names: str) -> None:
    """Generate the shapes splits (and label maps) here, once, not in every training process."""
    from hpvit_d2.data.shapes import ensure_shapes_split
    from hpvit_d2.data.shapes_semseg import SHAPES_SEM_SEG_SPLITS, ensure_shapes_sem_seg_split

    for name in names:
        if name in SHAPES_SEM_SEG_SPLITS:
            ensure_shapes_sem_seg_split(name)
        else:
            ensure_shapes_split(name)


def job_cost(task: Task, job) -> float:
    """Rough single-thread seconds (lane balancing only)."""
    if isinstance(job, TrainRun):
        model = next(m for m, spec in task.models.items() if spec.config == job.config)
        return job.iters * task.seconds_per_unit[model] + 120
    return job.cost


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


def _semseg_record(job: TrainRun, split_name: str) -> Dict:
    """mIoU over the four shape classes and the collapse flag, from the run's predictions."""
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from .eval_noise import miou, semseg_confusions

    import numpy as np

    dicts = DatasetCatalog.get(split_name)
    classes = MetadataCatalog.get(split_name).stuff_classes
    confusions = semseg_confusions(str(job.output_dir / "inference" / "sem_seg_predictions.json"),
                                   {d["file_name"]: d["sem_seg_file_name"] for d in dicts},
                                   len(classes))
    total = sum(confusions.values())
    shapes = list(range(1, len(classes)))
    return {"mIoU": miou(total, shapes), "collapsed": bool(total[:, 1:].sum() == 0),
            "predicted_shape_pixels": int(total[:, 1:].sum())}


def read_record(task: Task, job, split_name: str) -> Dict:
    """The metrics of a finished run (its final evaluation)."""
    if task.runner == "timm":
        summary = json.loads((Path(job.argv[job.argv.index("--output") + 1]) / "summary.json")
                             .read_text())
        out = {"val_top1": summary["last"]["top1"]}
        if "test" in summary:
            out.update(top1=summary["test"]["top1"], test_images=summary["test"]["num_images"])
        else:
            out["top1"] = summary["last"]["top1"]
        return out
    if task.name == "semseg":
        out = run_metrics(job, ("sem_seg/mIoU",), prefixes=("sem_seg/",))
        out.update(_semseg_record(job, split_name))
        return out
    return run_metrics(job, ("bbox/AP", "segm/AP"))


def _run_dir(out: Path, arm: str, seed: int) -> Path:
    return out / f"{arm.replace('/', '_')}_seed{seed}"


def _weights(task: Task, run_dir: Path) -> str:
    return str(run_dir / ("last.pth" if task.runner == "timm" else "model_final.pth"))


# ---------------------------------------------------------------------------------------------
# Statistics and tables
# ---------------------------------------------------------------------------------------------


def _by_seed(records: Sequence[Dict], arm: str, key: str) -> Dict[int, float]:
    return {r["seed"]: r[key] for r in records if r["arm"] == arm and r.get(key) is not None}


def claim_differences(claim: Claim, records: Sequence[Dict], key: str) -> Dict[int, float]:
    """seed -> the claim's paired difference on ``key``, for the seeds every arm it needs has."""
    values = [_by_seed(records, arm, key) for arm in claim.arms()]
    seeds = sorted(set.intersection(*(set(v) for v in values)))
    diffs = {s: values[0][s] - values[1][s] for s in seeds}
    if claim.minus:
        diffs = {s: d - (values[2][s] - values[3][s]) for s, d in diffs.items()}
    return diffs


def judge_claims(task: Task, records: Sequence[Dict], smoke: bool) -> Dict[str, Dict]:
    """Every claim whose arms ran, judged on the task's metric; Holm within each family."""
    out: Dict[str, Dict] = {}
    ran = {r["arm"] for r in records}
    for family in dict.fromkeys(c.family for c in task.claims):
        claims = [c for c in task.claims if c.family == family and set(c.arms()) <= ran]
        diffs = {c.name: claim_differences(c, records, task.metric) for c in claims}
        judged = stats.judge({n: list(d.values()) for n, d in diffs.items()}, smoke=smoke)
        for claim in claims:
            result = judged[claim.name]
            result.update(text=claim.text, family=family, metric=task.metric,
                          seeds=list(diffs[claim.name]), better=claim.better, worse=claim.worse,
                          minus=claim.minus, goal=claim.goal)
            if claim.goal is not None and "mean" in result:
                result["goal_met"] = bool(result["verdict"] == "supported"
                                          and result["mean"] >= claim.goal)
            out[claim.name] = result
    return out


def _mean_sd(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def arms_table(task: Task, records: Sequence[Dict], arms: Sequence[str], costs: Dict,
               noise: Dict) -> str:
    """One row per arm: seeds, the metric's mean ± SD over seeds and range, the other columns'
    means, the evaluation noise, params and GFLOPs."""
    head = (["arm", "seeds", f"{task.metric_label} (mean ± SD)", "min to max"]
            + [c[0] for c in task.columns] + [f"eval. noise (bootstrap SE, {task.metric_label})",
                                              "params (M)",
                                              "GFLOPs" if task.runner == "timm" else "backbone GFLOPs"])
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for arm in arms:
        rows = [r for r in records if r["arm"] == arm]
        if not rows:
            continue
        values = [r[task.metric] for r in rows]
        cells = []
        for _, key, fmt in task.columns:
            column = [r.get(key) for r in rows if r.get(key) is not None]
            if not column:
                cells.append("n/a")
            elif isinstance(column[0], bool):
                cells.append(f"{sum(column)} of {len(column)}")
            else:
                cells.append(fmt.format(statistics.mean(column)))
        model = arm.split("/")[0]
        se = noise.get("arms", {}).get(arm)
        cost = costs.get(model, {})
        lines.append("| " + " | ".join([
            f"{task.models[model].label} / {arm.split('/')[1]}", str(len(rows)), _mean_sd(values),
            f"{min(values):.1f} to {max(values):.1f}", *cells,
            "n/a" if se is None else f"{se:.2f}",
            "n/a" if "params_m" not in cost else f"{cost['params_m']:.2f}",
            "n/a" if "gflops" not in cost else f"{cost['gflops']:.2f}"]) + " |")
    return "\n".join(lines)


def claims_table(task: Task, judged: Dict[str, Dict], noise: Dict) -> str:
    head = ["claim", "family", "goal", *stats.CLAIM_COLUMNS[:-1],
            "eval. noise of a difference (SE)", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * (len(head) - 4) + "---|"]
    for claim in task.claims:
        if claim.name not in judged:
            continue
        outcome = judged[claim.name]
        cells = stats.claim_cells(outcome)
        goal = "" if claim.goal is None else f"> {claim.goal:+.1f}" if claim.goal == 0 else \
            f">= {claim.goal:+.1f} ({'met' if outcome.get('goal_met') else 'not met'})"
        se = noise.get("claims", {}).get(claim.name)
        lines.append("| " + " | ".join([claim.text, claim.family, goal, *cells[:-1],
                                        "n/a" if se is None else f"{se:.2f}", cells[-1]]) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Evaluation noise and model costs
# ---------------------------------------------------------------------------------------------


def evaluation_noise(task: Task, records: Sequence[Dict], split_name: str,
                     reps: int) -> Dict[str, Dict]:
    """Bootstrap SE over test images of each arm's metric (its lowest seed's run) and of each
    claim's paired difference at that seed."""
    from .eval_noise import binomial_se

    seed = min((r["seed"] for r in records), default=None)
    first = {r["arm"]: r for r in records if r["seed"] == seed}
    if task.runner == "timm":
        arms = {arm: binomial_se(r[task.metric], r.get("test_images", 0)) for arm, r in first.items()}
        claims = {c.name: (sum(arms[a] ** 2 for a in c.arms()) ** 0.5) for c in task.claims
                  if set(c.arms()) <= set(arms)}
        return {"seed": seed, "reps": 0, "arms": arms, "claims": claims,
                "how": "binomial SE of top-1 (the bootstrap's limit)"}
    statistic = _statistics(task, first, split_name)
    if not statistic:
        return {}
    import numpy as np

    rng = np.random.default_rng(0)
    n = statistic["n"]
    samples = {arm: [] for arm in first}
    for _ in range(reps):
        positions = rng.integers(0, n, n)
        for arm in first:
            samples[arm].append(statistic["fn"][arm](positions))
    arms = {arm: float(np.std(v, ddof=1)) for arm, v in samples.items()}
    claims = {}
    for claim in task.claims:
        if not set(claim.arms()) <= set(samples):
            continue
        d = np.array(samples[claim.better]) - np.array(samples[claim.worse])
        if claim.minus:
            d -= np.array(samples[claim.minus[0]]) - np.array(samples[claim.minus[1]])
        claims[claim.name] = float(np.std(d, ddof=1))
    return {"seed": seed, "reps": reps, "arms": arms, "claims": claims,
            "how": f"bootstrap over the {n} test images, {reps} resamples, paired"}


def _statistics(task: Task, runs: Dict[str, Dict], split_name: str) -> Dict:
    """n and, per arm, a function of resampled image positions -> the metric."""
    from detectron2.data import DatasetCatalog, MetadataCatalog

    if task.name == "detection":
        from hpvit_d2.data.shapes import ensure_shapes_split
        from .eval_noise import CocoResampler

        gt = ensure_shapes_split(split_name)
        fns = {}
        n = 0
        for arm, r in runs.items():
            results = Path(r["run_dir"]) / "inference" / "coco_instances_results.json"
            if not results.is_file():
                return {}
            resampler = CocoResampler(gt, str(results), "bbox")
            fns[arm], n = resampler.ap, resampler.num_images
        return {"n": n, "fn": fns}
    from .eval_noise import miou, semseg_confusions

    dicts = DatasetCatalog.get(split_name)
    classes = MetadataCatalog.get(split_name).stuff_classes
    labels = {d["file_name"]: d["sem_seg_file_name"] for d in dicts}
    order = list(labels)
    fns = {}
    for arm, r in runs.items():
        matrices = semseg_confusions(str(Path(r["run_dir"]) / "inference" /
                                         "sem_seg_predictions.json"), labels, len(classes))
        stack = [matrices[f] for f in order]
        fns[arm] = (lambda s: lambda pos: miou(sum(s[i] for i in pos), range(1, len(classes))))(stack)
    return {"n": len(order), "fn": fns}


def model_costs(task: Task, models: Sequence[str], smoke: bool) -> Dict[str, Dict]:
    """Params (M) and GFLOPs of one test input (fvcore) of each model."""
    import torch

    out = {}
    for model in models:
        if task.runner == "timm":
            import timm
            from fvcore.nn import FlopCountAnalysis

            from hpvit_d2 import timm_models  # noqa: F401  (registers hpvit_*)

            kwargs = {}
            for item in [*_timm_size_kwargs(), *task.models[model].timm_kwargs]:
                key, _, value = item.partition("=")
                try:
                    kwargs[key] = ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    kwargs[key] = value
            size = int(_split_names(task, smoke)["image_size"])
            net = timm.create_model("hpvit_tiny_patch16_224", num_classes=4, img_size=size,
                                    **kwargs).eval()
            flops = FlopCountAnalysis(net, torch.zeros(1, 3, size, size))
            flops.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            out[model] = {"params_m": sum(p.numel() for p in net.parameters()) / 1e6,
                          "gflops": flops.total() / 1e9}
            continue
        from detectron2.config import instantiate
        from detectron2.data import DatasetCatalog

        from hpvit_lab.flops import count_flops
        from hpvit_d2.model_zoo import get_config

        cfg = get_config(task.models[model].config)
        net = instantiate(cfg.model).eval()
        backbone = net.backbone
        side = 256 if task.name == "detection" else 128
        with torch.no_grad():
            flops = count_flops(backbone, torch.zeros(1, 3, side, side))
        out[model] = {"params_m": sum(p.numel() for p in net.parameters()) / 1e6,
                      "backbone_params_m": sum(p.numel() for p in backbone.parameters()) / 1e6,
                      "gflops": flops.total() / 1e9, "gflops_input": side}
    return out


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def parse_args(task: Task, argv: Sequence[str], prog: str, description: str) -> argparse.Namespace:
    from .shipped import shipped_checkpoint

    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output-dir", default=task.output_dir)
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(stats.MIN_SEEDS)),
                   help=f"paired seeds (a verdict needs at least {stats.MIN_SEEDS}; --seeds 0 is "
                        "a quick look with no verdict)")
    p.add_argument("--full", action="store_true",
                   help=f"every arm ({', '.join(task.full_arms)}) and the secondary claims")
    p.add_argument("--arms", nargs="+", choices=task.full_arms, default=None,
                   help=f"these arms only (default: {' '.join(task.arms)})")
    p.add_argument("--checkpoint", default=str(shipped_checkpoint(task.checkpoint)),
                   help=f"the MAE directory the mae arms start from (default: the shipped "
                        f"{task.checkpoint}; its SHA256SUMS is checked)")
    p.add_argument("--bootstrap-reps", type=int, default=200,
                   help="bootstrap resamples of the test images for the evaluation noise")
    p.add_argument("--readme", nargs="?", const=task.docs, default=None,
                   help=f"write the report into this file's '{task.name}-study' block "
                        f"(default file: {task.docs})")
    p.add_argument("--smoke", action="store_true",
                   help="mini splits, 2 iterations (1 epoch), no verdict (tests)")
    args = p.parse_args(argv)
    args.argv = list(argv)
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds {' '.join(map(str, args.seeds))}: a seed is given twice")
    if args.bootstrap_reps < 2:
        p.error("--bootstrap-reps must be >= 2")
    args.arm_list = list(args.arms or (task.full_arms if args.full else task.arms))
    return args


def _caption(task: Task, args, recipes: Dict[str, Tuple[Recipe, str]], timing: str,
             checkpoint: Path, sums: Dict[str, str], noise: Dict,
             module: str) -> str:
    splits = _split_names(task, args.smoke)
    if task.runner == "timm":
        data = (f"shapes ImageFolder, {int(splits['train_per_class']) * 4} train / "
                f"{int(splits['val_per_class']) * 4} val / {int(splits['test_per_class']) * 4} "
                f"test images of {splits['image_size']} px; `{' '.join(a or repr(a) for a in task.schedule)}`")
    else:
        data = (f"{splits['train']} -> {splits['test']} (held out), "
                f"{2 if args.smoke else task.iters} iterations per run")
    recipe_text = "; ".join(f"{arm}: lr {r['lr']:g}, layer decay {r['layer_decay']:g}, drop path "
                            f"{r['drop_path']:g} ({how})" for arm, (r, how) in recipes.items())
    return (f"`{command_line(module, args.argv)}`, {datetime.date.today().isoformat()}, CPU "
            f"({cpu_name()}, {os.cpu_count()} cores), two lanes of one thread: {data}; "
            f"seeds {', '.join(map(str, sorted(args.seeds)))}; MAE arms from `"
            f"{os.path.relpath(checkpoint)}` (sha256 {sums['model.safetensors'][:12]}...); "
            f"recipes {recipe_text}. Claims: paired one-sided t test, Holm within a family, "
            f"alpha {stats.ALPHA}; evaluation noise: {noise.get('how', 'n/a')}, seed "
            f"{noise.get('seed', 'n/a')}; {timing}.")


def run_study(argv: Sequence[str]) -> List[Dict]:
    """Everything ``python -m hpvit_lab.study TASK ...`` does; returns the records written to
    results.json."""
    from hpvit_d2.overrides import ConfigError
    from .shipped import verify_checkpoint

    if not argv or argv[0] not in TASKS:
        if argv and argv[0] in ("-h", "--help"):
            print(__doc__)
            raise SystemExit(0)
        raise ConfigError(f"python -m hpvit_lab.study TASK: TASK is one of {', '.join(TASKS)}, "
                          f"got {argv[0] if argv else 'nothing'!r}")
    task = TASKS[argv[0]]
    module = f"hpvit_lab.study {task.name}"
    args = parse_args(task, argv[1:], f"python -m {module}", __doc__)
    start = time.time()
    out = Path(args.output_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = Path(args.checkpoint).resolve()
    needs_mae = sorted({a.split("/")[0] for a in args.arm_list if a.endswith("/mae")})
    sums = verify_checkpoint(checkpoint) if needs_mae else {"model.safetensors": "unused"}
    splits = _split_names(task, args.smoke)
    if task.runner == "detectron2":
        ensure_splits(splits["train"], splits["test"])
    recipes = {arm: recipe_for(task, arm) for arm in args.arm_list}
    jobs: List = conversion_jobs(task, needs_mae, checkpoint, out, sums)
    planned = []
    for seed in args.seeds:
        for arm in args.arm_list:
            run_dir = _run_dir(out, arm, seed)
            job = build_job(task, arm, seed, "test", recipes[arm][0], run_dir, checkpoint, sums,
                            out, args.smoke)
            jobs.append(job)
            planned.append((arm, seed, run_dir, job))
    ordered = [j for j in jobs if not j.needs] + [j for j in jobs if j.needs]
    lanes = balanced_lanes(ordered, lambda job: job_cost(task, job))
    durations: Dict[str, float] = {}
    wall = run_lanes(lanes, tag=task.name, reuse=True, durations=durations)
    timing = timing_text(wall, lanes, durations)

    records = []
    for arm, seed, run_dir, job in planned:
        model, init = arm.split("/")
        record = {"task": task.name, "arm": arm, "model": model, "init": init, "seed": seed,
                  "test_dataset": splits["test"] if task.runner == "detectron2" else
                  f"{classify_tree(task, args.smoke)}/test",
                  "weights": _weights(task, run_dir), "run_dir": str(run_dir),
                  "recipe": recipes[arm][0], "recipe_source": recipes[arm][1],
                  "seconds": durations.get(job.name)}
        if task.runner == "detectron2":
            record["config_file"] = f"configs/{task.models[model].config}"
            record["iterations"] = job.iters
        if task.name == "detection":
            from hpvit_d2.model_zoo import get_config

            trunk = get_config(task.models[model].config).model.backbone
            record["backbone"] = model
            record["pool"] = trunk.bottom_up.pool_type if model == "hpvit" else None
        record.update(read_record(task, job, splits.get("test", "")))
        records.append(record)

    judged = judge_claims(task, records, args.smoke)
    noise = evaluation_noise(task, records, splits.get("test", ""), args.bootstrap_reps)
    costs = model_costs(task, sorted({a.split("/")[0] for a in args.arm_list}), args.smoke)
    report = "\n\n".join([arms_table(task, records, args.arm_list, costs, noise),
                          claims_table(task, judged, noise),
                          _caption(task, args, recipes, timing, checkpoint, sums, noise,
                                   module)])
    (out / "results.json").write_text(json.dumps(records, indent=2))
    (out / "claims.json").write_text(json.dumps(
        {"claims": judged, "evaluation_noise": noise, "costs": costs,
         "alpha": stats.ALPHA, "min_seeds": stats.MIN_SEEDS}, indent=2))
    (out / "results.md").write_text(report + "\n")
    print("\n" + report)
    if args.readme:
        update_readme_block(args.readme, f"{task.name}-study{'-full' if args.full else ''}", report)
        _write_verdicts(task, args, judged, noise, module)
    print(f"\n[{task.name}] done in {time.time() - start:.0f}s; wrote {out}/results.json, "
          "claims.json, results.md")
    return records


def _write_verdicts(task: Task, args, judged: Dict[str, Dict], noise: Dict, module: str) -> None:
    """The claims table alone into the top-level README's ``TASK-verdicts`` block, when it has
    one (the default study of a task, not ``--full`` or ``--smoke``): the verdicts, plainly, where
    a new user reads first."""
    readme = README_FILE
    if args.full or args.smoke or f"<!-- begin: {task.name}-verdicts -->" not in readme.read_text():
        return
    caption = (f"`{command_line(module, args.argv)}`, {datetime.date.today().isoformat()}, CPU: "
               f"{len(args.seeds)} paired seeds on the held-out test split, one-sided 95% bounds, "
               f"Holm's correction per family; every arm and the recipes: {task.docs}.")
    update_readme_block(str(readme), f"{task.name}-verdicts",
                        claims_table(task, judged, noise) + "\n\n" + caption)


def main(argv: Sequence[str]) -> int:
    run_study(argv)
    return EXIT_OK


def entry() -> None:
    """``python -m hpvit_lab.study``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
