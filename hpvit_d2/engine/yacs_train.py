"""detectron2's DefaultTrainer for yacs configs with MODEL.BACKBONE.NAME = build_hpvit_fpn_backbone."""
import logging
import os
from functools import partial

import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import COCOEvaluator
from detectron2.modeling.backbone.vit import get_vit_lr_decay_rate
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping

from .. import modeling  # noqa: F401  (registers build_hpvit_fpn_backbone)
from ..config import add_hpvit_config
from ..data.build import get_dataset_dicts
from ..data.mapper import SafeDatasetMapper
from .weights import load_weights

__all__ = ["Trainer", "setup", "main"]

logger = logging.getLogger("hpvit_d2")


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with COCO evaluation, AdamW + layer-wise lr decay (SOLVER.OPTIMIZER=ADAMW), and
    the project's checked data: datasets loaded and sanitized by get_dataset_dicts, images read by
    SafeDatasetMapper (bad ones converted or rejected naming the file).
    """

    @classmethod
    def build_train_loader(cls, cfg):
        dataset = get_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
        )
        return build_detection_train_loader(cfg, dataset=dataset, mapper=SafeDatasetMapper(cfg, True))

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return build_detection_test_loader(cfg, dataset_name, mapper=SafeDatasetMapper(cfg, False))

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        output_folder = output_folder or os.path.join(cfg.OUTPUT_DIR, "inference")
        return COCOEvaluator(dataset_name, output_dir=output_folder)

    @classmethod
    def build_optimizer(cls, cfg, model):
        if cfg.SOLVER.OPTIMIZER.upper() != "ADAMW":
            return super().build_optimizer(cfg, model)
        params = get_default_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
            overrides={"pos_embed": {"weight_decay": 0.0}},
            lr_factor_func=partial(get_vit_lr_decay_rate, lr_decay_rate=cfg.SOLVER.LR_DECAY_RATE,
                                   num_layers=cfg.MODEL.HPVIT.DEPTH),
        )
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                      weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        return maybe_add_gradient_clipping(cfg, optimizer)


def setup(args):
    cfg = get_cfg()
    add_hpvit_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="hpvit_d2")
    return cfg


def main(args):
    cfg = setup(args)
    if args.eval_only:
        model = Trainer.build_model(cfg)
        report = load_weights(model, cfg.MODEL.WEIGHTS, strict=getattr(args, "strict", False))
        if report:
            print(report)
        return Trainer.test(cfg, model)
    trainer = Trainer(cfg)
    if args.resume and trainer.checkpointer.has_checkpoint():
        trainer.resume_or_load(resume=True)
    else:
        model = trainer.model.module if hasattr(trainer.model, "module") else trainer.model
        report = load_weights(model, cfg.MODEL.WEIGHTS, strict=getattr(args, "strict", False))
        if report:
            print(report)
    return trainer.train()
