"""Training hooks: per-iteration seeding, periodic checkpoints, save on SIGINT/SIGTERM, DDP
replica check."""
import contextlib
import logging
import os
import random
import signal
import threading

import numpy as np
import torch
from detectron2.engine import HookBase
from detectron2.engine import hooks
from detectron2.utils import comm

from ..data.loader import sample_seed

__all__ = ["DDPSyncCheck", "EvaluationStopped", "FinalOncePeriodicCheckpointer",
           "ReseedEachIteration", "STOP_SIGNALS", "SaveOnSignal", "StopBetweenBatches",
           "ignore_stop_signals", "stop_signals_blocked"]

logger = logging.getLogger("hpvit_d2")

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
    down when it stops (they ignore the SIGTERM multiprocessing sends them at exit). Workers
    started within :func:`stop_signals_blocked` are born with the signals blocked, so that one
    sent while they start (before this function runs) cannot kill them: it is discarded here.
    """
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def stop_signals_blocked():
    """
    SIGINT and SIGTERM blocked in the calling thread while loader workers are forked in the block
    (they inherit the mask until :func:`ignore_stop_signals` unblocks them); a signal that arrives
    meanwhile reaches this process when the block ends.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class EvaluationStopped(BaseException):
    """Raised in an evaluation that a stop signal interrupts (a BaseException, as
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it)."""


class StopBetweenBatches:
    """
    An evaluation data loader (``len`` and iteration, as ``inference_on_dataset`` takes it) that
    raises :class:`EvaluationStopped` before its next batch once ``stop()`` is true, and shuts its
    loader workers down however the iteration ends (they ignore SIGINT/SIGTERM:
    :func:`ignore_stop_signals`, so that a group signal does not kill them under the evaluation).
    """

    def __init__(self, loader, stop):
        self.loader, self.stop = loader, stop
        if isinstance(loader, torch.utils.data.DataLoader) and loader.num_workers > 0:
            loader.worker_init_fn = _also_ignoring_stop_signals(loader.worker_init_fn)

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        with stop_signals_blocked():  # the workers start here
            iterator = iter(self.loader)
        try:
            while not self.stop():
                try:
                    batch = next(iterator)
                except StopIteration:
                    return
                yield batch
            raise EvaluationStopped()
        finally:
            if hasattr(iterator, "_shutdown_workers"):
                iterator._shutdown_workers()


def _also_ignoring_stop_signals(worker_init_fn):
    if worker_init_fn is None or worker_init_fn is ignore_stop_signals:
        return ignore_stop_signals

    def init(worker_id):
        ignore_stop_signals(worker_id)
        worker_init_fn(worker_id)

    return init


class SaveOnSignal(HookBase):
    """
    On SIGINT or SIGTERM, to the process or to its whole group, finish the current iteration,
    save ``model_{iter:07d}.pth`` (main process), and stop with SystemExit(128 + signal). Loader
    workers started with :func:`ignore_stop_signals` outlive a group signal; whoever runs the
    trainer shuts them down when it stops (``do_train`` does). A second signal during that save is
    ignored, so the checkpoint is always whole; SIGKILL cannot be caught (atomic saves cover it).

    An evaluation run through :meth:`evaluation` (with its loader in
    :class:`StopBetweenBatches`, checking :meth:`requested`) stops before its next batch, and at
    once on a second signal; the iteration is then saved the same way. The handlers stay until
    :meth:`restore_handlers` (after the final evaluation, which runs after the hooks' after_train).
    """

    def __init__(self, checkpointer, signals=(signal.SIGINT, signal.SIGTERM)):
        self.checkpointer = checkpointer
        self.signals = tuple(signals)
        self._received = None
        self._previous = {}
        self._evaluating = False

    def _handle(self, signum, frame):
        if self._received is None:
            now = "batch of the evaluation" if self._evaluating else "iteration"
            logger.warning(f"Received {signal.Signals(signum).name}: saving a checkpoint after "
                           f"this {now}, then stopping")
            self._received = signum
        elif self._evaluating:  # a second signal: the evaluation stops now
            raise EvaluationStopped()

    def requested(self) -> bool:
        """True once a stop signal arrived."""
        return self._received is not None

    def before_train(self):
        if threading.current_thread() is not threading.main_thread():
            logger.warning("SaveOnSignal: not in the main thread, signal handlers not installed")
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def after_step(self):
        if self._received is not None:
            self._save_and_exit("")

    def evaluation(self, evaluate):
        """``evaluate()`` (the EvalHook's function), saving and stopping when a signal stops it."""
        self._evaluating, results = True, None
        try:
            results = evaluate()
        except EvaluationStopped:
            pass  # saved below, outside the except block: the evaluation's frames are freed
        finally:
            self._evaluating = False
        if self._received is not None:
            self._save_and_exit("Evaluation stopped: " if results is None else "")
        return results

    def _save_and_exit(self, why: str):
        # After the last iteration (the final evaluation) trainer.iter is max_iter.
        iteration = min(self.trainer.iter, self.trainer.max_iter - 1)
        name = f"model_{iteration:07d}.pth"
        if comm.is_main_process():
            from ..checkpoint.io import checkpoint_fields

            last = self.checkpointer.get_checkpoint_file()
            if last and checkpoint_fields(last, ("iteration",)).get("iteration") == iteration:
                name = os.path.basename(last)  # saved at this iteration already (model_final)
            else:
                self.checkpointer.save(name[:-4], iteration=iteration)
            logger.warning(f"{why}{'s' if why else 'S'}aved {name} at iteration {iteration}; "
                           "continue with --resume")
        comm.synchronize()
        raise SystemExit(128 + self._received)

    def restore_handlers(self):
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
