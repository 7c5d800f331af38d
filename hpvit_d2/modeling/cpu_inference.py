"""
``optimize_for_cpu_inference(model)``: an opt-in step, applied to a built model, that makes
HPViT's inference on the CPU faster and smaller. It changes the model it is given, in place, and
nothing else. Training never takes it: every module it changes runs its parent's forward whenever
autograd is on, the module is in training mode, or the graph is traced, compiled or exported.

For every HPViT in the model (parameters, buffers and state-dict keys unchanged; outputs equal to
float rounding, tested):

- the blocks become :class:`BandedBlock`: large maps go through them in row bands
  (:mod:`.bands`), and each block writes its result into its input (HPViT's forward owns every
  map it passes to a block);
- the blocks' projections become :class:`~.projection.OneDNNLinear` where oneDNN's linear is the
  faster kernel on this machine (:func:`~.projection.choose_cpu_linear`;
  :func:`cpu_inference_kernels` says which one a model runs).

Keeping freed memory for reuse (glibc's allocator, process-wide) is a separate, explicit call:
:func:`hpvit_d2.cpu_memory.retain_freed_cpu_memory`.
"""
import logging
from typing import Dict, Optional

import torch
import torch.nn as nn

from .attention import Block
from .bands import INFERENCE_BAND_TOKENS, row_bands
from .hpvit import HPViT
from .projection import OneDNNLinear, choose_cpu_linear
from .retype import retype

__all__ = ["BandedBlock", "cpu_inference_kernels", "optimize_for_cpu_inference"]

logger = logging.getLogger(__name__)


class BandedBlock(Block):
    """
    :class:`~.attention.Block` in row bands of at most ``INFERENCE_BAND_TOKENS`` tokens at
    inference: a window block takes bands of whole window rows through both branches, a global
    block attends over the whole map and takes its MLP in bands. With ``inplace`` (as
    ``nn.ReLU(inplace=True)``) the result is written into the input. x: (B, H, W, C).
    """

    inplace: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        budget = INFERENCE_BAND_TOKENS
        if (torch.is_grad_enabled() or self.training or torch.jit.is_tracing()
                or torch.compiler.is_compiling() or B * H * W <= budget):
            return super().forward(x)
        x = x if self.inplace else x.clone()
        ws = self.window_size
        if ws > 0:
            for band in row_bands(x, budget, ws):  # views of x: no copy
                band += self.attn(self.norm1(band), ws)
                band += self.mlp(self.norm2(band))
        else:
            x += self.attn(self.norm1(x), 0)
            for band in row_bands(x, budget):
                band += self.mlp(self.norm2(band))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


def _projections(block: nn.Module):
    return (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2)


def optimize_for_cpu_inference(model: nn.Module, retain_freed_memory: bool = False,
                               linear: Optional[str] = None) -> nn.Module:
    """
    Apply the CPU inference step (module docstring) to every HPViT in ``model``, in place.

    Args:
        model (nn.Module): a built model (a detector, a classifier or an HPViT).
        retain_freed_memory (bool): also call ``hpvit_d2.cpu_memory.retain_freed_cpu_memory()``,
            which changes the whole process's allocator.
        linear (str or None): the projections' kernel: "onednn", "mkl" (``F.linear``) or "auto"
            (the faster on this machine, timed once per process); None reads
            ``HPVIT_CPU_LINEAR``, else "auto". The choice is logged.
    Returns:
        ``model``. Calling it again applies the kernel chosen then.
    """
    backbones = [m for m in model.modules() if isinstance(m, HPViT)]
    shapes = {(p.in_features, p.out_features) for b in backbones for block in b.blocks
              for p in _projections(block) if type(p) in (nn.Linear, OneDNNLinear)}
    choice = choose_cpu_linear(sorted(shapes), linear) if shapes else None
    for backbone in backbones:
        for block in backbone.blocks:
            if not isinstance(block, BandedBlock):
                retype(block, BandedBlock)
            block.inplace = True
            for projection in _projections(block):
                if type(projection) in (nn.Linear, OneDNNLinear):
                    retype(projection, OneDNNLinear if choice.kernel == "onednn" else nn.Linear)
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
