"""yacs config keys for HPViT (MODEL.HPVIT.*), for users of detectron2's DefaultTrainer; defined
with the yacs builders in ``hpvit_d2.modeling.build``."""
from .modeling.build import HPVIT_YACS_ARGUMENTS, add_hpvit_config, hpvit_kwargs_from_cfg

__all__ = ["HPVIT_YACS_ARGUMENTS", "add_hpvit_config", "hpvit_kwargs_from_cfg"]
