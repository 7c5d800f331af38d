"""
The token projections of a ViT block (``qkv``, ``proj``, ``fc1``, ``fc2``), computed by oneDNN at
CPU inference: the same ``nn.Linear`` parameters, multiplied by oneDNN instead of MKL.

PyTorch's ``F.linear`` on the CPU is MKL's sgemm with a bias pass over the output; this path
runs the same products through oneDNN's linear (``torch.ops.mkldnn._linear_pointwise``, the
kernel inductor calls for CPU linears). Which is faster depends on the processor: ``make bench``
prints both rooflines and the README's speed section says where it was measured.

:func:`hpvit_d2.modeling.optimize_for_cpu_inference` makes a built model's projections
:class:`OneDNNLinear`. Only inference takes this path (no autograd, fp32 on the CPU, no autocast, not traced, compiled or
exported): training, exported graphs, ``torch.compile`` and other devices keep ``F.linear``.
"""
import torch
import torch.nn as nn

__all__ = ["OneDNNLinear", "onednn_applies", "token_linear"]


def _onednn_linear_available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _onednn_linear_available()


def onednn_applies(x: torch.Tensor) -> bool:
    """Whether :func:`token_linear` runs ``x`` through oneDNN (CPU fp32 inference, untraced)."""
    return (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() >= 2
        and not torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()  # compiled and exported graphs keep aten.linear
        and not torch.is_autocast_enabled("cpu")
        and torch.backends.mkldnn.enabled
    )


def token_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """
    ``linear(x)``, through oneDNN where :func:`onednn_applies`.

    Args:
        linear (nn.Linear): weight (C_out, C_in), bias (C_out,) or None.
        x (Tensor): (..., C_in), e.g. a (B, H, W, C_in) token map.
    Returns:
        Tensor (..., C_out), contiguous.
    """
    # Another subclass of nn.Linear may compute something else: it is called as it is.
    if type(linear) in (nn.Linear, OneDNNLinear) and onednn_applies(x) and linear.weight.dtype == x.dtype:
        return torch.ops.mkldnn._linear_pointwise(x, linear.weight, linear.bias, "none", [], "")
    return nn.Linear.forward(linear, x) if type(linear) is OneDNNLinear else linear(x)


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose forward is :func:`token_linear` (same parameters and state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return token_linear(self, x)
