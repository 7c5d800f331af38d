"""
What every Mask R-CNN config of this project shares; an HPViT config and its ViTDet twin differ
only in `model.backbone`.

- model: detectron2's ViTDet Mask R-CNN heads (2-conv RPN head, 4conv1fc box head, LN in box and
  mask heads), RGB input with ImageNet mean/std; the backbone is set by each config.
- dataloader: COCO 2017 with LSJ at 1024, evaluated with COCOEvaluator (bbox, segm).
- train: ViTDet's 100-epoch recipe on GPUs (device cuda, fp16 AMP): 184375 iterations at batch
  64, initialised from MAE ViT-B (the same file for both backbones; the `?matching_heuristics`
  suffix lets detectron2's stock tool map its keys, our entry converts it itself).
- optimizer / lr_multiplier: AdamW lr 1e-4, wd 0.1 (0 for norms and what the backbone's
  no_weight_decay() names: the position embedding, HPViT's pooling layers), layer-wise lr decay
  0.7 (hpvit_d2.solver.vit_optimizer_params, which places the pooling layers too), steps at 88.9%
  and 96.3%, 250-iteration warm-up.
"""
from fvcore.common.param_scheduler import MultiStepParamScheduler
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler

from hpvit_d2.solver import vit_optimizer_params

from .coco_lsj import dataloader

model = model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model

train = model_zoo.get_config("common/train.py").train
train.device = "cuda"
train.amp.enabled = True
train.ddp.fp16_compression = True
train.max_iter = 184375
train.checkpointer.period = 5000
train.eval_period = 5000
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
)
# Read by the project's entry (projects/HPViT/train_net.py); the stock tool ignores them.
train.strict_init_checkpoint = False  # True: as --strict, every pre-trained backbone weight required
train.ddp_sync_check_period = 0  # K > 0: every K iterations, check that DDP replicas are equal
train.metrics_window = 20  # iterations averaged in metrics.json

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(MultiStepParamScheduler)(
        values=[1.0, 0.1, 0.01],
        milestones=[163889, 177546],
        num_updates=train.max_iter,
    ),
    warmup_length=250 / train.max_iter,
    warmup_factor=0.001,
)

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.params = L(vit_optimizer_params)(
    base_lr="${..lr}",
    lr_decay_rate=0.7,
    weight_decay_norm=0.0,
)
