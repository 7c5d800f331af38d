"""
Values a training config cannot run with, refused before anything is built: one ``ConfigError``
naming the key, its value and what it must be (the commands print it as one ``error:`` line, exit
code 2). Without this check they end in a traceback after the model is built or after the first
iteration (``ZeroDivisionError``, ``Invalid learning rate: nan``, a ``ValueError`` per process),
or train nothing at all (``train.max_iter=-5``).

Checked when present: the schedule and checkpoint periods, the batch size (split over the
training processes: :func:`~hpvit_d2.data.loader.batch_split_problem`), loader workers, the
learning rate and weight decay, and the ViT trunk's geometry (depth, width, heads, patch size;
HPViT's stages: :func:`~hpvit_d2.modeling.hpvit.stage_depths_problem`).
"""
import inspect
import math
import numbers
from typing import Optional

from detectron2.modeling import ViT
from detectron2.utils.registry import locate
from omegaconf import DictConfig, OmegaConf

from ..data.loader import batch_split_problem
from ..modeling.hpvit import HPViT, stage_depths_problem
from ..overrides import ConfigError

__all__ = ["check_training_values"]

_MISSING = object()
# key, smallest value, what it is (None allowed where detectron2 allows it: max_to_keep).
_WHOLE_NUMBERS = (
    ("train.max_iter", 1, "iterations to train"),
    ("train.checkpointer.period", 1, "iterations between checkpoints"),
    ("train.checkpointer.max_to_keep", 1, "periodic checkpoints kept; null keeps all"),
    ("train.log_period", 1, "iterations between log lines"),
    ("train.eval_period", 0, "iterations between evaluations; 0: at the end only"),
    ("dataloader.train.num_workers", 0, "loader processes; 0: in the training process"),
    ("dataloader.test.num_workers", 0, "loader processes; 0: in the training process"),
    ("dataloader.test.batch_size", 1, "images per evaluation batch"),
)
_NUMBERS = (
    ("optimizer.lr", "the learning rate"),
    ("optimizer.weight_decay", "the weight decay"),
)
_TRUNK_WHOLE_NUMBERS = ("depth", "embed_dim", "num_heads", "patch_size")


def _at(cfg, key: str):
    return OmegaConf.select(cfg, key, default=_MISSING) if isinstance(cfg, DictConfig) else _MISSING


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole_number_problem(key: str, value, least: int, what: str) -> Optional[str]:
    if value is _MISSING or (value is None and key.endswith("max_to_keep")):
        return None
    if _is_number(value) and float(value).is_integer() and value >= least:
        return None
    return f"{key}={value}: must be a whole number >= {least} ({what})"


def _trunk_problem(key: str, node: DictConfig) -> Optional[str]:
    """The ViT trunk at ``key`` (HPViT or detectron2's ViT): its arguments with the class's
    defaults for those the config leaves out."""
    target = node.get("_target_")
    cls = locate(target) if isinstance(target, str) else target
    if not (inspect.isclass(cls) and issubclass(cls, ViT)):
        return None
    args = {}
    for klass in (ViT, cls):
        parameters = inspect.signature(klass.__init__).parameters.items()
        args.update({name: p.default for name, p in parameters
                     if p.default is not inspect.Parameter.empty})
    args.update({k: v for k, v in node.items() if k != "_target_"})
    for name in _TRUNK_WHOLE_NUMBERS:
        problem = _whole_number_problem(f"{key}.{name}", args.get(name, _MISSING), 1,
                                        "of the ViT trunk")
        if problem:
            return problem
    if args["embed_dim"] % args["num_heads"]:
        return (f"{key}.embed_dim={args['embed_dim']} does not split into num_heads="
                f"{args['num_heads']} heads: use a width that is a multiple of num_heads")
    if issubclass(cls, HPViT):
        problem = stage_depths_problem(args["stage_depths"], args["depth"])
        if problem:
            return f"{key}.{problem}"
    return None


def _trunks(node, key: str):
    """(key, node) of every LazyCall under ``node`` (the model's backbone and what it wraps)."""
    if isinstance(node, DictConfig):
        if "_target_" in node:
            yield key, node
        for name in node:
            yield from _trunks(node[name], f"{key}.{name}")


def check_training_values(cfg, processes: int = 1, how: str = "") -> None:
    """
    Raise ConfigError for the first value of ``cfg`` training cannot run with (see the module
    docstring); ``processes`` is the number of training processes (``how``: where that number
    comes from, for the message).
    """
    for key, least, what in _WHOLE_NUMBERS:
        problem = _whole_number_problem(key, _at(cfg, key), least, what)
        if problem:
            raise ConfigError(problem)
    batch = _at(cfg, "dataloader.train.total_batch_size")
    if batch is not _MISSING:
        problem = batch_split_problem(batch, processes, how)
        if problem:
            raise ConfigError(problem)
    for key, what in _NUMBERS:
        value = _at(cfg, key)
        if value is not _MISSING and not (_is_number(value) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key}={value}: must be a finite number >= 0 ({what})")
    backbone = _at(cfg, "model.backbone")
    for key, node in _trunks(backbone, "model.backbone") if backbone is not _MISSING else ():
        problem = _trunk_problem(key, node)
        if problem:
            raise ConfigError(problem)
