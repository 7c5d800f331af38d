"""
Train or evaluate a LazyConfig (or yacs YAML) model; the entry of projects/HPViT/train_net.py.

Same flags as detectron2's tools/lazyconfig_train_net.py (`--config-file`, `--eval-only`,
`--resume`, `--num-gpus`, `--num-machines`, `--machine-rank`, `--dist-url`, `KEY=VALUE` overrides),
plus `--strict`. Differences from the stock tool:
- the init checkpoint is loaded through hpvit_d2 (a plain MAE/DeiT/timm/ViTDet checkpoint is
  converted on the fly) and the load report is printed; `--strict` makes any missing backbone
  weight an error;
- on the CPU, DistributedDataParallel is created without `device_ids` (detectron2 passes
  `device_ids=[local_rank]`, which DDP rejects for CPU modules), so multi-process GLOO training works.
"""
import logging
import sys

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import LazyConfig, instantiate
from detectron2.engine import (
    AMPTrainer,
    SimpleTrainer,
    default_argument_parser,
    default_setup,
    default_writers,
    hooks,
    launch,
)
from detectron2.engine.defaults import create_ddp_model
from detectron2.evaluation import inference_on_dataset, print_csv_format
from detectron2.utils import comm

from .weights import load_weights

__all__ = ["argument_parser", "build_ddp", "do_test", "do_train", "main", "invoke_main"]

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


def do_train(args, cfg):
    model = instantiate(cfg.model)
    model.to(cfg.train.device)
    cfg.optimizer.params.model = model
    optimizer = instantiate(cfg.optimizer)
    train_loader = instantiate(cfg.dataloader.train)

    model = build_ddp(model, cfg.train.device, **cfg.train.ddp)
    use_amp = cfg.train.amp.enabled and torch.cuda.is_available()
    if cfg.train.amp.enabled and not use_amp:
        logger.warning("train.amp.enabled is set but CUDA is not available: training in fp32")
    trainer = (AMPTrainer if use_amp else SimpleTrainer)(model, train_loader, optimizer)
    checkpointer = DetectionCheckpointer(model, cfg.train.output_dir, trainer=trainer)
    trainer.register_hooks([
        hooks.IterationTimer(),
        hooks.LRScheduler(scheduler=instantiate(cfg.lr_multiplier)),
        hooks.PeriodicCheckpointer(checkpointer, **cfg.train.checkpointer)
        if comm.is_main_process() else None,
        hooks.EvalHook(cfg.train.eval_period, lambda: do_test(cfg, model)),
        hooks.PeriodicWriter(default_writers(cfg.train.output_dir, cfg.train.max_iter),
                             period=cfg.train.log_period)
        if comm.is_main_process() else None,
    ])

    if args.resume and checkpointer.has_checkpoint():
        checkpointer.resume_or_load(cfg.train.init_checkpoint, resume=True)
        start_iter = trainer.iter + 1  # the checkpoint holds the iteration that just finished
    else:
        report = load_weights(_unwrap(model), cfg.train.init_checkpoint, strict=args.strict)
        if report and comm.is_main_process():
            print(report)
        start_iter = 0
    trainer.train(start_iter, cfg.train.max_iter)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def main(args):
    cfg = LazyConfig.load(args.config_file)
    cfg = LazyConfig.apply_overrides(cfg, args.opts)
    default_setup(cfg, args)
    if args.eval_only:
        model = instantiate(cfg.model)
        model.to(cfg.train.device)
        report = load_weights(model, cfg.train.init_checkpoint, strict=args.strict)
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
    launch(target, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
           dist_url=args.dist_url, args=(args,))


if __name__ == "__main__":
    invoke_main(sys.argv[1:])
