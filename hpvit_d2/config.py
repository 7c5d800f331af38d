"""yacs config keys for HPViT (MODEL.HPVIT.*), for users of detectron2's DefaultTrainer."""
from detectron2.config import CfgNode as CN

__all__ = ["add_hpvit_config"]


def add_hpvit_config(cfg: CN) -> CN:
    """Add MODEL.HPVIT.* (defaults: HPViT-B) and SOLVER.{OPTIMIZER, LR_DECAY_RATE, BETAS}."""
    cfg.MODEL.HPVIT = CN()
    c = cfg.MODEL.HPVIT
    c.IMG_SIZE = 1024
    c.PATCH_SIZE = 16
    c.PATCH_STRIDE = 4
    c.EMBED_DIM = 768
    c.DEPTH = 12
    c.NUM_HEADS = 12
    c.MLP_RATIO = 4.0
    c.QKV_BIAS = True
    c.DROP_PATH_RATE = 0.1
    c.NORM_EPS = 1e-6
    c.USE_ABS_POS = True
    c.USE_REL_POS = True
    c.REL_POS_ZERO_INIT = True
    c.WINDOW_SIZE = 14
    c.WINDOW_BLOCK_INDEXES = [0, 1, 2, 3, 4, 5, 6, 8]
    c.STAGE_DEPTHS = [2, 2, 6, 2]
    c.POOL_TYPE = "conv"
    c.PRETRAIN_IMG_SIZE = 224
    c.PRETRAIN_USE_CLS_TOKEN = True
    c.OUT_FEATURES = ["scale2", "scale3", "scale4", "scale5"]
    c.USE_ACT_CHECKPOINT = False
    # AdamW with ViTDet's layer-wise lr decay (hpvit_d2.engine.yacs_train.Trainer reads these).
    cfg.SOLVER.OPTIMIZER = "ADAMW"
    cfg.SOLVER.LR_DECAY_RATE = 0.7
    cfg.SOLVER.BETAS = (0.9, 0.999)
    return cfg
