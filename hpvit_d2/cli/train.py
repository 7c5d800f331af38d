"""
Train or evaluate a LazyConfig (.py) or yacs (.yaml) model: ``projects/HPViT/train_net.py``,
``hpvit-train``.

    hpvit-train --config-file mask_rcnn_hpvit_tiny.py --output output/hpvit_tiny
    hpvit-train --config-file mask_rcnn_hpvit_b.py --num-gpus 8 --output output/hpvit_b
    hpvit-train --config-file mask_rcnn_hpvit_b.py --eval-only --device cpu \\
        train.init_checkpoint=output/hpvit_b/model_final.pth

Flags are those of detectron2's ``tools/lazyconfig_train_net.py`` (``--config-file``, ``--resume``,
``--eval-only``, ``--num-gpus``, ``--num-machines``, ``--machine-rank``, ``--dist-url``,
``KEY=VALUE`` overrides), plus:

  --device D        where to train: the override train.device=D (cpu, cuda)
  --output DIR      where to write: the override train.output_dir=DIR

  --strict          the init checkpoint must provide every pre-trained backbone weight
                    (also ``train.strict_init_checkpoint=True``)
  --allow-partial   load whatever fits, even a checkpoint of another model (reported)
  --dist-timeout S  seconds a process waits for its peers before failing (default 1800)
  --register-coco NAME JSON IMAGE_DIR
                    register a COCO-format dataset (repeatable), e.g. then
                    dataloader.train.dataset.names=NAME dataloader.test.dataset.names=NAME
  --debug           tracebacks instead of one-line errors

Under ``torchrun`` the process joins torchrun's group instead of spawning; after an elastic
restart it resumes from the last checkpoint by itself. Without ``--resume`` (or with nothing to
resume) a run starts from scratch, and an earlier run's files in ``train.output_dir`` move to
``earlier_runs/<time>/`` there; ``--eval-only`` writes under ``train.output_dir/inference/``.
Exit codes: 0 done (or nothing to train: the checkpoint to resume is at ``train.max_iter``),
2 bad input (config, override, impossible value, weights, device, dataset, non-finite loss, an
output directory in use by a live run or not writable), 128 + N stopped by signal N, to the
process or its group, during training or evaluation (a checkpoint was saved).
"""
import argparse
import datetime
import logging
import os
import sys
from typing import Sequence

from .common import (
    EXIT_OK,
    EXIT_USAGE,
    add_debug_flag,
    add_device_flag,
    add_override_flag,
    add_overrides,
    add_register_coco_flag,
    parse_command,
    program_name,
    register_datasets,
    run,
    user_errors,
)

__all__ = ["argument_parser", "detectron2_defaults", "main", "train_worker"]

logger = logging.getLogger("hpvit_d2")


def detectron2_defaults() -> dict:
    """The defaults of detectron2's ``default_argument_parser`` for the flags shared with it,
    written out, not read off it: building the parser (``--help``) imports neither detectron2 nor
    torch. ``--dist-url``'s port is detectron2's per-user one (a test checks they agree)."""
    port = 2**15 + 2**14 + hash(os.getuid() if sys.platform != "win32" else 1) % 2**14
    return {"num_gpus": 1, "num_machines": 1, "machine_rank": 0,
            "dist_url": f"tcp://127.0.0.1:{port}"}


def argument_parser():
    """detectron2's training flags (with its defaults: :func:`detectron2_defaults`), the
    project's, and positional ``KEY=VALUE`` overrides that may come before or after any flag."""
    d2 = detectron2_defaults()
    parser = argparse.ArgumentParser(prog=program_name("hpvit-train"), epilog=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE",
                        help="config path or shipped name (LazyConfig .py or yacs .yaml)")
    parser.add_argument("--resume", action="store_true",
                        help="continue from the last checkpoint of train.output_dir")
    parser.add_argument("--eval-only", action="store_true", help="evaluate, do not train")
    parser.add_argument("--num-gpus", type=int, default=d2["num_gpus"], help="processes per machine")
    parser.add_argument("--num-machines", type=int, default=d2["num_machines"])
    parser.add_argument("--machine-rank", type=int, default=d2["machine_rank"],
                        help="this machine's rank (0 .. num-machines - 1)")
    parser.add_argument("--dist-url", default=d2["dist_url"],
                        help="initialisation URL of the process group (tcp://HOST:PORT); not given "
                             "with --num-machines 1, a free port of this machine (two runs at once "
                             "do not collide), else detectron2's per-user port")
    add_overrides(parser)
    add_device_flag(parser)
    add_override_flag(parser, "--output", "train.output_dir", metavar="DIR",
                      help="checkpoints, logs and metrics (the override train.output_dir=DIR)")
    parser.add_argument("--strict", action="store_true",
                        help="fail if the init checkpoint misses a pre-trained backbone weight")
    parser.add_argument("--allow-partial", action="store_true",
                        help="load whatever fits from the init checkpoint, even another model's")
    parser.add_argument("--dist-timeout", type=float, default=1800, metavar="SECONDS",
                        help="how long a process waits for its peers in a collective (default 1800)")
    add_register_coco_flag(parser)
    add_debug_flag(parser)
    return parser


def _require(args, cfg_strict: bool, eval_only: bool) -> str:
    if args.allow_partial:
        return "nothing"
    if eval_only:
        return "everything"
    return "backbone" if (args.strict or cfg_strict) else "architecture"


def _is_yacs(config_file: str) -> bool:
    return config_file.endswith((".yaml", ".yml"))


# --device and --output for a yacs config: its keys, as detectron2's ``KEY VALUE`` pairs.
_YACS_KEYS = {"device": "MODEL.DEVICE", "output": "OUTPUT_DIR"}


def _yacs_opts(args) -> list:
    opts = [o for o in args.opts if o not in args.flag_overrides]
    for dest, key in _YACS_KEYS.items():
        if getattr(args, dest) is not None:
            opts += [key, getattr(args, dest)]
    return opts


def train_worker(args) -> None:
    """What every training process runs (after detectron2's launch or torchrun set it up)."""
    from detectron2.engine import default_setup
    from detectron2.utils import comm
    from detectron2.utils.logger import setup_logger

    from ..data.datasets import check_num_classes
    from ..engine import do_train, elastic_restart_count, evaluate
    from ..engine.output_dir import EVALUATION_DIR, start_evaluation, start_run
    from ..model_zoo import check_device, get_config, get_config_file

    register_datasets(args)
    resume = args.resume or elastic_restart_count() > 0
    if _is_yacs(args.config_file):
        from ..engine import yacs_train

        cfg = yacs_train.setup(get_config_file(args.config_file), _yacs_opts(args), args)
        require = _require(args, False, args.eval_only)
        if args.eval_only:
            return yacs_train.evaluate(cfg, require=require)
        return yacs_train.train(cfg, resume=resume, require=require)

    cfg = get_config(args.config_file, args.opts)
    check_device(cfg.train.device)
    check_num_classes(cfg)
    moved, written_to = None, cfg.train.output_dir
    if args.eval_only:  # its config.yaml and log.txt go to output_dir/inference, not over the run's
        written_to = os.path.join(cfg.train.output_dir, EVALUATION_DIR)
        if comm.is_main_process():
            start_evaluation(cfg.train.output_dir)
    elif comm.is_main_process():  # before default_setup writes there
        moved = start_run(cfg.train.output_dir, resume)
    comm.synchronize()  # the other ranks write their log.txt.rankN after an earlier run's moved
    from ..engine.logs import plain_config_log

    with plain_config_log():
        default_setup(_with_output_dir(cfg, written_to), args)
    setup_logger(written_to, distributed_rank=comm.get_rank(), name="hpvit_d2")
    if moved:
        logger.warning(moved)
    if resume and not args.resume:
        logger.info(f"torchrun restart {elastic_restart_count()}: resuming from the last "
                    "checkpoint in train.output_dir")
    require = _require(args, cfg.train.get("strict_init_checkpoint", False), args.eval_only)
    if args.eval_only:
        return evaluate(cfg, require=require)
    return do_train(cfg, resume=resume, require=require)


def _with_output_dir(cfg, output_dir: str):
    """``cfg`` with ``train.output_dir`` set to ``output_dir`` (a copy when it differs): where
    detectron2's ``default_setup`` writes config.yaml and log.txt."""
    if output_dir == cfg.train.output_dir:
        return cfg
    import copy

    cfg = copy.deepcopy(cfg)
    cfg.train.output_dir = output_dir
    return cfg


def _worker(args) -> None:
    """train_worker, with user errors as one line (rank 0) and exit code 2 in every process."""
    try:
        train_worker(args)
    except user_errors() as e:
        if args.debug:
            raise
        from detectron2.utils import comm

        if comm.is_main_process():
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USAGE)


def _training_processes(args):
    """(number of training processes, where it comes from), for the batch-size check."""
    from ..engine.distributed import started_by_torchrun
    from ..overrides import ConfigError

    if started_by_torchrun():
        return int(os.environ["WORLD_SIZE"]), " (torchrun's WORLD_SIZE)"
    for flag, value in (("--num-gpus", args.num_gpus), ("--num-machines", args.num_machines)):
        if value < 1:
            raise ConfigError(f"{flag} {value}: must be 1 or more (processes per machine, machines)")
    return (args.num_gpus * args.num_machines,
            f" (--num-gpus {args.num_gpus} x --num-machines {args.num_machines})")


def _dist_url(args) -> str:
    """``--dist-url``; at its per-user default on one machine, ``"auto"`` instead (detectron2's
    launch then takes a free port, so two multi-process runs of one user do not collide). Several
    machines keep the URL every machine computes alike."""
    default = detectron2_defaults()["dist_url"]
    return "auto" if args.num_machines == 1 and args.dist_url == default else args.dist_url


def main(argv: Sequence[str]) -> int:
    args = parse_command(argument_parser(), argv)
    from ..data.datasets import check_num_classes
    from ..engine import launch_job
    from ..engine.config_checks import check_training_values
    from ..engine.distributed import started_by_torchrun
    from ..model_zoo import check_device, get_config, get_config_file

    # Check the config, overrides, values, device and datasets before starting any process.
    try:
        register_datasets(args)
        args.config_file = get_config_file(args.config_file)
        if not _is_yacs(args.config_file):
            cfg = get_config(args.config_file, args.opts)
            check_training_values(cfg, *_training_processes(args))
            check_device(cfg.train.device)
            check_num_classes(cfg)
    except user_errors():
        if os.environ.get("RANK", "0") != "0" and started_by_torchrun():
            return EXIT_USAGE  # torchrun's rank 0 says it, once
        raise
    try:
        launch_job(_worker, (args,), num_gpus=args.num_gpus, num_machines=args.num_machines,
                   machine_rank=args.machine_rank, dist_url=_dist_url(args),
                   timeout=datetime.timedelta(seconds=args.dist_timeout))
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except Exception as e:  # a spawned process failed; its own output says why
        from torch.multiprocessing import ProcessExitedException

        if isinstance(e, ProcessExitedException) and not args.debug:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return e.exit_code if e.exit_code and e.exit_code > 0 else 1
        raise
    return EXIT_OK


def entry() -> None:
    """Console command ``hpvit-train``."""
    sys.exit(run(main))


if __name__ == "__main__":
    entry()
