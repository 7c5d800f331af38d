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
- SIGINT/SIGTERM save a checkpoint before stopping (:class:`~hpvit_d2.engine.hooks.SaveOnSignal`);
- ``train.ddp_sync_check_period`` checks that replicas stay equal
  (:class:`~hpvit_d2.engine.hooks.DDPSyncCheck`);
- on the CPU, DDP is created without ``device_ids`` (detectron2 passes ``[local_rank]``, which
  DDP rejects for CPU modules), so several GLOO processes train on the CPU.
"""
import logging
import os
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

from ..checkpoint import HPViTCheckpointer
from ..data.loader import ResumableTrainLoader
from .hooks import DDPSyncCheck, ReseedEachIteration, SaveOnSignal

__all__ = ["build_ddp", "build_train_loader", "do_test", "do_train", "evaluate"]

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


def do_test(cfg, model):
    """Run ``dataloader.evaluator`` on ``dataloader.test``; the metrics dict, or None without one."""
    if "evaluator" not in cfg.dataloader:
        return None
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_train_loader(cfg, seed: int):
    """
    ``dataloader.train`` as a :class:`ResumableTrainLoader` when it is detectron2's
    ``build_detection_train_loader`` with its default sampler; any other loader is instantiated
    as it is (a warning says a resumed run then does not repeat the data stream).
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
        )
    logger.warning("dataloader.train is not detectron2's build_detection_train_loader with its "
                   "default sampler: a resumed run will not repeat the data stream exactly")
    return instantiate(spec)


def _writers(cfg):
    """detectron2's default writers; ``train.metrics_window`` (default 20) smooths metrics.json."""
    out = cfg.train.output_dir
    os.makedirs(out, exist_ok=True)
    return [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(out, "metrics.json"), window_size=cfg.train.get("metrics_window", 20)),
        TensorboardXWriter(out),
    ]


def _train_seed(cfg) -> int:
    seed = cfg.train.get("seed", -1)
    return int(seed) if seed is not None and seed >= 0 else comm.shared_random_seed()


def do_train(cfg, resume: bool = False, require: str = "architecture") -> None:
    """
    Train ``cfg`` from ``train.init_checkpoint`` (or, with ``resume`` and a checkpoint in
    ``train.output_dir``, from that checkpoint, exactly where it stopped).

    Args:
        require (str): what the init checkpoint must fill (HPViTCheckpointer's ``require``).
    """
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    seed = _train_seed(cfg)
    loader = build_train_loader(cfg, seed)

    model = build_ddp(model, cfg.train.device, **cfg.train.ddp)
    use_amp = cfg.train.amp.enabled and torch.cuda.is_available()
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled is set but CUDA is not available: training in fp32")
    if use_amp:
        precision = getattr(torch, cfg.train.amp.get("precision", "float16"))
        trainer = AMPTrainer(model, loader, optimizer, precision=precision)
    else:
        trainer = SimpleTrainer(model, loader, optimizer)
    checkpointables = {"trainer": trainer}
    if isinstance(loader, ResumableTrainLoader):
        checkpointables["data"] = loader
    checkpointer = HPViTCheckpointer(model, cfg.train.output_dir, require=require,
                                     **checkpointables)
    sync_period = cfg.train.get("ddp_sync_check_period", 0)
    trainer.register_hooks([
        ReseedEachIteration(seed),
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        SaveOnSignal(checkpointer),
        DDPSyncCheck(model, sync_period) if sync_period else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(_writers(cfg), period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])
    checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=resume)
    start_iter = trainer.iter + 1 if resume and checkpointer.has_checkpoint() else 0
    trainer.train(start_iter, cfg.train.max_iter)


def evaluate(cfg, weights: Optional[str] = None, require: str = "everything"):
    """Build the model, load ``weights`` (default ``train.init_checkpoint``), run ``do_test``."""
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    HPViTCheckpointer(model, require=require).load(
        cfg.train.init_checkpoint if weights is None else weights)
    model = build_ddp(model, cfg.train.device)
    return do_test(cfg, model)
