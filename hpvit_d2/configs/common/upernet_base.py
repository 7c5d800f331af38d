"""
What every UperNet semantic segmentation config of this project shares; an HPViT config and its
plain-ViT twin differ only in `model.backbone`. The values are those of the MAE paper's ADE20K
fine-tuning (He et al. 2022, appendix A.4, which follows BEiT's UperNet setting); the dataset
configs (ade20k/common.py, cityscapes/semseg_common.py) set the classes, data and schedule length.

- model: detectron2's SemanticSegmentor, built by hpvit_d2.modeling.semantic_segmentor, which sizes
  the head for whatever `model.backbone` outputs. Head: UperNet (hpvit_d2.modeling.UperNetHead;
  BEiT/MAE: 768 channels, PPM scales 1, 2, 3, 6, SyncBN, dropout 0.1, cross entropy ignoring 255)
  with BEiT/MAE's auxiliary FCN head on the third map (1/16), loss weight 0.4. RGB input with the
  ImageNet mean/std of MAE's pre-training.
- train: GPUs (device cuda, fp16 AMP), initialised from MAE ViT-B (one file for both backbones;
  the `?matching_heuristics` suffix lets detectron2's stock tool map its keys, our entry converts
  it itself).
- optimizer: AdamW, lr 1e-4, betas (0.9, 0.999), weight decay 0.05 (MAE), 0 for norms, biases
  through detectron2's defaults, and what the backbone's no_weight_decay() names (the position
  embedding, HPViT's pooling layers); layer-wise lr
  decay 0.65 (MAE, ViT-B) through hpvit_d2.solver.vit_optimizer_params, which places the pooling
  layers at the depth of the stage they feed.
- lr_multiplier: linear warm-up over 1500 iterations from 1e-6 (BEiT/MAE), then "poly" decay of
  power 1.0 to 0 (mmsegmentation's poly schedule as BEiT/MAE configure it). Both are fractions of
  `train.max_iter`, set by the dataset config.
"""
from detectron2 import model_zoo
from detectron2.config import LazyCall as L
from detectron2.solver import WarmupParamScheduler
from fvcore.common.param_scheduler import PolynomialDecayParamScheduler

from hpvit_d2.modeling import semantic_segmentor
from hpvit_d2.solver import vit_optimizer_params

IGNORE_VALUE = 255
WARMUP_ITERS = 1500

model = L(semantic_segmentor)(
    backbone=None,  # set by each config: HPViT (4 stages) or ViT + simple feature pyramid
    sem_seg_head=dict(
        num_classes=150,
        channels=768,
        pool_scales=(1, 2, 3, 6),
        norm="SyncBN",
        dropout=0.1,
        ignore_value=IGNORE_VALUE,
        loss_weight=1.0,
        aux_in_index=2,
        aux_channels=256,
        aux_loss_weight=0.4,
    ),
    pixel_mean=[123.675, 116.28, 103.53],
    pixel_std=[58.395, 57.12, 57.375],
)

train = model_zoo.get_config("common/train.py").train
train.device = "cuda"
train.amp.enabled = True
train.max_iter = 160000
train.checkpointer.period = 16000
train.eval_period = 16000
train.init_checkpoint = (
    "detectron2://ImageNetPretrained/MAE/mae_pretrain_vit_base.pth?matching_heuristics=True"
)
# Read by the project's entry (projects/HPViT/train_net.py); the stock tool ignores them.
train.strict_init_checkpoint = False  # True: as --strict, every pre-trained backbone weight required
train.ddp_sync_check_period = 0  # K > 0: every K iterations, check that DDP replicas are equal
train.metrics_window = 20  # iterations averaged in metrics.json

optimizer = model_zoo.get_config("common/optim.py").AdamW
optimizer.lr = 1e-4
optimizer.weight_decay = 0.05
optimizer.params = L(vit_optimizer_params)(
    base_lr="${..lr}",
    lr_decay_rate=0.65,
    weight_decay_norm=0.0,
)

lr_multiplier = L(WarmupParamScheduler)(
    scheduler=L(PolynomialDecayParamScheduler)(base_value=1.0, power=1.0),
    warmup_length=WARMUP_ITERS / train.max_iter,
    warmup_factor=1e-6,
)
