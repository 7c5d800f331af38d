"""
Train or evaluate a LazyConfig (or yacs YAML) model; the entry of projects/HPViT/train_net.py.

Same flags as detectron2's tools/lazyconfig_train_net.py (`--config-file`, `--eval-only`,
`--resume`, `--num-gpus`, `--num-machines`, `--machine-rank`, `--dist-url`, `KEY=VALUE` overrides),
plus `--strict` (or the config field `train.strict_init_checkpoint=True`). Differences from the
stock tool:
- the init checkpoint is loaded through hpvit_d2 (a plain MAE/DeiT/timm/ViTDet checkpoint is
  converted on the fly) and the load report is printed; `--strict` makes any missing backbone
  weight an error;
- checkpoints are written atomically (SafeCheckpointer), hold the random state and the data
  position so `--resume` continues exactly, and SIGINT/SIGTERM save one before stopping;
- a non-finite loss stops training naming the iteration and the loss terms;
- on the CPU, DistributedDataParallel is created without `device_ids` (detectron2 passes
  `device_ids=[local_rank]`, which DDP rejects for CPU modules), so multi-process GLOO training works.
"""
import itertools
import logging
import os
import sys

import torch
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    default_argument_parser,
    default_setup,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm
from detectron2.utils.events import CommonMetricPrinter, JSONWriter, TensorboardXWriter
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import setup_logger

from ..checkpoint import CheckpointError
from .checkpointer import RNGState, SafeCheckpointer
from .hooks import DDPSyncCheck, SaveOnSignal
from .sampler import ResumableTrainingSampler
from .trainers import FiniteAMPTrainer, FiniteSimpleTrainer
from .weights import load_weights

__all__ = ["argument_parser", "build_ddp", "build_train_loader", "do_test", "do_train", "main",
           "invoke_main"]

logger = logging.getLogger("hpvit_d2")


def argument_parser():
    parser = default_argument_parser(epilog=__doc__)
    parser.add_argument("--strict", action="store_true",
                        help="fail if the init checkpoint misses or mismatches any backbone weight")
    return parser


def build_ddp(model: torch.nn.Module, device: str, **ddp_kwargs) -> torch.nn.Module:
    """Wrap in DistributedDataParallel when there is more than one process, CPU included."""
    if str(device).startswith("cpu"):
        ddp_kwargs["device_ids"] = None
        ddp_kwargs["fp16_compression"] = False
    return create_ddp_model(model, **ddp_kwargs)


def do_test(cfg, model):
    """Run `dataloader.evaluator` on `dataloader.test`; returns the metrics dict (or None)."""
    if "evaluator" not in cfg.dataloader:
        return None
    results = inference_on_dataset(
        model, instantiate(cfg.dataloader.test), instantiate(cfg.dataloader.evaluator)
    )
    if comm.is_main_process():
        print_csv_format(results)
    return results


def build_train_loader(cfg, start_iter: int, seed: int):
    """
    Instantiate `dataloader.train` with a sampler that starts at iteration ``start_iter`` of the
    stream seeded by ``seed`` (unless the config brings its own sampler).
    """
    spec = cfg.dataloader.train
    target = spec._target_
    if isinstance(target, str):
        from detectron2.utils.registry import locate

        target = locate(target)
    kwargs = {k: instantiate(v) for k, v in spec.items() if k != "_target_"}
    if kwargs.get("sampler") is None and "dataset" in kwargs and "total_batch_size" in kwargs:
        per_rank = kwargs["total_batch_size"] // comm.get_world_size()
        kwargs["sampler"] = ResumableTrainingSampler(len(kwargs["dataset"]), seed=seed,
                                                     start_index=start_iter * per_rank)
    elif start_iter:
        logger.warning("dataloader.train has its own sampler: a resumed run restarts its stream")
    return target(**kwargs)


def do_train(args, cfg):
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)

    model = build_ddp(model, cfg.train.device, **cfg.train.ddp)
    use_amp = cfg.train.amp.enabled and torch.cuda.is_available()
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled is set but CUDA is not available: training in fp32")
    # The data loader is attached once the start iteration is known (after --resume).
    trainer = (FiniteAMPTrainer if use_amp else FiniteSimpleTrainer)(model, None, optimizer)
    seed = cfg.train.get("seed", -1)
    rng = RNGState(seed if seed is not None and seed >= 0 else comm.shared_random_seed())
    checkpointer = SafeCheckpointer(model, cfg.train.output_dir, trainer=trainer, rng=rng)
    sync_period = cfg.train.get("ddp_sync_check_period", 0)
    trainer.register_hooks([
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

    if args.resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
        start_iter = trainer.iter + 1  # the checkpoint holds the iteration that just finished
    else:
        report = load_weights(_unwrap(model), cfg.train.init_checkpoint, strict=_strict(args, cfg))
        if report and comm.is_main_process():
            print(report)
        start_iter = 0
    trainer.data_loader = build_train_loader(cfg, start_iter, rng.sampler_seed)
    trainer._data_loader_iter_obj = _start_iterator(trainer.data_loader)
    trainer.train(start_iter, cfg.train.max_iter)


def _start_iterator(loader):
    """
    An iterator over ``loader`` whose first batch is already fetched, with the torch random
    state as it was before: starting a torch DataLoader draws its base seed from the global
    generator, once, which would otherwise shift a resumed run's random numbers by one draw.
    """
    state = torch.get_rng_state()
    iterator = iter(loader)
    first = next(iterator)
    torch.set_rng_state(state)
    return itertools.chain([first], iterator)


def _writers(cfg):
    """detectron2's default writers; `train.metrics_window` (default 20) smooths metrics.json."""
    out = cfg.train.output_dir
    PathManager.mkdirs(out)
    return [
        CommonMetricPrinter(cfg.train.max_iter),
        JSONWriter(os.path.join(out, "metrics.json"), window_size=cfg.train.get("metrics_window", 20)),
        TensorboardXWriter(out),
    ]


def _strict(args, cfg) -> bool:
    """`--strict` on the command line or `train.strict_init_checkpoint=True` in the config."""
    return bool(args.strict or cfg.train.get("strict_init_checkpoint", False))


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    setup_logger(cfg.train.output_dir, distributed_rank=comm.get_rank(), name="hpvit_d2")
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        report = load_weights(model, cfg.train.init_checkpoint, strict=_strict(args, cfg))
        if report and comm.is_main_process():
            print(report)
        model = build_ddp(model, cfg.train.device)
        return do_test(cfg, model)
    return do_train(args, cfg)


def invoke_main(argv=None):
    args = argument_parser().parse_args(argv)
    if args.config_file.endswith((".yaml", ".yml")):
        from .yacs_train import main as yacs_main

        target = yacs_main
    else:
        target = main
    try:
        launch(target, args.num_gpus, num_machines=args.num_machines,
               machine_rank=args.machine_rank, dist_url=args.dist_url, args=(args,))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
