"""detectron2's DefaultTrainer for yacs configs with MODEL.BACKBONE.NAME = build_hpvit_fpn_backbone."""
import os

import torch
from detectron2.config import get_cfg
from detectron2.data import build_detection_test_loader, build_detection_train_loader
from detectron2.engine import DefaultTrainer, default_setup
from detectron2.evaluation import COCOEvaluator
from detectron2.solver.build import maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from .. import modeling  # noqa: F401  (registers build_hpvit_fpn_backbone)
from ..checkpoint import HPViTCheckpointer
from ..config import add_hpvit_config
from ..data.build import get_dataset_dicts
from ..data.mapper import SafeDatasetMapper
from ..solver import vit_optimizer_params

__all__ = ["Trainer", "setup", "train", "evaluate"]


class Trainer(DefaultTrainer):
    """
    DefaultTrainer with COCO evaluation, AdamW + layer-wise lr decay (SOLVER.OPTIMIZER=ADAMW,
    hpvit_d2.solver), the project's checkpointer, and checked data: datasets loaded and sanitized
    by get_dataset_dicts, images read by SafeDatasetMapper.
    """

    def __init__(self, cfg, require: str = "architecture"):
        self._require = require
        super().__init__(cfg)

    def build_hooks(self):
        # Called by DefaultTrainer.__init__ before the checkpoint hook is made: swap checkpointers.
        old = self.checkpointer
        self.checkpointer = HPViTCheckpointer(old.model, old.save_dir, require=self._require,
                                              **old.checkpointables)
        return super().build_hooks()

    @classmethod
    def build_train_loader(cls, cfg):
        dataset = get_dataset_dicts(
            cfg.DATASETS.TRAIN,
            filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS,
            proposal_files=cfg.DATASETS.PROPOSAL_FILES_TRAIN if cfg.MODEL.LOAD_PROPOSALS else None,
            require_masks=cfg.MODEL.MASK_ON,
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
        params = vit_optimizer_params(
            model,
            base_lr=cfg.SOLVER.BASE_LR,
            lr_decay_rate=cfg.SOLVER.LR_DECAY_RATE,
            weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
        )
        optimizer = torch.optim.AdamW(params, lr=cfg.SOLVER.BASE_LR, betas=tuple(cfg.SOLVER.BETAS),
                                      weight_decay=cfg.SOLVER.WEIGHT_DECAY)
        return maybe_add_gradient_clipping(cfg, optimizer)


def setup(config_file: str, opts, args):
    """A frozen yacs config from ``config_file`` and ``KEY VALUE`` overrides; logging set up."""
    cfg = get_cfg()
    add_hpvit_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(list(opts))
    cfg.freeze()
    from .logs import plain_config_log

    with plain_config_log():
        default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="hpvit_d2")
    return cfg


def train(cfg, resume: bool, require: str = "architecture"):
    trainer = Trainer(cfg, require=require)
    trainer.resume_or_load(resume=resume)
    return trainer.train()


def evaluate(cfg, require: str = "everything"):
    model = Trainer.build_model(cfg)
    HPViTCheckpointer(model, require=require).load(cfg.MODEL.WEIGHTS)
    return Trainer.test(cfg, model)
