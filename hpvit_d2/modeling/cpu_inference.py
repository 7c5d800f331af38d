"""
``optimize_for_cpu_inference(model)``: an opt-in step, applied to a built model, that makes
HPViT's inference on the CPU faster and smaller. Training never takes it: every module it changes
runs its parent's forward whenever autograd is on, the module is in training mode, or the graph
is traced, compiled or exported.

What it changes, for every HPViT in the model (parameters, buffers and state-dict keys unchanged;
outputs equal to float rounding, tested):

- the blocks become :class:`BandedBlock`: the large maps of a hierarchy's first stages go through
  them in bands of :data:`BAND_TOKENS` tokens, so the (tokens, 3C) qkv and (tokens, 4C) MLP
  activations of the whole 1/4 map are never in memory at once, and each block writes its result
  into its input (HPViT's forward owns every map it passes to a block);
- the blocks' projections (``qkv``, ``proj``, ``fc1``, ``fc2``) become
  :class:`~hpvit_d2.modeling.projection.OneDNNLinear` (oneDNN's linear instead of MKL's sgemm)
  where that is faster on this machine: faster on some processors, not all, so both are timed on
  the model's own shapes once per process
  (:func:`~hpvit_d2.modeling.projection.choose_cpu_linear`; ``HPVIT_CPU_LINEAR=onednn|mkl`` or
  ``linear=`` fixes it; :func:`cpu_inference_kernels` says which one a model runs);
- the process keeps freed memory for reuse (:func:`hpvit_d2.cpu_memory.retain_freed_cpu_memory`,
  glibc only, process-wide; ``retain_freed_memory=False`` or ``HPVIT_RETAIN_FREED_MEMORY=0``
  leaves the allocator alone).

The predictor, ``hpvit-demo`` and the bench call it; a model used for training or export should
not be given it (it would take the parents' forwards there anyway).
"""
import logging
from typing import Dict, Optional

import torch
import torch.nn as nn

from .attention import Block
from .hpvit import HPViT
from .projection import OneDNNLinear, choose_cpu_linear

__all__ = ["BAND_TOKENS", "BandedBlock", "cpu_inference_kernels", "optimize_for_cpu_inference"]

logger = logging.getLogger(__name__)

# Tokens per band: the (tokens, 3C) qkv and (tokens, 4C) MLP activations exist for one band at a
# time, not for the whole 1/4 map.
BAND_TOKENS = 8192


class BandedBlock(Block):
    """
    :class:`~hpvit_d2.modeling.attention.Block` computed in bands at inference (no autograd, eval
    mode, not traced or compiled, more than :data:`BAND_TOKENS` tokens): a window block takes
    bands of whole window rows (window attention never crosses them) through both of its
    branches; a global block attends over the whole map and takes its MLP in bands of rows.
    With ``inplace`` (as ``nn.ReLU(inplace=True)``) the result is written into the input.
    x: (B, H, W, C) -> (B, H, W, C).
    """

    inplace: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        if (torch.is_grad_enabled() or self.training or torch.jit.is_tracing()
                or torch.compiler.is_compiling() or B * H * W <= BAND_TOKENS):
            return super().forward(x)
        x = x if self.inplace else x.clone()
        ws = self.window_size
        if ws > 0:
            rows = ws * max(1, BAND_TOKENS // (B * W * ws))
            for r0 in range(0, H, rows):
                band = x[:, r0:r0 + rows]  # a view of x whatever its strides: no copy
                band += self.attn(self.norm1(band), ws)
                band += self.mlp(self.norm2(band))
        else:
            x += self.attn(self.norm1(x), 0)
            rows = max(1, BAND_TOKENS // (B * W))
            for r0 in range(0, H, rows):
                band = x[:, r0:r0 + rows]
                band += self.mlp(self.norm2(band))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


def _adopt(module: nn.Module, cls: type) -> None:
    """Give ``module`` the forward of ``cls``, a subclass of its class that adds no state."""
    if not isinstance(module, cls):
        assert issubclass(cls, type(module)), (cls, type(module))
        module.__class__ = cls


def _projections(block: nn.Module):
    return (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)


def optimize_for_cpu_inference(model: nn.Module, retain_freed_memory: bool = True,
                               linear: Optional[str] = None) -> nn.Module:
    """
    Apply the CPU inference step (module docstring) to every HPViT in ``model``, in place.

    Args:
        model (nn.Module): a built model (a detector, a classifier or an HPViT).
        retain_freed_memory (bool): also make the process keep freed memory for reuse.
        linear (str or None): the projections' kernel: "onednn", "mkl" (``F.linear``) or "auto"
            (the faster on this machine, timed once per process); None reads
            ``HPVIT_CPU_LINEAR``, else "auto". The choice is logged.
    Returns:
        ``model``, for chaining. Calling it again applies the kernel chosen then.
    """
    backbones = [m for m in model.modules() if isinstance(m, HPViT)]
    shapes = {(p.in_features, p.out_features) for b in backbones for block in b.blocks
              for p in _projections(block) if type(p) in (nn.Linear, OneDNNLinear)}
    choice = choose_cpu_linear(sorted(shapes), linear) if shapes else None
    for backbone in backbones:
        for block in backbone.blocks:
            _adopt(block, BandedBlock)
            block.inplace = True  # HPViT.forward owns every map it passes to a block
            for projection in _projections(block):
                if type(projection) in (nn.Linear, OneDNNLinear):
                    projection.__class__ = OneDNNLinear if choice.kernel == "onednn" else nn.Linear
    if choice is not None:
        logger.info("HPViT CPU inference: projections through %s (%s)",
                    "oneDNN's linear" if choice.kernel == "onednn" else "F.linear (MKL)",
                    choice.reason)
    if retain_freed_memory:
        from ..cpu_memory import retain_freed_cpu_memory

        retain_freed_cpu_memory()
    return model


def cpu_inference_kernels(model: nn.Module) -> Dict[str, int]:
    """How many of the HPViT blocks' projections in ``model`` run on each kernel at CPU
    inference: {"onednn": n, "mkl": m} (``F.linear``: MKL's sgemm)."""
    counts = {"onednn": 0, "mkl": 0}
    for backbone in model.modules():
        if isinstance(backbone, HPViT):
            for block in backbone.blocks:
                for projection in _projections(block):
                    counts["onednn" if isinstance(projection, OneDNNLinear) else "mkl"] += 1
    return counts
