"""
Training runs as subprocesses of the project's training entry, in parallel lanes, with one
progress line every few seconds: what ``make demo`` and ``make reproduce`` share.
"""
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

from ..engine.metrics import final_metrics, read_metrics

__all__ = ["TrainRun", "format_table", "run_lanes", "run_metrics", "train_command"]


@dataclass
class TrainRun:
    """One training run: its name in messages, its config and overrides, where it writes."""

    name: str
    config: str
    output_dir: Path
    iters: int
    overrides: List[str] = field(default_factory=list)

    @property
    def log_file(self) -> Path:
        return self.output_dir.parent / f"{self.output_dir.name}.log"


def train_command(run: TrainRun) -> List[str]:
    """``python -m hpvit_d2.cli.train`` for ``run``: evaluation and one checkpoint at the end."""
    from ..model_zoo import get_config_file

    return [
        sys.executable, "-m", "hpvit_d2.cli.train",
        "--config-file", get_config_file(run.config),
        f"train.output_dir={run.output_dir}",
        f"train.max_iter={run.iters}",
        f"train.eval_period={run.iters}",
        f"train.checkpointer.period={run.iters}",
        *run.overrides,
    ]


def _state(run: TrainRun) -> str:
    records = read_metrics(run.output_dir / "metrics.json")
    record = records[-1] if records else {}
    done = min(record.get("iteration", -1) + 1, run.iters)
    if "bbox/AP" in record:
        state = f" evaluated: box AP {record['bbox/AP']:.1f}, mask AP {record.get('segm/AP', 0):.1f}"
    elif "total_loss" in record:
        state = f" loss {record['total_loss']:.3f}"
    else:
        state = ""
    return f"{run.name} {done}/{run.iters}{state}"


def run_lanes(lanes: Sequence[Sequence[TrainRun]], tag: str = "demo", poll_seconds: float = 15.0,
              threads: int = 0) -> float:
    """
    Run the lanes side by side, the runs of a lane one after the other, each process with
    ``threads`` torch threads (default: the CPUs shared evenly between the lanes). Prints a
    progress line every ``poll_seconds``. Returns the wall time (s).

    Raises:
        RuntimeError: a run failed; names it, its log and its last lines.
    """
    threads = threads or max(1, (os.cpu_count() or 1) // len(lanes))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = [list(lane) for lane in lanes]
    running: List[tuple] = []
    start = last = time.time()

    def launch(lane: List[TrainRun]):
        run = lane.pop(0)
        run.output_dir.mkdir(parents=True, exist_ok=True)
        log = open(run.log_file, "w")
        print(f"[{tag}] training {run.name} ({run.iters} iterations, {threads} thread(s)); "
              f"log: {run.log_file}", flush=True)
        proc = subprocess.Popen(train_command(run), stdout=log, stderr=subprocess.STDOUT, env=env)
        running.append((run, proc, log, lane))

    for lane in pending:
        if lane:
            launch(lane)
    while running:
        time.sleep(0.5)
        for item in list(running):
            run, proc, log, lane = item
            if proc.poll() is None:
                continue
            log.close()
            running.remove(item)
            if proc.returncode != 0:
                for other, other_proc, _, _ in running:
                    other_proc.kill()
                tail = "\n".join(run.log_file.read_text().splitlines()[-25:])
                raise RuntimeError(f"training {run.name} failed (exit {proc.returncode}); see "
                                   f"{run.log_file}. Last lines:\n{tail}")
            if lane:
                launch(lane)
        if running and time.time() - last >= poll_seconds:
            line = " | ".join(_state(run) for run, *_ in running)
            print(f"[{tag} {time.time() - start:5.0f}s] {line}", flush=True)
            last = time.time()
    return time.time() - start


def run_metrics(run: TrainRun, required: Sequence[str],
                prefixes: Tuple[str, ...] = ("bbox/", "segm/")) -> Dict[str, float]:
    """
    A finished run's final evaluation metrics (keys under ``prefixes``) and ``s_per_iter``, the
    mean time per iteration (None if none was logged), from its metrics.json.

    Raises:
        RuntimeError: a key of ``required`` is missing (the final evaluation did not run).
    """
    path = run.output_dir / "metrics.json"
    out = final_metrics(path, prefixes=prefixes)
    missing = [key for key in required if key not in out]
    if missing:
        raise RuntimeError(f"{path} has no {', '.join(missing)}: the final evaluation of "
                           f"{run.name} did not run; see {run.log_file}")
    times = [rec["time"] for rec in read_metrics(path) if "time" in rec]
    out["s_per_iter"] = statistics.mean(times) if times else None  # None: JSON has no NaN
    return out


def format_table(rows: Sequence[Dict], columns: Sequence[Tuple[str, str, str]]) -> str:
    """A markdown table, one row per dict; ``columns`` are (title, key, format); "n/a" for a
    missing or NaN value."""
    head = "| " + " | ".join(c[0] for c in columns) + " |"
    sep = "|" + "|".join("---" if i == 0 else "---:" for i in range(len(columns))) + "|"
    body = []
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            missing = value is None or (isinstance(value, float) and value != value)
            cells.append("n/a" if missing else fmt.format(value))
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join([head, sep, *body])
