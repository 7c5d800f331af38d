"""The B configs' mixed-precision path (train.amp.enabled=True, as shipped) runs on the CPU in the
project's own trainer, through autocast bfloat16, so a GPU user's first run is not that path's
first run. detectron2's stock AMPTrainer asserts CUDA."""
import json
import math

import torch
from detectron2.config import instantiate

from hpvit_d2.data.shapes import SHAPE_CLASSES
from hpvit_d2.engine.train_loop import AutocastForward, _build_trainer, do_train
from hpvit_d2.model_zoo import get_config

SIDE = 128  # LSJ's target and crop, and the square pad, instead of 1024


def b_config_on_cpu(tmp_path):
    """mask_rcnn_hpvit_b.py as shipped (AMP on, LSJ, the B trunk's depth, stages, windows and
    global blocks, the heads' layers), on the CPU at SIDE x SIDE, the trunk 64 wide, 16 RoIs per
    image, on the shapes mini splits."""
    cfg = get_config("mask_rcnn_hpvit_b.py", [
        "train.device=cpu", "train.init_checkpoint=", "train.max_iter=1", "train.eval_period=0",
        "train.log_period=1", f"train.output_dir={tmp_path / 'run'}",
        "dataloader.train.dataset.names=hpvit_shapes_train_mini",
        "dataloader.test.dataset.names=hpvit_shapes_val_mini",
        "dataloader.train.total_batch_size=2", "dataloader.train.num_workers=0",
        f"model.roi_heads.num_classes={len(SHAPE_CLASSES)}",
        "model.backbone.bottom_up.embed_dim=64", "model.backbone.bottom_up.num_heads=2",
        f"model.backbone.square_pad={SIDE}",
        # fewer proposals and RoIs (the heads' layers and widths are the config's)
        "model.proposal_generator.pre_nms_topk=[100,100]",
        "model.proposal_generator.post_nms_topk=[16,16]", "model.roi_heads.batch_size_per_image=16",
    ])
    _, resize, crop = cfg.dataloader.train.mapper.augmentations  # flip, LSJ scale, crop
    resize.target_height = resize.target_width = SIDE
    crop.crop_size = (SIDE, SIDE)
    (test_resize,) = cfg.dataloader.test.mapper.augmentations
    test_resize.short_edge_length = test_resize.max_size = SIDE
    assert cfg.train.amp.enabled  # the shipped setting, not turned on here
    return cfg


def test_b_config_trains_on_cpu_under_bf16_autocast(tmp_path):
    cfg = b_config_on_cpu(tmp_path)
    dtypes = []

    def record(module, args, output):
        if isinstance(module, torch.nn.Linear) and isinstance(output, torch.Tensor):
            dtypes.append(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        do_train(cfg)
    finally:
        handle.remove()
    assert torch.bfloat16 in dtypes  # the trunk's and heads' projections ran in bf16
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = [json.loads(line) for line in f if "total_loss" in line]
    assert [m["iteration"] for m in metrics] == [0]
    assert all(math.isfinite(m["total_loss"]) for m in metrics)
    # the weights stay fp32 (autocast casts the ops, not the parameters) and were updated
    weights = torch.load(tmp_path / "run" / "model_final.pth", weights_only=True)["model"]
    assert weights["backbone.bottom_up.blocks.0.attn.qkv.weight"].dtype == torch.float32


def test_amp_off_or_on_cuda_keeps_detectron2s_trainers(tmp_path):
    from detectron2.engine import AMPTrainer, SimpleTrainer

    cfg = b_config_on_cpu(tmp_path)
    model = instantiate(cfg.model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cpu = _build_trainer(cfg, model, [], optimizer)
    assert isinstance(cpu.model, AutocastForward) and cpu.model.module is model
    assert cpu.model.training and cpu.model.dtype == torch.bfloat16
    cfg.train.amp.enabled = False
    assert type(_build_trainer(cfg, model, [], optimizer).model) is type(model)
    if torch.cuda.is_available():  # where a GPU is: detectron2's AMPTrainer, fp16 by default
        cfg.train.amp.enabled, cfg.train.device = True, "cuda"
        assert isinstance(_build_trainer(cfg, model.cuda(), [], optimizer), AMPTrainer)
    assert SimpleTrainer in type(cpu).__mro__
