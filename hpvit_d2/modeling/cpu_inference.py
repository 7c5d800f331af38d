"""
``optimize_for_cpu_inference(model)``: an opt-in step, applied to a built model, that makes
HPViT's inference on the CPU faster and smaller than its default forward. It changes the model it
is given, in place, and nothing else. Training never takes it: what it changes applies only when
autograd is off, the module is in eval mode, and the graph is not traced, compiled or exported.

HPViT's default forward already takes large maps through its blocks in row bands at inference
(:class:`~.attention.Block`) and its projections on the faster kernel for each shape
(:class:`~.projection.CpuLinear`). For every HPViT in the model (parameters, buffers and state-dict
keys unchanged; outputs equal to float rounding, tested) the step also:

- makes each block write its banded result into its input (``Block.inplace``; HPViT's forward owns
  every map it passes to a block), so a block holds one map, not two;
- fixes one kernel for all the blocks' projections, :class:`~.projection.OneDNNLinear` or
  ``nn.Linear``, where oneDNN's linear is (or is not) the faster on their shapes together
  (:func:`~.projection.choose_cpu_linear`; :func:`cpu_inference_kernels` says which one a model
  runs).

Keeping freed memory for reuse (glibc's allocator, process-wide) is a separate, explicit call:
:func:`hpvit_d2.cpu_memory.retain_freed_cpu_memory`.
"""
import logging
from typing import Dict, Optional

import torch.nn as nn

from .attention import Block
from .hpvit import HPViT
from .projection import CpuLinear, OneDNNLinear, choose_cpu_linear
from .retype import retype

__all__ = ["cpu_inference_kernels", "optimize_for_cpu_inference"]

logger = logging.getLogger(__name__)

_PROJECTION_TYPES = (nn.Linear, CpuLinear, OneDNNLinear)


def _projections(backbone: HPViT):
    """Every projection of ``backbone``'s blocks that is one of ours (nn.Linear or its kernels)."""
    return [p for block in backbone.blocks if isinstance(block, Block)
            for p in block.projections() if type(p) in _PROJECTION_TYPES]


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
    shapes = {(p.in_features, p.out_features) for b in backbones for p in _projections(b)}
    choice = choose_cpu_linear(sorted(shapes), linear) if shapes else None
    kernel = OneDNNLinear if choice is not None and choice.kernel == "onednn" else nn.Linear
    for backbone in backbones:
        for block in backbone.blocks:
            if isinstance(block, Block):
                block.inplace = True
        for projection in _projections(backbone):
            retype(projection, kernel)
    if choice is not None:
        logger.info("HPViT CPU inference: projections through %s (%s)",
                    "oneDNN's linear" if choice.kernel == "onednn" else "F.linear (MKL)",
                    choice.reason)
    if retain_freed_memory:
        from ..cpu_memory import retain_freed_cpu_memory

        retain_freed_cpu_memory()
    return model


def cpu_inference_kernels(model: nn.Module) -> Dict[str, int]:
    """How many of the HPViT blocks' projections in ``model`` run on each kernel at CPU fp32
    inference: {"onednn": n, "mkl": m} (``F.linear``: MKL's sgemm); a default
    :class:`~.projection.CpuLinear` counts as the kernel it takes for its shape."""
    counts = {"onednn": 0, "mkl": 0}
    for backbone in model.modules():
        if isinstance(backbone, HPViT):
            for p in _projections(backbone):
                counts[p.cpu_kernel() if isinstance(p, CpuLinear) else "mkl"] += 1
    return counts
