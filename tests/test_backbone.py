"""HPViT backbone: plain-mode equivalence with detectron2's ViT, shapes, pooling, errors, gradients."""
import pytest
import torch
from conftest import DEVICES
from detectron2.modeling import ViT

from hpvit_d2.modeling import HPViT, TokenPool

TINY = dict(embed_dim=32, depth=4, num_heads=2, mlp_ratio=2.0)


def tiny_hpvit(**kw):
    args = dict(TINY, img_size=128, window_size=4, window_block_indexes=(0, 1),
                stage_depths=(1, 1, 1, 1))
    args.update(kw)
    return HPViT(**args)


def plain_pair(img_size=224, **kw):
    """A detectron2 ViT and a plain-mode HPViT with the same configuration (random rel-pos)."""
    common = dict(TINY, img_size=img_size, patch_size=16, use_rel_pos=True, rel_pos_zero_init=False,
                  window_size=7, window_block_indexes=(0, 2))
    common.update(kw)
    d2 = ViT(**common).eval()
    ours = HPViT(patch_stride=16, stage_depths=(common["depth"],), out_features=("scale4",),
                 **common).eval()
    return d2, ours


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1, 3, 224, 224), (2, 3, 160, 256), (1, 3, 100, 210)])
def test_plain_mode_equals_detectron2_vit(shape, device):
    d2, ours = plain_pair()
    d2.to(device), ours.to(device)
    assert set(d2.state_dict()) == set(ours.state_dict())
    ours.load_state_dict(d2.state_dict(), strict=True)
    assert any(p.abs().sum() > 0 for n, p in ours.named_parameters() if "rel_pos" in n)
    x = torch.randn(shape, device=device)
    with torch.no_grad():
        expected = d2(x)["last_feat"]
        got = ours(x)["scale4"]
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_plain_mode_state_dict_loads_both_ways():
    d2, ours = plain_pair()
    d2.load_state_dict(ours.state_dict(), strict=True)
    for (n1, p1), (n2, p2) in zip(sorted(d2.state_dict().items()), sorted(ours.state_dict().items())):
        assert n1 == n2 and p1.shape == p2.shape and torch.equal(p1, p2)


def test_conv_pooling_equals_avg_at_init():
    conv = tiny_hpvit(pool_type="conv").eval()
    avg = tiny_hpvit(pool_type="avg").eval()
    state = {k: v for k, v in conv.state_dict().items() if not k.startswith("pools.")}
    avg.load_state_dict(state, strict=True)
    for size in [(1, 3, 128, 128), (1, 3, 100, 140)]:
        x = torch.randn(size)
        with torch.no_grad():
            a, b = conv(x), avg(x)
        for name in a:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pool_type", ["conv", "avg", "max"])
def test_token_pool_halves_with_ceil(pool_type):
    pool = TokenPool(8, pool_type)
    assert pool(torch.randn(2, 6, 9, 8)).shape == (2, 3, 5, 8)


@pytest.mark.parametrize("hw, expected", [
    ((256, 320), {2: (64, 80), 3: (32, 40), 4: (16, 20), 5: (8, 10)}),
    ((200, 300), {2: (50, 75), 3: (25, 38), 4: (13, 19), 5: (7, 10)}),
])
def test_stage_shapes_and_strides(hw, expected):
    model = tiny_hpvit()
    out = model(torch.randn(2, 3, *hw))
    assert list(out) == ["scale2", "scale3", "scale4", "scale5"]
    for level, (h, w) in expected.items():
        assert out[f"scale{level}"].shape == (2, TINY["embed_dim"], h, w)
    spec = model.output_shape()
    assert {k: v.stride for k, v in spec.items()} == {
        "scale2": 4, "scale3": 8, "scale4": 16, "scale5": 32}
    assert all(v.channels == TINY["embed_dim"] for v in spec.values())
    assert model.size_divisibility == 32


def test_reference_plain_mode_is_detectron2_vit():
    """Same seed, same construction: detectron2's ViT.__init__ builds both; the same state dict
    exactly, and with detectron2's attention ops (fused_attn=False) the same output to float
    rounding (the position embedding is resized separably, the patch map written row-major)."""
    common = dict(TINY, img_size=224, patch_size=16, use_rel_pos=True, rel_pos_zero_init=False,
                  window_size=7, window_block_indexes=(0, 2))
    torch.manual_seed(3)
    d2 = ViT(**common).eval()
    torch.manual_seed(3)
    ours = HPViT(patch_stride=16, stage_depths=(4,), fused_attn=False, **common).eval()
    for (n1, p1), (n2, p2) in zip(d2.state_dict().items(), ours.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)["scale4"], d2(x)["last_feat"], atol=1e-5, rtol=1e-5)


def test_defaults_are_detectron2_vit_defaults_plus_the_hierarchy():
    import inspect

    model = HPViT()
    d2_defaults = {k: p.default for k, p in inspect.signature(ViT.__init__).parameters.items()}
    assert not d2_defaults["use_rel_pos"] and d2_defaults["window_size"] == 0
    assert all(b.window_size == 0 and not b.attn.use_rel_pos for b in model.blocks)
    assert model.patch_embed.proj.kernel_size == (16, 16)
    assert model.patch_embed.proj.stride == (4, 4) and model.patch_embed.proj.padding == (6, 6)
    assert model.pos_embed.shape == (1, 197, 768)
    assert model.stage_depths == (2, 2, 6, 2) and len(model.pools) == 3
    assert model.size_divisibility == 32
    with pytest.raises(TypeError, match="window_sise"):
        HPViT(window_sise=14)


def test_config_recipe_is_hpvit_b():
    from detectron2.config import instantiate

    from hpvit_d2.model_zoo import get_config

    model = instantiate(get_config("mask_rcnn_hpvit_b.py").model.backbone.bottom_up)
    assert model.patch_embed.proj.stride == (4, 4)
    assert [b.window_size for b in model.blocks] == [14] * 7 + [0, 14, 0, 0, 0]
    # Global blocks size their rel-pos tables for their stage at img_size: 1/16 -> 64, 1/32 -> 32.
    assert model.blocks[7].attn.rel_pos_h.shape == (127, 64)
    assert model.blocks[11].attn.rel_pos_h.shape == (63, 64)
    assert model.blocks[0].attn.rel_pos_h.shape == (27, 64)
    assert model.blocks[11].drop_path.drop_prob == pytest.approx(0.1)
    pool_params = sum(p.numel() for p in model.pools.parameters())
    assert pool_params == 3 * (768 * 768 * 4 + 768)


def test_out_features_subset_and_flat_block_names():
    model = tiny_hpvit(out_features=("scale3", "scale5"))
    out = model(torch.randn(1, 3, 64, 64))
    assert list(out) == ["scale3", "scale5"]
    names = {n.split(".")[0] + "." + n.split(".")[1] for n, _ in model.named_parameters()
             if n.startswith("blocks.")}
    assert names == {f"blocks.{i}" for i in range(4)}


@pytest.mark.parametrize("kwargs, argument", [
    (dict(stage_depths=(1, 1, 1)), "stage_depths"),
    (dict(out_features=("scale6",)), "out_features"),
    (dict(pool_type="median"), "pool_type"),
    (dict(patch_stride=5), "patch_stride"),
    (dict(window_block_indexes=(1,), img_size=512), "window_block_indexes"),
    (dict(window_block_indexes=(0, 9)), "window_block_indexes"),
])
def test_bad_configuration_raises(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        tiny_hpvit(**kwargs)


def test_global_attention_rule_names_block_and_rule():
    # 1024 / 4 = 256 tokens a side: global attention at stride 4 is refused.
    with pytest.raises(ValueError, match=r"block 0 has global attention at stride 4.*at most 64x64"):
        HPViT(**TINY, img_size=1024, window_block_indexes=(1, 2, 3), stage_depths=(1, 1, 1, 1))
    # At img_size 256, the 1/4 map is 64x64: allowed.
    HPViT(**TINY, img_size=256, window_block_indexes=(), stage_depths=(1, 1, 1, 1))


def test_gradients_reach_every_parameter():
    model = tiny_hpvit(rel_pos_zero_init=False).train()
    out = model(torch.randn(2, 3, 64, 96))
    sum(v.square().mean() for v in out.values()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []


@pytest.mark.parametrize("stages", [True, (0, 1)], ids=["every-stage", "1/4-and-1/8"])
@pytest.mark.parametrize("band_tokens", [4096, 64], ids=["whole-blocks", "bands-of-window-rows"])
def test_activation_checkpoint_same_gradients(stages, band_tokens, monkeypatch):
    """Every stage, or only the listed ones (the high-resolution stages), recomputed in backward,
    window blocks whole or in bands of window rows (the 1/4 map is 18x16 tokens with windows of 4:
    bands of 4 rows, the last one padded): the same outputs and gradients; the checkpointed
    blocks really are recomputed."""
    from hpvit_d2.modeling import hpvit

    monkeypatch.setattr(hpvit, "RECOMPUTE_BAND_TOKENS", band_tokens)
    ref = tiny_hpvit(rel_pos_zero_init=False, use_rel_pos=True).train()
    ckpt = tiny_hpvit(rel_pos_zero_init=False, use_rel_pos=True, use_act_checkpoint=stages).train()
    ckpt.load_state_dict(ref.state_dict())
    calls = [0] * len(ckpt.blocks)
    for i, blk in enumerate(ckpt.blocks):
        blk.register_forward_pre_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    x = torch.randn(1, 3, 72, 64)
    outputs = [m(x) for m in (ref, ckpt)]
    for name in outputs[0]:
        torch.testing.assert_close(outputs[1][name], outputs[0][name], atol=1e-5, rtol=1e-5)
    for out in outputs:
        sum(v.square().sum() for v in out.values()).backward()
    for (n, a), (_, b) in zip(ref.named_parameters(), ckpt.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-4, rtol=1e-4, msg=n)
    # One block per stage; windows in blocks 0 and 1. A recomputed block runs twice per piece:
    # with bands of <= 64 tokens, block 0 (18 x 16 at 1/4) in 5 bands of 4 rows, block 1 (9 x 8 at
    # 1/8) in 2 bands of 8 rows.
    once = 2 if band_tokens == 4096 else None
    expected = [once or 10, once or 4] + ([2, 2] if stages is True else [1, 1])
    assert calls == expected
    with pytest.raises(ValueError, match="stages are 0..3"):
        ckpt.use_act_checkpoint = (4,)


def test_traces_with_torch_jit_trace():
    model = tiny_hpvit().eval()
    x = torch.randn(1, 3, 64, 64)
    # check_trace compares value names of two traces, which differ run to run; outputs are checked below
    traced = torch.jit.trace(model, x, strict=False, check_trace=False)
    y = torch.randn(1, 3, 64, 64)
    out = traced(y)
    for name, ref in model(y).items():
        torch.testing.assert_close(out[name], ref)


def test_exports_with_torch_export():
    model = tiny_hpvit().eval()
    x = torch.randn(1, 3, 64, 64)
    exported = torch.export.export(model, (x,))
    out = exported.module()(x)
    for name, ref in model(x).items():
        torch.testing.assert_close(out[name], ref)


def test_flop_count_includes_fused_attention():
    """Plain-mode HPViT (fused attention) counts the same FLOPs as detectron2's explicit attention."""
    from hpvit_lab.flops import count_flops

    d2, ours = plain_pair()
    ours.load_state_dict(d2.state_dict())
    x = torch.zeros(1, 3, 224, 224)
    expected = count_flops(d2, x).by_operator()
    got = count_flops(ours, x).by_operator()
    assert got["scaled_dot_product_attention"] == expected["matmul"]
    assert got["linear"] == expected["linear"] and got["conv"] == expected["conv"]


@pytest.mark.parametrize("grad", [False, True], ids=["inference", "training"])
def test_hierarchy_equals_its_unoptimised_forward(grad):
    """HPViT at stride 4 with its default attention (SDPA with the chunked bias) and the CPU
    inference step (banded blocks, oneDNN projections) against the same weights run through
    detectron2's attention ops (fused_attn=False), on an input whose grid differs from the
    pre-training one (the position embedding is resized)."""
    from hpvit_d2.modeling import optimize_for_cpu_inference

    torch.manual_seed(0)
    fast = tiny_hpvit(use_rel_pos=True, rel_pos_zero_init=False, window_block_indexes=(0, 1, 2))
    optimize_for_cpu_inference(fast, retain_freed_memory=False, linear="onednn")
    reference = tiny_hpvit(use_rel_pos=True, rel_pos_zero_init=False,
                           window_block_indexes=(0, 1, 2), fused_attn=False)
    reference.load_state_dict(fast.state_dict())
    with torch.no_grad():
        fast.pos_embed.normal_()
    reference.load_state_dict(fast.state_dict())
    fast.eval(), reference.eval()
    x = torch.randn(2, 3, 96, 160)
    with torch.set_grad_enabled(grad):
        got, expected = fast(x), reference(x)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-4, rtol=1e-4)
    if grad:
        sum(v.square().sum() for v in got.values()).backward()
        sum(v.square().sum() for v in expected.values()).backward()
        for (name, p), q in zip(fast.named_parameters(), reference.parameters()):
            torch.testing.assert_close(p.grad, q.grad, atol=1e-3, rtol=1e-3, msg=name)
