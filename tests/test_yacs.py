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
