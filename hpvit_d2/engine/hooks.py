"""Training hooks: per-iteration seeding, periodic checkpoints, save on SIGINT/SIGTERM, DDP
replica check."""
import logging
import random
import signal
import threading

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.engine import hooks
from detectron2.utils import comm

from ..data.loader import sample_seed

__all__ = ["DDPSyncCheck", "FinalOncePeriodicCheckpointer", "ReseedEachIteration", "SaveOnSignal",
           "ignore_stop_signals"]

logger = logging.getLogger("hpvit_d2")


class ReseedEachIteration(HookBase):
    """
    Before every iteration, seed Python's, NumPy's and torch's (CPU and CUDA) generators from
    (seed, iteration, rank). The model's random draws at iteration k (proposal and RoI sampling,
    drop path, dropout) are then the same in a resumed run as in an uninterrupted one, on every
    rank, and for any number of restarts, without checkpointing generator states. The seed is
    kept in the trainer's checkpoint (this hook's state).
    """

    def __init__(self, seed: int):
        self.seed = int(seed)

    def before_step(self):
        step = self.trainer.iter * comm.get_world_size() + comm.get_rank()
        seed = sample_seed(self.seed, step)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def state_dict(self):
        return {"seed": self.seed}

    def load_state_dict(self, state):
        self.seed = int(state["seed"])


class FinalOncePeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """
    detectron2's ``PeriodicCheckpointer`` hook (``model_{iter:07d}.pth`` every ``period``
    iterations, ``max_to_keep``), except that the last iteration is saved once, as
    ``model_final.pth``: detectron2 also saves it as ``model_{max_iter - 1:07d}.pth`` when
    ``period`` divides ``max_iter``, the same weights twice.
    """

    def after_step(self):
        if self.trainer.iter >= self.trainer.max_iter - 1:
            self.checkpointer.save(f"{self.file_prefix}_final", iteration=self.trainer.iter)
        else:
            self.step(self.trainer.iter)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """
    A DataLoader ``worker_init_fn``: the worker ignores SIGINT and SIGTERM. ``timeout``, Slurm's
    ``scancel``, ``kill -TERM -PGID`` and Ctrl-C signal the whole process group; without this the
    workers die first and the training process fails on a dead worker before it can save. The
    training process alone handles the signal (:class:`SaveOnSignal`), and must shut its workers
    down when it stops (they ignore the SIGTERM multiprocessing sends them at exit).
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


class SaveOnSignal(HookBase):
    """
    On SIGINT or SIGTERM, to the process or to its whole group, finish the current iteration,
    save ``model_{iter:07d}.pth`` (main process), and stop with SystemExit(128 + signal). Loader
    workers started with :func:`ignore_stop_signals` outlive a group signal; whoever runs the
    trainer shuts them down when it stops (``do_train`` does). A second signal during that save is
    ignored, so the checkpoint is always whole; SIGKILL cannot be caught (atomic saves cover it).
    """

    def __init__(self, checkpointer, signals=(signal.SIGINT, signal.SIGTERM)):
        self.checkpointer = checkpointer
        self.signals = tuple(signals)
        self._received = None
        self._previous = {}

    def _handle(self, signum, frame):
        if self._received is None:
            logger.warning(f"Received {signal.Signals(signum).name}: saving a checkpoint after "
                           "this iteration, then stopping")
        self._received = signum

    def before_train(self):
        if threading.current_thread() is not threading.main_thread():
            logger.warning("SaveOnSignal: not in the main thread, signal handlers not installed")
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def after_step(self):
        if self._received is None:
            return
        iteration = self.trainer.iter
        if comm.is_main_process():
            self.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
            logger.warning(f"Saved model_{iteration:07d}.pth at iteration {iteration}; "
                           "continue with --resume")
        comm.synchronize()
        raise SystemExit(128 + self._received)

    def after_train(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class DDPSyncCheck(HookBase):
    """Every ``period`` iterations, check that all ranks hold identical parameters (a checksum)."""

    def __init__(self, model: torch.nn.Module, period: int = 1):
        self.model = model
        self.period = period

    def after_step(self):
        if comm.get_world_size() == 1 or (self.trainer.iter + 1) % self.period:
            return
        with torch.no_grad():
            checksum = [float(sum(p.double().sum() for p in self.model.parameters())),
                        float(sum(p.double().abs().sum() for p in self.model.parameters()))]
        all_sums = comm.all_gather(checksum)
        if any(s != all_sums[0] for s in all_sums):
            raise RuntimeError(f"DDP replicas diverged at iteration {self.trainer.iter}: "
                               f"parameter checksums per rank {all_sums}")
        if comm.is_main_process():
            logger.info(f"ddp_sync_check: iteration {self.trainer.iter}: parameters equal on "
                        f"{len(all_sums)} ranks (checksum {all_sums[0][0]:.6f})")
