"""fvcore FLOP counting that also counts PyTorch's fused attention (fvcore skips it otherwise)."""
from typing import Any, List

import torch
from fvcore.nn import FlopCountAnalysis

__all__ = ["count_detector_flops", "count_flops", "sdpa_flop_handle"]


def _shape(value) -> List[int]:
    return value.type().sizes()


def sdpa_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """
    Multiply-adds of ``aten::scaled_dot_product_attention``: q (..., Nq, d), k (..., Nk, d),
    v (..., Nk, dv) -> q @ k^T plus softmax(.) @ v = batch * Nq * Nk * (d + dv). The additive bias
    and softmax are not counted, as fvcore does not count them for explicit attention either.
    """
    q, k, v = (_shape(t) for t in inputs[:3])
    batch = 1
    for size in q[:-2]:
        batch *= size
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def _count_fused_attention(analysis: FlopCountAnalysis) -> FlopCountAnalysis:
    analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_flop_handle)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    # Traced here, without autograd: the forward that inference runs (with gradients on, the
    # CPU attention with a learned bias writes its product out instead of calling SDPA; the
    # count is the same, under other operator names).
    with torch.no_grad():
        analysis.total()
    return analysis


def count_flops(model: torch.nn.Module, *inputs) -> FlopCountAnalysis:
    """A FlopCountAnalysis of ``model(*inputs)`` with fused attention counted; warnings silenced."""
    return _count_fused_attention(FlopCountAnalysis(model, inputs))


def count_detector_flops(model: torch.nn.Module, batched_inputs: List[dict]) -> FlopCountAnalysis:
    """The same for a detectron2 meta-architecture taking ``[{"image": (3, H, W), ...}]``."""
    from detectron2.utils.analysis import FlopCountAnalysis as DetectorFlopCountAnalysis

    return _count_fused_attention(DetectorFlopCountAnalysis(model, batched_inputs))
