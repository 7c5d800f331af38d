"""
Training runs (and the steps they wait for) as subprocesses in parallel lanes, with one progress
line every few seconds: what ``make demo``, ``make demo-semseg``, ``make demo-classify`` and
``make reproduce`` share.
"""
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from .blocks import update_readme_block
from hpvit_d2.engine.metrics import final_metrics, read_metrics

from . import lab_env

__all__ = ["CommandJob", "TrainRun", "argv_with", "cpu_name", "balanced_lanes", "format_table", "replay_wall", "run_lanes",
           "run_metrics", "train_command"]


@dataclass
class TrainRun:
    """One training run: its name in messages, its config and overrides, where it writes, and
    the names of the jobs that must have finished before it starts (``needs``)."""

    name: str
    config: str
    output_dir: Path
    iters: int
    overrides: List[str] = field(default_factory=list)
    needs: Tuple[str, ...] = ()

    @property
    def log_file(self) -> Path:
        return self.output_dir.parent / f"{self.output_dir.name}.log"

    def command(self) -> List[str]:
        return train_command(self)

    def prepare(self) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)

    def describe(self, threads: int) -> str:
        return f"training {self.name} ({self.iters} iterations, {threads} thread(s))"

    @property
    def done_file(self) -> Path:
        """Written when the run has finished: its command, thread count and duration."""
        return self.output_dir / "finished_run.json"

    def finished_record(self, threads: int):
        """The record of an earlier run of exactly this command with ``threads`` threads that
        finished and evaluated, or None."""
        try:
            record = json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            return None
        if record.get("argv") != self.command() or record.get("threads") != threads:
            return None
        metrics = read_metrics(self.output_dir / "metrics.json")
        return record if any("bbox/AP" in r or "sem_seg/mIoU" in r for r in metrics) else None


@dataclass
class CommandJob:
    """Any other step of a lane (pre-training, conversion): a command whose output goes to
    ``log_file``; its progress is the log's last line. ``cost``: its rough duration (s), for
    whoever balances lanes. ``outputs``: the files it writes; a step that declares them can be
    left out of a rerun that reuses every run needing it (``run_lanes(reuse=True)``)."""

    name: str
    argv: List[str]
    log_file: Path
    needs: Tuple[str, ...] = ()
    cost: float = 0.0
    outputs: Tuple[Path, ...] = ()
    is_run: bool = False  # a training run (reused like a TrainRun when it finished before)

    def command(self) -> List[str]:
        return list(self.argv)

    @property
    def done_file(self) -> Path:
        """Written when the step has finished: its command and duration."""
        return self.log_file.with_name(self.log_file.stem + ".done.json")

    def finished_record(self):
        """The record of an earlier run of exactly this command that finished and whose
        ``outputs`` (at least one) are all still there, or None."""
        if not self.outputs or not all(Path(path).exists() for path in self.outputs):
            return None
        try:
            record = json.loads(self.done_file.read_text())
        except (OSError, ValueError):
            return None
        return record if record.get("argv") == self.command() else None

    def prepare(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)

    def describe(self, threads: int) -> str:
        shown = ["python", *self.argv[1:]] if self.argv[0] == sys.executable else self.argv
        return f"{self.name} ({threads} thread(s)): {' '.join(shown)}"


Job = Union[TrainRun, CommandJob]


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), or the machine type: every measured block
    says which processor it comes from."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def argv_with(argv: Sequence[str], flag: str, value) -> List[str]:
    """``argv`` as typed, with ``flag value`` added when it was left at its default: a README
    caption names every flag of the command that measured it."""
    given = any(a == flag or a.startswith(flag + "=") for a in argv)
    return list(argv) if given else [*argv, flag, str(value)]


def train_command(run: TrainRun) -> List[str]:
    """``python -m hpvit_d2.cli.train`` for ``run``: evaluation and one checkpoint at the end."""
    from hpvit_d2.model_zoo import get_config_file

    return [
        sys.executable, "-m", "hpvit_d2.cli.train",
        "--config-file", get_config_file(run.config),
        f"train.output_dir={run.output_dir}",
        f"train.max_iter={run.iters}",
        f"train.eval_period={run.iters}",
        f"train.checkpointer.period={run.iters}",
        *run.overrides,
    ]


def _state(job: Job) -> str:
    if isinstance(job, CommandJob):
        try:
            lines = [line for line in job.log_file.read_text().splitlines() if line.strip()]
        except OSError:
            lines = []
        return f"{job.name}: {lines[-1].strip()[:90]}" if lines else job.name
    run = job
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


def run_lanes(lanes: Sequence[Sequence[Job]], tag: str = "demo", poll_seconds: float = 15.0,
              threads: int = 0, reuse: bool = False,
              durations: Optional[Dict[str, float]] = None,
              not_run: Optional[set] = None) -> float:
    """
    Run the lanes side by side, the jobs of a lane one after the other, each process with
    ``threads`` torch threads (default: the CPUs shared evenly between the lanes). A job starts
    once every job named in its ``needs`` has finished; its lane waits until then. Prints a
    progress line every ``poll_seconds``. Returns the wall time (s).

    ``reuse``: a training run whose output directory holds a finished, evaluated run of the same
    command and thread count (a ``CommandJob`` with ``is_run``: the same command, its outputs
    there) is not run again; nor is a step (``CommandJob`` with ``outputs``)
    that only such runs need, directly or through other such steps, when it finished the same
    command before and its outputs are there (a rerun of a finished ``make reproduce`` neither
    pre-trains nor converts). ``durations`` (if given) receives each job's seconds by name (a
    reused run or a step not run: the seconds it took then); ``not_run`` (if given), the names
    of the steps not run.

    Raises:
        ValueError: a job needs a name that no job has.
        RuntimeError: a job failed (names it, its log and its last lines; the others are
            stopped), or the lanes wait for each other (a job needs one that is behind it).
    """
    names = {job.name for lane in lanes for job in lane}
    unknown = sorted({need for lane in lanes for job in lane for need in job.needs} - names)
    if unknown:
        raise ValueError(f"run_lanes: no job is named {', '.join(map(repr, unknown))}")
    threads = threads or max(1, (os.cpu_count() or 1) // len(lanes))
    env = lab_env(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    pending = [list(lane) for lane in lanes]
    running: Dict[int, tuple] = {}  # lane index -> (job, process, log, start)
    finished: set = set()
    durations = {} if durations is None else durations
    unneeded = _steps_only_reused_runs_need([job for lane in lanes for job in lane],
                                            threads) if reuse else set()
    start = last = time.time()

    def launch_ready():
        # Passes over the lanes until one changes nothing: a job reused or not run in a later lane
        # may be what an earlier lane waits for.
        progressed = True
        while progressed:
            progressed = False
            for index, lane in enumerate(pending):
                while lane and index not in running and set(lane[0].needs) <= finished:
                    progressed = True
                    launch_or_leave_out(index, lane.pop(0))

    def launch_or_leave_out(index: int, job: Job):
        # a training run (detectron2's, or a command marked as one, as timm's classifier runs
        # are) that finished the same command is not run again
        earlier = reuse and _finished_run(job, threads)
        if earlier:
            where = job.output_dir if isinstance(job, TrainRun) else job.outputs[0].parent
            print(f"[{tag}] {job.name}: reused ({where} finished the same command "
                  f"in {earlier['seconds'] / 60:.1f} min)", flush=True)
            durations[job.name] = earlier["seconds"]
            finished.add(job.name)
            return
        if job.name in unneeded:
            earlier = job.finished_record()
            print(f"[{tag}] {job.name}: not run (only reused runs need it; it finished the "
                  f"same command in {earlier['seconds']:.0f} s)", flush=True)
            durations[job.name] = earlier["seconds"]
            finished.add(job.name)
            if not_run is not None:
                not_run.add(job.name)
            return
        job.prepare()
        if isinstance(job, CommandJob):
            job.done_file.unlink(missing_ok=True)
        log = open(job.log_file, "w")
        print(f"[{tag}] {job.describe(threads)}; log: {job.log_file}", flush=True)
        proc = subprocess.Popen(job.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        running[index] = (job, proc, log, time.time())

    launch_ready()
    while running or any(pending):
        if not running:
            waiting = [f"{lane[0].name} (needs {', '.join(lane[0].needs)})" for lane in pending if lane]
            raise RuntimeError(f"[{tag}] the lanes wait for each other: {'; '.join(waiting)}")
        time.sleep(0.5)
        for index, (job, proc, log, started) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[index]
            if proc.returncode != 0:
                for _, other_proc, _, _ in running.values():
                    other_proc.kill()
                tail = "\n".join(job.log_file.read_text().splitlines()[-25:])
                raise RuntimeError(f"{'training ' if isinstance(job, TrainRun) else ''}{job.name} failed (exit {proc.returncode}); see "
                                   f"{job.log_file}. Last lines:\n{tail}")
            finished.add(job.name)
            durations[job.name] = time.time() - started
            if isinstance(job, TrainRun):
                job.done_file.write_text(json.dumps({"argv": job.command(), "threads": threads,
                                                     "seconds": durations[job.name]}))
            else:
                job.done_file.write_text(json.dumps({"argv": job.command(),
                                                     "seconds": durations[job.name]}))
        launch_ready()
        if running and time.time() - last >= poll_seconds:
            line = " | ".join(_state(job) for job, *_ in running.values())
            print(f"[{tag} {time.time() - start:5.0f}s] {line}", flush=True)
            last = time.time()
    return time.time() - start


def _finished_run(job: Job, threads: int):
    """The record of a training run (a TrainRun, or a CommandJob marked ``is_run``) that finished
    the same command before, or None (also for any other step)."""
    if isinstance(job, TrainRun):
        return job.finished_record(threads)
    return job.finished_record() if job.is_run else None


def _steps_only_reused_runs_need(jobs: Sequence[Job], threads: int) -> set:
    """Names of the steps (``CommandJob`` with ``outputs``) that finished the same command before
    and that only reused training runs need, directly or through other such steps."""
    reused = {job.name for job in jobs if _finished_run(job, threads)}
    dependents = {job.name: [other.name for other in jobs if job.name in other.needs] for job in jobs}
    unneeded: set = set()
    grew = True
    while grew:
        grew = False
        for job in jobs:
            if (isinstance(job, CommandJob) and job.name not in unneeded and dependents[job.name]
                    and all(name in reused or name in unneeded for name in dependents[job.name])
                    and job.finished_record() is not None):
                unneeded.add(job.name)
                grew = True
    return unneeded


def replay_wall(lanes: Sequence[Sequence[Job]], durations: Dict[str, float]) -> float:
    """The wall time (s) the lanes take when each job lasts ``durations[name]``: each lane runs its
    jobs in order, each job starting once its lane is free and what it needs is done."""
    free = [0.0] * len(lanes)
    finish: Dict[str, float] = {}
    position = [0] * len(lanes)
    while any(position[k] < len(lane) for k, lane in enumerate(lanes)):
        progressed = False
        for k, lane in enumerate(lanes):
            while position[k] < len(lane) and all(n in finish for n in lane[position[k]].needs):
                job = lane[position[k]]
                start = max([free[k], *(finish[n] for n in job.needs)])
                free[k] = finish[job.name] = start + durations[job.name]
                position[k] += 1
                progressed = True
        if not progressed:
            raise ValueError("replay_wall: the lanes wait for each other")
    return max(free, default=0.0)


def timing_text(wall: float, lanes: Sequence[Sequence[Job]], durations: Dict[str, float]) -> str:
    """How long a lab command took, for a caption: its wall time, or, when finished runs were
    reused (the command took less than 90% of its jobs replayed on their measured durations),
    both figures, so a table regenerated from reused runs still says what its runs cost."""
    known = all(job.name in durations for lane in lanes for job in lane)
    replayed = replay_wall(lanes, durations) if known else None
    if replayed is None or wall >= 0.9 * replayed:
        return f"wall time {wall / 60:.1f} min"
    return (f"finished runs reused (this command: {wall / 60:.1f} min); its jobs on their "
            f"measured durations: {replayed / 60:.1f} min")


def balanced_lanes(jobs: Sequence[Job], cost: Callable[[Job], float], num_lanes: int = 2) -> List[List[Job]]:
    """
    ``jobs`` (each after the jobs it needs) spread over ``num_lanes`` lanes: each goes where its
    estimated finish (``cost`` seconds after both its lane is free and what it needs is done) is
    earliest. The order is kept, so no lane waits for a job placed behind its own.
    """
    lanes: List[List[Job]] = [[] for _ in range(num_lanes)]
    free = [0.0] * num_lanes
    finish: Dict[str, float] = {}
    for job in jobs:
        ready = max([finish[need] for need in job.needs], default=0.0)
        ends = [max(free[k], ready) + cost(job) for k in range(num_lanes)]
        k = ends.index(min(ends))
        lanes[k].append(job)
        free[k] = finish[job.name] = ends[k]
    return lanes


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


def publish(report: str, path: Path, readme: Optional[str], block: str) -> None:
    """A lab command's report (its table and caption): printed, written to ``path`` and, with
    ``readme``, into that file's ``block`` (``--readme``)."""
    path.write_text(report + "\n")
    print("\n" + report)
    if readme:
        update_readme_block(readme, block, report)
