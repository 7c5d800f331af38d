"""HPViT's attention and block (detectron2's modules, the kernel chosen by ``fused_attn``) and the
opt-in CPU inference step: same parameters, same outputs and gradients as detectron2's."""
import re

import pytest
import torch
from conftest import CUDA_ONLY, DEVICES
from detectron2.modeling.backbone import vit as d2_vit
from detectron2.modeling.backbone.utils import window_partition, window_unpartition

from hpvit_d2.modeling.attention import Attention, Block, merge_windows, split_windows

DIM, HEADS = 48, 3


def attention_pair(use_rel_pos: bool, input_size, qkv_bias: bool = True, fused_attn: bool = True):
    """detectron2's Attention with random weights, and the project's Attention with the same ones."""
    kwargs = dict(num_heads=HEADS, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                  rel_pos_zero_init=False, input_size=input_size)
    d2 = d2_vit.Attention(DIM, **kwargs).eval()
    with torch.no_grad():
        d2.qkv.bias.normal_() if qkv_bias else None  # padded tokens must see a non-zero qkv bias
    ours = Attention(DIM, **kwargs).eval()
    ours.load_state_dict(d2.state_dict())
    ours.fused_attn = fused_attn
    return d2, ours


def d2_windowed(attn, x, window_size):
    """What detectron2's Block does around its attention."""
    H, W = x.shape[1:3]
    windows, pad_hw = window_partition(x, window_size)
    return window_unpartition(attn(windows), window_size, pad_hw, (H, W))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_rel_pos", [True, False])
@pytest.mark.parametrize("hw", [(8, 8), (6, 11)])
def test_global_attention_equals_detectron2(use_rel_pos, hw, device):
    d2, ours = attention_pair(use_rel_pos, hw)
    d2.to(device), ours.to(device)
    x = torch.randn(2, *hw, DIM, device=device)
    with torch.no_grad():
        expected, got = d2(x), ours(x)
    assert got.shape == expected.shape == x.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("use_rel_pos", [True, False])
# whole windows, padded windows, one window larger than the map
@pytest.mark.parametrize("hw", [(8, 12), (9, 13), (3, 5)])
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_window_attention_equals_detectron2(use_rel_pos, hw, qkv_bias, device):
    window = 4
    d2, ours = attention_pair(use_rel_pos, (window, window), qkv_bias)
    d2.to(device), ours.to(device)
    x = torch.randn(2, *hw, DIM, device=device)
    with torch.no_grad():
        expected = d2_windowed(d2, x, window)
        got = ours(x, window_size=window)
    assert got.shape == expected.shape == x.shape
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("window_size, hw", [(0, (6, 11)), (4, (9, 13))])
def test_reference_kernel_is_detectron2_bit_for_bit(window_size, hw):
    """fused_attn=False: detectron2's window partition and attention ops, exactly."""
    d2, ours = attention_pair(True, (4, 4) if window_size else hw, fused_attn=False)
    x = torch.randn(2, *hw, DIM)
    with torch.no_grad():
        expected = d2_windowed(d2, x, window_size) if window_size else d2(x)
        assert torch.equal(ours(x, window_size), expected)


def test_rel_pos_tables_are_resized_like_detectron2():
    """A global block built for 8x8 run on 10x6: rel-pos tables are interpolated the same way."""
    d2, ours = attention_pair(True, (8, 8))
    x = torch.randn(1, 10, 6, DIM)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), d2(x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("window_size, hw", [(0, (7, 9)), (4, (7, 9))])
def test_block_equals_detectron2_block_with_gradients(window_size, hw):
    kw = dict(dim=DIM, num_heads=HEADS, use_rel_pos=True, rel_pos_zero_init=False,
              window_size=window_size, input_size=hw)
    block = d2_vit.Block(**kw)
    with torch.no_grad():
        block.attn.qkv.bias.normal_()
    ours = Block(**kw)
    ours.load_state_dict(block.state_dict())
    x = torch.randn(2, *hw, DIM)
    expected = block(x)
    expected.square().sum().backward()
    got = ours(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    got.square().sum().backward()
    ours_params = dict(ours.named_parameters())
    for name, p in block.named_parameters():
        torch.testing.assert_close(ours_params[name].grad, p.grad, atol=1e-3, rtol=1e-3, msg=name)


def test_split_and_merge_windows_round_trip_and_fill():
    x = torch.randn(2, 5, 7, 6)
    fill = torch.arange(6.0)
    windows, padded_hw = split_windows(x, 4, fill=fill)
    assert padded_hw == (8, 8) and windows.shape == (2 * 4, 16, 6)
    torch.testing.assert_close(merge_windows(windows, 4, padded_hw, (5, 7)), x, atol=0, rtol=0)
    padded = merge_windows(windows, 4, padded_hw, padded_hw)
    assert torch.equal(padded[:, 5:], fill.expand(2, 3, 8, 6))
    assert torch.equal(padded[:, :5, 7:], fill.expand(2, 5, 1, 6))
    # Same layout as detectron2's window_partition.
    expected, _ = window_partition(x, 4)
    zeros, _ = split_windows(x, 4)
    torch.testing.assert_close(zeros, expected.reshape(8, 16, 6), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [(12, 12), (9, 14)])
def test_query_chunks_equal_detectron2_with_gradients(hw, monkeypatch, device):
    """With a tiny bias budget every chunk is one or two rows; outputs and gradients unchanged."""
    from hpvit_d2.modeling import attention

    monkeypatch.setattr(attention, "BIAS_CHUNK_BYTES", 2 * HEADS * hw[0] * hw[1] * hw[1] * 4)
    d2, ours = attention_pair(True, (8, 8))  # tables resized at run time too
    d2.to(device), ours.to(device)
    x = torch.randn(2, *hw, DIM, device=device, requires_grad=True)
    expected = d2(x)
    grads = torch.autograd.grad(expected.square().sum(), [x, d2.rel_pos_h, d2.qkv.weight])
    got = ours(x)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    for a, b in zip(torch.autograd.grad(got.square().sum(), [x, ours.rel_pos_h, ours.qkv.weight]), grads):
        torch.testing.assert_close(a, b, atol=1e-3, rtol=1e-3)


MEMORY_PROBE = r"""
import sys, torch
from detectron2.modeling.backbone import vit as d2_vit
from hpvit_d2.modeling import attention
attention.BIAS_CHUNK_BYTES = 16 * 2**20  # the mechanism, at a size a test can afford
side = int(sys.argv[1])
torch.set_num_threads(1)
attn = attention.Attention(192, num_heads=6, use_rel_pos=True, input_size=(side, side)).eval()
x = torch.randn(1, side, side, 192)
def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
with torch.no_grad():
    attn(x)  # warm up the allocator and kernels
    open("/proc/self/clear_refs", "w").write("5")
    base = kb("VmRSS")
    attn(x)
print(kb("VmHWM") - base)
"""


def test_global_block_peak_memory_grows_sub_quadratically():
    """The (heads, N, N) bias is never built whole: 4x the tokens, far less than 16x the memory
    (with a 16 MB chunk budget; the default budget only moves where chunking starts)."""
    import subprocess
    import sys

    peaks = {}
    for side in (32, 64):
        proc = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(side)], capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[side] = int(proc.stdout.split()[-1]) / 1024  # MB
    full_bias_mb = 6 * (64 * 64) ** 2 * 4 / 2**20  # what a whole bias at 64x64 tokens would take
    assert peaks[64] < full_bias_mb / 4, peaks
    assert peaks[64] / max(peaks[32], 1.0) < 4, peaks  # tokens x4: quadratic would be x16


@CUDA_ONLY
def test_bf16_autocast_stays_close_to_fp32_on_cuda():
    from hpvit_d2.modeling import HPViT

    model = HPViT(img_size=128, embed_dim=64, depth=4, num_heads=4, window_size=4,
                  window_block_indexes=(0, 1), use_rel_pos=True, stage_depths=(1, 1, 1, 1)).cuda().eval()
    x = torch.randn(1, 3, 128, 128, device="cuda")
    with torch.no_grad():
        reference = model(x)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = model(x)
    for name, value in reference.items():
        torch.testing.assert_close(low[name].float(), value, atol=0.1, rtol=0.05)


@pytest.mark.parametrize("window_blocks", [(0, 1), (1,)], ids=["window-first", "global-first"])
@pytest.mark.parametrize("device", DEVICES)
def test_cpu_inference_step_equals_the_default_forward(monkeypatch, device, window_blocks):
    """Inference in bands (every block banded with a 100-token band): the default forward and
    optimize_for_cpu_inference's (in place, oneDNN projections) give the whole map's outputs; in
    training the step changes nothing (outputs and gradients); the same state dict."""
    import copy

    from hpvit_d2.modeling import HPViT, bands, optimize_for_cpu_inference
    from hpvit_d2.modeling.projection import OneDNNLinear

    model = HPViT(img_size=128, embed_dim=48, depth=4, num_heads=3, window_size=4,
                  window_block_indexes=window_blocks, use_rel_pos=True, rel_pos_zero_init=False,
                  residual_block_indexes=(2,), stage_depths=(1, 1, 1, 1)).to(device).eval()
    fast = optimize_for_cpu_inference(copy.deepcopy(model), retain_freed_memory=False,
                                      linear="onednn")
    assert optimize_for_cpu_inference(fast, retain_freed_memory=False, linear="onednn") is fast
    assert all(b.inplace for b in fast.blocks) and not any(b.inplace for b in model.blocks)
    assert isinstance(fast.blocks[0].mlp.fc1, OneDNNLinear)
    assert list(fast.state_dict()) == list(model.state_dict())
    monkeypatch.setattr(bands, "INFERENCE_BAND_TOKENS", 100)
    x = torch.randn(2, 3, 116, 92, device=device)
    fc1_tokens = []
    hook = model.blocks[0].mlp.fc1.register_forward_hook(
        lambda m, args, out: fc1_tokens.append(args[0].shape[:-1].numel()))
    whole = {k: v.detach() for k, v in model(x).items()}  # autograd on: no bands
    with torch.no_grad():
        default, banded = model(x), fast(x)  # both in bands, the step's in place
    hook.remove()
    assert fc1_tokens[0] == 2 * 29 * 23 and max(fc1_tokens[1:]) < 2 * 29 * 23, fc1_tokens
    for name in whole:
        torch.testing.assert_close(default[name], whole[name], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(banded[name], whole[name], atol=1e-5, rtol=1e-5)
    model.train(), fast.train()
    got, expected = fast(x), model(x)
    sum(v.square().sum() for v in got.values()).backward()
    sum(v.square().sum() for v in expected.values()).backward()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0)
    for (name, p), q in zip(fast.named_parameters(), model.parameters()):
        torch.testing.assert_close(p.grad, q.grad, atol=0, rtol=0, msg=name)


def test_cpu_linear_kernel_is_timed_on_the_machine_or_fixed_by_the_user(monkeypatch):
    """The projections' kernel at CPU inference: "auto" times both on the model's own shapes
    (the reason gives the ratio), HPVIT_CPU_LINEAR or linear= fix it (the argument first), a
    wrong name is one ConfigError naming where it came from; both kernels give the same outputs
    and cpu_inference_kernels says which one each projection runs, with the step and without
    it (the default CpuLinear projections, each on its own shape's kernel)."""
    import copy

    from hpvit_d2.modeling import HPViT, cpu_inference_kernels, optimize_for_cpu_inference
    from hpvit_d2.modeling.projection import CPU_LINEAR_ENV, CpuLinear, choose_cpu_linear
    from hpvit_d2.overrides import ConfigError

    monkeypatch.delenv(CPU_LINEAR_ENV, raising=False)
    auto = choose_cpu_linear([(48, 144), (48, 48), (48, 192), (192, 48)])
    assert auto.kernel in ("onednn", "mkl") and auto.reason.startswith("auto: oneDNN's linear ")
    assert re.search(r"\d+\.\d\dx F.linear's speed", auto.reason), auto.reason
    monkeypatch.setenv(CPU_LINEAR_ENV, "MKL")
    assert choose_cpu_linear([(48, 48)]) == ("mkl", f"{CPU_LINEAR_ENV}=mkl")
    assert choose_cpu_linear([(48, 48)], "onednn") == ("onednn", "linear argument=onednn")
    monkeypatch.setenv(CPU_LINEAR_ENV, "fast")
    with pytest.raises(ConfigError, match=f"^{CPU_LINEAR_ENV}='fast' is not a CPU linear kernel: "
                                          "use one of auto, onednn, mkl"):
        choose_cpu_linear([(48, 48)])

    torch.manual_seed(0)
    model = HPViT(img_size=64, embed_dim=48, depth=2, num_heads=3, window_size=4,
                  window_block_indexes=(0,), use_rel_pos=True, rel_pos_zero_init=False,
                  stage_depths=(1, 1)).eval()
    onednn = optimize_for_cpu_inference(copy.deepcopy(model), False, linear="onednn")
    mkl = optimize_for_cpu_inference(copy.deepcopy(model), False, linear="mkl")
    assert cpu_inference_kernels(onednn) == {"onednn": 8, "mkl": 0}
    assert cpu_inference_kernels(mkl) == {"onednn": 0, "mkl": 8}
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        a, b = onednn(x), mkl(x)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
    # applied again with the other kernel: the projections follow
    assert cpu_inference_kernels(optimize_for_cpu_inference(onednn, False, linear="mkl")) == \
        {"onednn": 0, "mkl": 8}
    # without the step, each projection takes its own shape's kernel, fixed by the environment
    assert all(type(p) is CpuLinear for b in model.blocks for p in b.projections())
    for kernel, other in (("onednn", "mkl"), ("mkl", "onednn")):
        monkeypatch.setenv(CPU_LINEAR_ENV, kernel)
        assert cpu_inference_kernels(model) == {kernel: 8, other: 0}
        with torch.no_grad():
            default = model(x)
        for name in a:
            torch.testing.assert_close(default[name], a[name], atol=1e-5, rtol=1e-5)
    monkeypatch.setenv(CPU_LINEAR_ENV, "fastest")
    with pytest.raises(ConfigError, match=f"^{CPU_LINEAR_ENV}='fastest' is not a CPU linear"):
        with torch.no_grad():
            model(x)


@pytest.mark.parametrize("amp", [False, True])
def test_training_attention_with_a_learned_bias_equals_sdpa(amp):
    """On the CPU, a bias that carries a gradient (training with relative positions) takes the
    written-out product instead of SDPA's math fallback: the same output and gradients as SDPA,
    in fp32 and under bf16 autocast (within bf16's resolution), and SDPA itself at inference."""
    from torch.nn import functional as F

    from hpvit_d2.modeling.attention import attend_with_bias

    gen = torch.Generator().manual_seed(0)
    leaves = [torch.randn(2, 3, 40, 16, generator=gen) for _ in range(3)]
    leaves.append(torch.randn(2, 3, 40, 40, generator=gen))
    results = []
    for attend in (lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b,
                                                                      scale=0.25),
                   lambda q, k, v, b: attend_with_bias(q, k, v, b, 0.25)):
        q, k, v, b = (t.clone().requires_grad_() for t in leaves)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = attend(q, k, v, b)
        out.float().square().sum().backward()
        results.append((out, [t.grad for t in (q, k, v, b)]))
    (expected, expected_grads), (got, grads) = results
    assert got.dtype == expected.dtype == (torch.bfloat16 if amp else torch.float32)
    tol = dict(atol=0.1, rtol=0.02) if amp else dict(atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.float(), expected.float(), **tol)
    for g, e in zip(grads, expected_grads):
        torch.testing.assert_close(g, e, **tol)
    with torch.no_grad():  # inference: SDPA's own kernel, bit for bit
        q, k, v, b = leaves
        assert torch.equal(attend_with_bias(q, k, v, b, 0.25),
                           F.scaled_dot_product_attention(q, k, v, attn_mask=b, scale=0.25))
