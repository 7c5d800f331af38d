"""The yacs builder and the LazyConfig build the same HPViT + FPN backbone."""
import torch
from detectron2.config import LazyConfig, get_cfg, instantiate
from detectron2.layers import ShapeSpec

from hpvit_d2.config import add_hpvit_config
from hpvit_d2.modeling import build_hpvit_fpn_backbone


def test_yaml_and_lazyconfig_build_the_same_backbone():
    cfg = get_cfg()
    add_hpvit_config(cfg)
    cfg.merge_from_file("configs/yacs/mask_rcnn_hpvit_b.yaml")
    from_yaml = build_hpvit_fpn_backbone(cfg, ShapeSpec(channels=3)).eval()
    from_lazy = instantiate(LazyConfig.load("configs/mask_rcnn_hpvit_b.py").model.backbone).eval()

    yaml_state, lazy_state = from_yaml.state_dict(), from_lazy.state_dict()
    assert {k: v.shape for k, v in yaml_state.items()} == {k: v.shape for k, v in lazy_state.items()}
    assert from_yaml.output_shape() == from_lazy.output_shape()
    assert [b.window_size for b in from_yaml.bottom_up.blocks] == \
        [b.window_size for b in from_lazy.bottom_up.blocks]
    assert from_yaml.size_divisibility == from_lazy.size_divisibility == 32

    from_yaml.load_state_dict(lazy_state)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = from_yaml(x), from_lazy(x)
    assert list(a) == list(b) == ["p2", "p3", "p4", "p5", "p6"]
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_default_trainer_trains_and_evaluates_the_yaml(tmp_path):
    """detectron2's DefaultTrainer (our subclass) runs the YAML, shrunk, on a tiny COCO dataset."""
    from detectron2.data import DatasetCatalog
    from detectron2.data.datasets import register_coco_instances

    from hpvit_d2.engine.yacs_train import Trainer
    from tiny_coco import write_tiny_coco

    json_path = write_tiny_coco(str(tmp_path / "data"), num_images=4)
    name = f"yacs_tiny_{tmp_path.name}"
    if name not in DatasetCatalog.list():
        register_coco_instances(name, {}, json_path, str(tmp_path / "data" / "images"))
    cfg = get_cfg()
    add_hpvit_config(cfg)
    cfg.merge_from_file("configs/yacs/mask_rcnn_hpvit_b.yaml")
    cfg.merge_from_list([
        "MODEL.DEVICE", "cpu", "MODEL.WEIGHTS", "", "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.HPVIT.IMG_SIZE", 64, "MODEL.HPVIT.EMBED_DIM", 32, "MODEL.HPVIT.DEPTH", 4,
        "MODEL.HPVIT.NUM_HEADS", 2, "MODEL.HPVIT.WINDOW_SIZE", 4,
        "MODEL.HPVIT.WINDOW_BLOCK_INDEXES", [0], "MODEL.HPVIT.STAGE_DEPTHS", [1, 1, 1, 1],
        "MODEL.FPN.OUT_CHANNELS", 32, "MODEL.FPN.SQUARE_PAD", 0, "MODEL.ROI_HEADS.NUM_CLASSES", 2,
        "MODEL.ROI_BOX_HEAD.NUM_CONV", 1, "MODEL.ROI_BOX_HEAD.CONV_DIM", 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM", 64, "MODEL.ROI_MASK_HEAD.NUM_CONV", 1,
        "MODEL.ROI_MASK_HEAD.CONV_DIM", 32, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        "DATASETS.TRAIN", (name,), "DATASETS.TEST", (name,),
        "INPUT.MIN_SIZE_TRAIN", (64,), "INPUT.MAX_SIZE_TRAIN", 64,
        "INPUT.MIN_SIZE_TEST", 64, "INPUT.MAX_SIZE_TEST", 64,
        "SOLVER.IMS_PER_BATCH", 2, "SOLVER.MAX_ITER", 2, "SOLVER.STEPS", (),
        "SOLVER.WARMUP_ITERS", 0, "SOLVER.AMP.ENABLED", False, "DATALOADER.NUM_WORKERS", 0,
        "TEST.EVAL_PERIOD", 0,
    ])
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER and (tmp_path / "out" / "model_final.pth").exists()
    assert trainer.model.backbone.bottom_up.stage_depths == (1, 1, 1, 1)
    results = Trainer.test(cfg, trainer.model)  # one test dataset: its metrics, not keyed by name
    assert {"bbox", "segm"} <= set(results) and "AP" in results["bbox"]


def test_yaml_recipe_is_the_lazyconfig_recipe():
    """One recipe: MODEL.HPVIT of the yaml equals configs/common/backbones.py's hpvit_b_fpn, and
    is derived from it, not restated (the yaml has no MODEL.HPVIT, FPN width or optimizer keys)."""
    import yaml

    from hpvit_d2.config import HPVIT_YACS_ARGUMENTS, _class_defaults, hpvit_kwargs_from_cfg

    with open("configs/yacs/mask_rcnn_hpvit_b.yaml") as f:
        text = yaml.safe_load(f)
    assert "HPVIT" not in text["MODEL"] and "FPN" not in text["MODEL"]
    assert "LR_DECAY_RATE" not in text["SOLVER"] and "OPTIMIZER" not in text["SOLVER"]

    cfg = add_hpvit_config(get_cfg())
    cfg.merge_from_file("configs/yacs/mask_rcnn_hpvit_b.yaml")
    from_yaml = hpvit_kwargs_from_cfg(cfg)
    lazy = LazyConfig.load("configs/mask_rcnn_hpvit_b.py").model.backbone
    defaults = _class_defaults()
    for name in HPVIT_YACS_ARGUMENTS:
        expected = lazy.bottom_up.get(name, defaults[name])
        expected = tuple(expected) if isinstance(expected, (list, tuple)) else expected
        assert from_yaml[name] == expected, name
    assert from_yaml["norm_layer"].keywords["eps"] == lazy.bottom_up.norm_layer.keywords["eps"]
    assert cfg.MODEL.FPN.SQUARE_PAD == lazy.square_pad
    assert cfg.SOLVER.LR_DECAY_RATE == LazyConfig.load("configs/mask_rcnn_hpvit_b.py").optimizer.params.lr_decay_rate


def test_yacs_defaults_follow_the_lazyconfig_they_are_read_from(monkeypatch):
    """add_hpvit_config reads its recipe: pointed at the ViT-S config, the defaults are ViT-S's."""
    from hpvit_d2 import config

    monkeypatch.setattr(config, "RECIPE", "mask_rcnn_hpvit_s.py")
    cfg = add_hpvit_config(get_cfg())
    lazy = LazyConfig.load("configs/mask_rcnn_hpvit_s.py").model.backbone.bottom_up
    assert (cfg.MODEL.HPVIT.EMBED_DIM, cfg.MODEL.HPVIT.NUM_HEADS) == (lazy.embed_dim, lazy.num_heads) == (384, 6)
