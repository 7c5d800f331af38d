"""
Training and evaluation of a LazyConfig, as detectron2's ``tools/lazyconfig_train_net.py`` does
it (``SimpleTrainer`` / ``AMPTrainer`` and its hooks), with what that script cannot do:

- weights are read by :class:`~hpvit_d2.checkpoint.HPViTCheckpointer` (safe reading, plain-ViT
  conversion, ``require`` checks, a load report, atomic writes with umask permissions);
- the training data come from :class:`~hpvit_d2.data.loader.ResumableTrainLoader`, whose position
  is checkpointed and whose augmentation randomness is a function of (seed, sample), and the
  model's randomness is a function of (seed, iteration, rank)
  (:class:`~hpvit_d2.engine.hooks.ReseedEachIteration`): a resumed run repeats an uninterrupted
  one, on one process or many;
- SIGINT/SIGTERM, to the process or its whole group, save a checkpoint before stopping, also
  during an evaluation (:class:`~hpvit_d2.engine.hooks.SaveOnSignal`; training and evaluation
  loader workers ignore them);
- one live run per ``train.output_dir``, which a run either resumes or starts from scratch in,
  an earlier run's files set aside (:mod:`~hpvit_d2.engine.output_dir`);
- a diverged run (non-finite loss or weights) leaves ``last_checkpoint`` on its last good
  checkpoint, among its own (:func:`keep_last_good_checkpoint`,
  :class:`~hpvit_d2.engine.run_identity.RunIdentity`);
- the last iteration is saved once, as ``model_final.pth``
  (:class:`~hpvit_d2.engine.hooks.FinalOncePeriodicCheckpointer`);
- ``train.ddp_sync_check_period`` checks that replicas stay equal
  (:class:`~hpvit_d2.engine.hooks.DDPSyncCheck`);
- on the CPU, DDP is created without ``device_ids`` (detectron2 passes ``[local_rank]``, which
  DDP rejects for CPU modules), so several GLOO processes train on the CPU.
"""
import contextlib
import logging
import os
import re
from typing import Optional

import torch
from detectron2.config import instantiate
from detectron2.data import build_detection_train_loader
from detectron2.engine import AMPTrainer, SimpleTrainer, hooks
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.registry import locate

from ..checkpoint import HPViTCheckpointer, NonFiniteWeightsError
from ..checkpoint.io import checkpoint_fields
from ..data.loader import ResumableTrainLoader
from .hooks import (DDPSyncCheck, FinalOncePeriodicCheckpointer, ReseedEachIteration, SaveOnSignal,
                    StopBetweenBatches, ignore_stop_signals, stop_signals_blocked)
from .output_dir import (OutputWriteError, last_checkpoint_file, rewind_metrics,
                         staged_evaluation_outputs, start_run)
from .run_identity import RunIdentity, checkpoints_of

__all__ = ["AutocastForward", "build_ddp", "build_train_loader", "do_test", "do_train", "evaluate",
           "keep_last_good_checkpoint"]

logger = logging.getLogger("hpvit_d2")

# build_detection_train_loader arguments that ResumableTrainLoader takes over.
_LOADER_ARGUMENTS = {"dataset", "mapper", "total_batch_size", "aspect_ratio_grouping",
                     "num_workers", "prefetch_factor", "pin_memory", "persistent_workers",
                     "sampler"}


def build_ddp(model: torch.nn.Module, device: str, **ddp_kwargs) -> torch.nn.Module:
    """DistributedDataParallel when there is more than one process (on the CPU too)."""
    if str(device).startswith("cpu"):
        ddp_kwargs["device_ids"] = None
        ddp_kwargs["fp16_compression"] = False
    return create_ddp_model(model, **ddp_kwargs)


def do_test(cfg, model, stop=lambda: False):
    """
    Run ``dataloader.evaluator`` on ``dataloader.test``; the metrics dict, or None without one.
    The loader's workers ignore SIGINT/SIGTERM (the training process handles them), and the
    evaluation stops before its next batch once ``stop()`` is true
    (:class:`~hpvit_d2.engine.hooks.StopBetweenBatches`). The evaluator's files replace those of
    its ``output_dir`` only once all are written (a full disk: an OutputWriteError, nothing
    truncated left: :func:`~hpvit_d2.engine.output_dir.staged_evaluation_outputs`).
    """
    if "evaluator" not in cfg.dataloader:
        return None
    with staged_evaluation_outputs(cfg.dataloader.evaluator):
        results = inference_on_dataset(
            model, StopBetweenBatches(instantiate(cfg.dataloader.test), stop),
            instantiate(cfg.dataloader.evaluator)
        )
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_train_loader(cfg, seed: int):
    """
    ``dataloader.train`` as a :class:`ResumableTrainLoader` when it is detectron2's
    ``build_detection_train_loader`` with its default sampler (its workers ignore SIGINT/SIGTERM:
    :func:`~hpvit_d2.engine.hooks.ignore_stop_signals`); any other loader is instantiated as it
    is (a warning says a resumed run then does not repeat the data stream).
    """
    spec = cfg.dataloader.train
    target = locate(spec._target_) if isinstance(spec._target_, str) else spec._target_
    extra = set(spec) - _LOADER_ARGUMENTS - {"_target_"}
    if target is build_detection_train_loader and spec.get("sampler") is None and not extra:
        return ResumableTrainLoader(
            instantiate(spec.dataset),
            mapper=instantiate(spec.mapper),
            total_batch_size=spec.total_batch_size,
            seed=seed,
            aspect_ratio_grouping=spec.get("aspect_ratio_grouping", True),
            num_workers=spec.get("num_workers", 0),
            prefetch_factor=spec.get("prefetch_factor"),
            pin_memory=spec.get("pin_memory", False),
            worker_init_fn=ignore_stop_signals,
            starting_workers=stop_signals_blocked,
        )
    logger.warning("dataloader.train is not detectron2's build_detection_train_loader with its "
                   "default sampler: a resumed run will not repeat the data stream exactly")
    return instantiate(spec)


def _writers(cfg, first_iter: int = 0):
    """detectron2's default writers; ``train.metrics_window`` (default 20) smooths metrics.json.
    TensorBoard drops the events of iterations from ``first_iter`` on (a resumed run's)."""
    out = cfg.train.output_dir
    os.makedirs(out, exist_ok=True)
    return [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(out, "metrics.json"), window_size=cfg.train.get("metrics_window", 20)),
        TensorboardXWriter(out, purge_step=first_iter or None),
    ]


def _train_seed(cfg) -> int:
    seed = cfg.train.get("seed", -1)
    return int(seed) if seed is not None and seed >= 0 else comm.shared_random_seed()


class AutocastForward:
    """
    A model whose calls run under ``torch.autocast(device_type, dtype)``; every other attribute is
    the model's (so detectron2's ``SimpleTrainer`` trains it as it is: only the forward and the
    loss are autocast, the backward and the optimizer step are not). The CPU's mixed precision:
    bfloat16 needs no gradient scaler, and detectron2's ``AMPTrainer`` requires CUDA.
    """

    def __init__(self, model: torch.nn.Module, device_type: str, dtype: torch.dtype):
        self.module, self.device_type, self.dtype = model, device_type, dtype

    def __call__(self, *args, **kwargs):
        with torch.autocast(self.device_type, dtype=self.dtype):
            return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


def _build_trainer(cfg, model, loader, optimizer) -> SimpleTrainer:
    """
    ``train.amp.enabled``: on CUDA detectron2's ``AMPTrainer`` (``train.amp.precision``, float16
    by default, with its gradient scaler); on the CPU, autocast in bfloat16 (CPU autocast's
    dtype; the config's float16 is for CUDA) through :class:`AutocastForward`. Otherwise fp32.
    """
    if not cfg.train.amp.enabled:
        return SimpleTrainer(model, loader, optimizer)
    if str(cfg.train.device).startswith("cuda"):
        precision = getattr(torch, cfg.train.amp.get("precision", "float16"))
        return AMPTrainer(model, loader, optimizer, precision=precision)
    logger.info("train.amp.enabled on %s: the forward and loss run under autocast bfloat16 "
                "(train.amp.enabled=False trains in float32)", cfg.train.device)
    return SimpleTrainer(AutocastForward(model, "cpu", torch.bfloat16), loader, optimizer)


def do_train(cfg, resume: bool = False, require: str = "architecture") -> None:
    """
    Train ``cfg`` from ``train.init_checkpoint`` (or, with ``resume`` and a checkpoint in
    ``train.output_dir``, from that checkpoint, exactly where it stopped).

    The main process first claims ``train.output_dir`` (one live run per directory, leftover
    temporary files removed) and, unless it resumes a checkpoint there, sets an earlier run's
    files aside (:func:`~hpvit_d2.engine.output_dir.start_run`); a resumed run's metrics.json
    loses the lines of the iterations it runs again. A non-finite loss or non-finite weights stop
    training with a FloatingPointError, and ``last_checkpoint`` then names the last checkpoint
    this run saved before the divergence (:func:`keep_last_good_checkpoint`).

    Args:
        require (str): what the init checkpoint must fill (HPViTCheckpointer's ``require``).
    """
    out = cfg.train.output_dir
    resume_from = last_checkpoint_file(out) if resume else None
    first_iter = 0
    if resume_from:
        first_iter = checkpoint_fields(resume_from, ("iteration",)).get("iteration", -1) + 1
        if first_iter >= cfg.train.max_iter:
            logger.warning(f"nothing to train: {resume_from} is at iteration {first_iter - 1}, at "
                           f"or past train.max_iter={cfg.train.max_iter} (the last iteration is "
                           f"{cfg.train.max_iter - 1}): raise train.max_iter to train on, or "
                           f"evaluate it with --eval-only train.init_checkpoint={resume_from}")
            return
    if comm.is_main_process():
        moved = start_run(out, resume)
        if moved:
            logger.warning(moved)
        if resume_from:
            rewind_metrics(out, first_iter - 1)
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    seed = _train_seed(cfg)
    loader = build_train_loader(cfg, seed)

    model = build_ddp(model, cfg.train.device, **cfg.train.ddp)
    trainer = _build_trainer(cfg, model, loader, optimizer)
    run = RunIdentity()
    checkpointables = {"trainer": trainer, "run": run}
    if isinstance(loader, ResumableTrainLoader):
        checkpointables["data"] = loader
    checkpointer = HPViTCheckpointer(model, out, require=require, **checkpointables)
    sync_period = cfg.train.get("ddp_sync_check_period", 0)
    stop = SaveOnSignal(checkpointer)
    trainer.register_hooks([
        ReseedEachIteration(seed),
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        FinalOncePeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        stop,
        DDPSyncCheck(model, sync_period) if sync_period else None,
        hooks.EvalHook(cfg.train.eval_period,
                       lambda: stop.evaluation(lambda: do_test(cfg, model, stop.requested))),
        hooks.PeriodicWriter(_writers(cfg, first_iter), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    resumed = resume and checkpointer.has_checkpoint()
    if resumed:
        run.resumed_from = checkpointer.get_checkpoint_file()
    start_iter = trainer.iter + 1 if resumed else 0
    try:
        trainer.train(start_iter, cfg.train.max_iter)
    except FloatingPointError as e:
        if not comm.is_main_process():
            raise
        # A non-finite loss or forward at iteration k comes from the weights of step k - 1.
        first_bad = trainer.iter if isinstance(e, NonFiniteWeightsError) else trainer.iter - 1
        raise FloatingPointError(
            f"training diverged at iteration {trainer.iter}: {_short_divergence(e)}; "
            f"{keep_last_good_checkpoint(checkpointer, first_bad, run)}") from None
    except OutputWriteError as e:  # the evaluation's results; the checkpoints are saved
        last = checkpointer.get_checkpoint_file()
        if not last:
            raise
        raise OutputWriteError(f"{e}; the checkpoint is saved: --eval-only "
                               f"train.init_checkpoint={last} evaluates it") from None
    finally:
        stop.restore_handlers()
        _shut_down_loader(trainer)


def _short_divergence(error: FloatingPointError) -> str:
    """detectron2's divergence messages in a few words (the loss check names its terms)."""
    text = " ".join(str(error).split())
    if text.startswith("Loss became infinite or NaN"):
        terms = re.findall(r"'(\w+)': (?:nan|-?inf)", text) or ["total loss"]
        return f"{', '.join(terms)} NaN or Inf, before the optimizer step"
    return text.replace(" Training has diverged.", "").rstrip(".")


def keep_last_good_checkpoint(checkpointer: HPViTCheckpointer, first_bad: int,
                              run: RunIdentity) -> str:
    """
    Tag as ``last_checkpoint`` the newest ``model_{iter:07d}.pth`` of ``run`` (saved by it, or
    resumed from) saved before iteration ``first_bad``, the first whose weights diverged (a
    non-finite loss at iteration k means the weights of step k - 1 did; non-finite weights after
    step k, step k), or remove the tag when there is none, so that ``--resume`` never continues
    from diverged weights nor from another run's. Returns one sentence saying so.
    """
    saved = checkpoints_of(run, checkpointer.get_all_checkpoint_files())
    good = [i for i in saved if i < first_bad]
    if good:
        checkpointer.tag_last_checkpoint(saved[max(good)])
        kept = f"last_checkpoint names {saved[max(good)]}, the last one saved before it"
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(checkpointer.save_dir, "last_checkpoint"))
        kept = "no checkpoint of this run was saved before it: last_checkpoint removed"
    dropped = sorted(name for i, name in saved.items() if i >= first_bad)
    return kept + (f" ({', '.join(dropped)} not used: diverged weights)" if dropped else "")


def _shut_down_loader(trainer) -> None:
    """
    Stop the trainer's data loader iterator and join its workers, however training ended: they
    ignore SIGTERM (``ignore_stop_signals``), so multiprocessing's exit handler cannot end them.
    """
    iterator = getattr(trainer, "_data_loader_iter_obj", None)
    trainer._data_loader_iter_obj = None
    if hasattr(iterator, "close"):  # ResumableTrainLoader's generator: closing ends its DataLoader
        iterator.close()
    elif hasattr(iterator, "_shutdown_workers"):  # torch's multiprocessing iterator
        iterator._shutdown_workers()


def evaluate(cfg, weights: Optional[str] = None, require: str = "everything"):
    """Build the model, load ``weights`` (default ``train.init_checkpoint``), run ``do_test``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    HPViTCheckpointer(model, require=require).load(
        cfg.train.init_checkpoint if weights is None else weights)
    model = build_ddp(model, cfg.train.device)
    return do_test(cfg, model)
