"""
One training run per output directory, and a clean start in it: a run either resumes the run whose
files the directory holds, or starts from scratch with that run's files set aside, never both.

:func:`claim_output_dir` takes an exclusive ``fcntl.flock`` on ``OUTPUT_DIR/.hpvit-train.lock``
and holds it for the life of the process. The kernel releases it when the process ends, however
it ends (SIGKILL included), so a lock left by a dead run never blocks, while a second run started
in the directory of a live one is refused at once, before it writes anything there. Processes
forked afterwards (data-loader workers) do not hold it. Once the lock is held, the ``.tmp-*``
files of a save that was killed half-way (and the ``inference/.tmp-*`` directories of a killed
evaluation) are removed: no live run can be writing them.

:func:`set_aside_earlier_run`: a run that starts from scratch (no ``--resume``, or nothing to
resume) in a directory holding an earlier run's checkpoints, metrics or evaluation moves that
run's files (``RUN_FILES``) to ``earlier_runs/<time>/`` there, untouched: the new run's progress,
metrics, curves and checkpoints are its own, and nothing of the earlier run is deleted.
:func:`rewind_metrics`: a resumed run drops the ``metrics.json`` lines of the iterations after
its checkpoint (written by the stopped process, and run again).
:func:`staged_evaluation_outputs`: an evaluator writes into a temporary directory whose files
replace those of its ``output_dir`` once it is done, so a full disk leaves no truncated result
there, and is one :class:`OutputWriteError`.
"""
import contextlib
import fcntl
import fnmatch
import json
import logging
import os
import shutil
import tempfile
import time
from typing import Dict, List, Optional

from ..overrides import ConfigError

__all__ = ["EARLIER_RUNS", "EVALUATION_DIR", "LOCK_NAME", "OutputDirInUseError", "OutputWriteError",
           "RUN_FILES", "claim_output_dir", "last_checkpoint_file", "rewind_metrics",
           "set_aside_earlier_run", "staged_evaluation_outputs", "start_evaluation", "start_run"]

logger = logging.getLogger("hpvit_d2")

LOCK_NAME = ".hpvit-train.lock"
EARLIER_RUNS = "earlier_runs"
EVALUATION_DIR = "inference"
"""Where ``--eval-only`` writes in ``train.output_dir`` (its config.yaml and log.txt, and the
evaluator's files in the shipped configs), never over the training run's own."""
RUN_FILES = ("model_*.pth", "last_checkpoint", "metrics.json", "events.out.tfevents.*", "log.txt*",
             "config.yaml", "inference")
"""What a training run writes in its output directory (detectron2's names; fnmatch patterns)."""
_EVIDENCE = ("model_*.pth", "last_checkpoint", "inference")
_held: Dict[str, int] = {}  # real path of the directory -> descriptor of its locked file


class OutputDirInUseError(ConfigError):
    """``train.output_dir`` belongs to a training run that is still alive."""


class OutputWriteError(ConfigError):
    """An output could not be written (full disk, read-only); names the cause and where."""


def _close_in_child() -> None:
    # A forked child shares the lock's open file; closing its descriptor (never LOCK_UN, which
    # would release the parent's lock) leaves the lock to the parent alone.
    for fd in _held.values():
        os.close(fd)
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def claim_output_dir(output_dir: str) -> None:
    """
    Make ``output_dir`` this process's own for as long as it lives (once per process; calling it
    again for the same directory does nothing), then remove leftover ``.tmp-*`` files there.

    Raises:
        OutputDirInUseError: a live process holds the directory (its pid is named, as the
            kernel lists the lock's holder).
        ConfigError: the directory cannot be created or written (read-only, no permission).
    """
    path = os.path.realpath(output_dir)
    if path in _held:
        return
    lock_path = os.path.join(path, LOCK_NAME)
    try:
        os.makedirs(path, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise ConfigError(f"train.output_dir {output_dir} is not writable ({e.strerror}): "
                          "choose another train.output_dir") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _lock_holder(fd) or os.pread(fd, 32, 0).decode(errors="replace").strip() \
            or "unknown"
        os.close(fd)
        raise OutputDirInUseError(
            f"train.output_dir {output_dir} is in use by a running training (pid {holder}): "
            "wait for it to end, stop it, or choose another train.output_dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd
    _remove_leftover_temporary_files(path)


def _lock_holder(fd: int) -> Optional[str]:
    """The pid holding the flock on ``fd``'s file, as the kernel lists it (``/proc/locks``):
    the pid the holder wrote may be another pid namespace's, or stale."""
    stat = os.fstat(fd)
    device = f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}"
    try:
        with open("/proc/locks") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 5 and fields[1] == "FLOCK" and fields[5] == device \
                        and fields[4].isdigit() and int(fields[4]) > 0:
                    return fields[4]
    except OSError:  # no /proc (another OS): the pid the holder wrote
        pass
    return None


def _remove_leftover_temporary_files(path: str) -> None:
    """The ``.tmp-*`` files an interrupted atomic save left (see ``hpvit_d2.checkpoint.io``),
    and the ``.tmp-*`` directories of an interrupted evaluation in ``EVALUATION_DIR``."""
    removed = []
    for name in sorted(os.listdir(path)):
        file = os.path.join(path, name)
        if name.startswith(".tmp-") and os.path.isfile(file):
            os.remove(file)
            removed.append(name)
    evaluation = os.path.join(path, EVALUATION_DIR)
    for name in sorted(os.listdir(evaluation)) if os.path.isdir(evaluation) else []:
        if name.startswith(".tmp-") and os.path.isdir(os.path.join(evaluation, name)):
            shutil.rmtree(os.path.join(evaluation, name), ignore_errors=True)
            removed.append(os.path.join(EVALUATION_DIR, name))
    if removed:
        logger.info(f"Removed {len(removed)} temporary files an interrupted save left in {path}: "
                    + ", ".join(removed[:3]) + (" ..." if len(removed) > 3 else ""))


def last_checkpoint_file(output_dir: str) -> Optional[str]:
    """The checkpoint ``output_dir/last_checkpoint`` names (detectron2's tag), or None."""
    try:
        with open(os.path.join(output_dir, "last_checkpoint")) as f:
            name = f.read().strip()
    except OSError:
        return None
    return os.path.join(output_dir, name) if name else None


def _run_files(path: str) -> List[str]:
    return sorted(name for name in os.listdir(path)
                  if any(fnmatch.fnmatch(name, pattern) for pattern in RUN_FILES))


def _holds_a_run(path: str, names: List[str]) -> bool:
    """Checkpoints, evaluation results or logged iterations: not just a start that failed."""
    def holds_something(name):
        file = os.path.join(path, name)
        return bool(os.listdir(file)) if os.path.isdir(file) else os.path.getsize(file) > 0

    return any(holds_something(name) for name in names
               if name == "metrics.json" or any(fnmatch.fnmatch(name, p) for p in _EVIDENCE))


def set_aside_earlier_run(output_dir: str) -> Optional[str]:
    """
    Move the files of an earlier run in ``output_dir`` (``RUN_FILES``, when they hold a run:
    checkpoints, ``last_checkpoint``, a non-empty ``inference/`` or ``metrics.json``) to
    ``output_dir/earlier_runs/<YYYYmmdd-HHMMSS>/``. Call it holding the directory
    (:func:`claim_output_dir`), before the new run writes there. Returns one line saying what was
    moved where, or None when there was nothing to move.
    """
    path = os.path.realpath(output_dir)
    names = _run_files(path) if os.path.isdir(path) else []
    if not names or not _holds_a_run(path, names):
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    destination, k = os.path.join(output_dir, EARLIER_RUNS, stamp), 1
    while os.path.exists(destination):
        destination, k = os.path.join(output_dir, EARLIER_RUNS, f"{stamp}-{k}"), k + 1
    os.makedirs(destination)
    size = 0
    for name in names:
        source = os.path.join(path, name)
        size += sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(source)
                    for f in files) if os.path.isdir(source) else os.path.getsize(source)
        shutil.move(source, os.path.join(destination, name))
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return (f"train.output_dir {output_dir} held an earlier run ({len(names)} files, "
            f"{size / 2**20:.0f} MB: {shown}): moved to {destination}; this run starts from "
            "scratch (--resume continues the run in a directory instead; delete "
            f"{os.path.join(output_dir, EARLIER_RUNS)} to free its space)")


def rewind_metrics(output_dir: str, iteration: int) -> None:
    """Keep the ``metrics.json`` lines of iterations <= ``iteration`` (atomically rewritten):
    a run resumed from its checkpoint at ``iteration`` logs the later ones again."""
    from ..checkpoint.io import AtomicFile
    from .metrics import read_metrics

    path = os.path.join(output_dir, "metrics.json")
    records = read_metrics(path)
    kept = [r for r in records if r.get("iteration", -1) <= iteration]
    if len(kept) == len(records):
        return
    with AtomicFile(path, "w") as f:
        f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in kept)


def start_run(output_dir: str, resume: bool) -> Optional[str]:
    """
    What the main process does before a training run writes in ``output_dir``: claim it
    (:func:`claim_output_dir`), then, unless the run resumes a checkpoint there (``resume`` and a
    ``last_checkpoint``), set an earlier run's files aside (:func:`set_aside_earlier_run`).
    Returns the line saying what was moved, or None.
    """
    claim_output_dir(output_dir)
    if resume and last_checkpoint_file(output_dir):
        return None
    return set_aside_earlier_run(output_dir)


def start_evaluation(output_dir: str) -> str:
    """
    What the main process of ``--eval-only`` does before writing: claim ``output_dir`` (no
    training may run there meanwhile) and create its ``EVALUATION_DIR``. Returns that directory.

    Raises:
        OutputDirInUseError: a live run holds the directory.
        ConfigError: it cannot be written.
    """
    claim_output_dir(output_dir)
    directory = os.path.join(output_dir, EVALUATION_DIR)
    try:
        os.makedirs(directory, exist_ok=True)
        if not os.access(directory, os.W_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as e:
        raise ConfigError(f"train.output_dir {output_dir} is not writable ({e.strerror}): "
                          "choose another train.output_dir") from None
    return directory


@contextlib.contextmanager
def staged_evaluation_outputs(evaluator_cfg):
    """
    Within the block, ``evaluator_cfg.output_dir`` (a LazyCall's, when it has one) is a new
    temporary ``.tmp-*`` directory inside it; leaving the block cleanly moves what the evaluator
    wrote there onto ``output_dir`` (file by file, ``os.replace``), and the temporary directory
    is removed however the block ends. A write that fails for lack of space or permission is an
    :class:`OutputWriteError`, and nothing of that evaluation is left in ``output_dir``.
    """
    from omegaconf import DictConfig, OmegaConf

    from ..checkpoint.io import os_error_behind

    final = evaluator_cfg.get("output_dir") if isinstance(evaluator_cfg, DictConfig) else None
    if not final:
        yield
        return
    raw = OmegaConf.to_container(evaluator_cfg, resolve=False)["output_dir"]
    staging = None
    try:
        os.makedirs(final, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".tmp-", dir=final)
        evaluator_cfg.output_dir = staging
        yield
        for name in os.listdir(staging):
            target = os.path.join(final, name)
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            os.replace(os.path.join(staging, name), target)
    except (OSError, RuntimeError) as e:  # torch.save's RuntimeError over a failed write
        cause = os_error_behind(e)
        if cause is None:
            raise
        raise OutputWriteError(f"{cause.strerror or cause}: cannot write the evaluation's "
                               f"results to {final} (nothing written there)") from None
    finally:
        evaluator_cfg.output_dir = raw
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
