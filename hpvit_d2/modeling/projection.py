"""
A ViT block's token projections (``qkv``, ``proj``, ``fc1``, ``fc2``) through oneDNN's linear
(``torch.ops.mkldnn._linear_pointwise``, the kernel inductor calls for CPU linears) instead of
``F.linear`` (MKL's sgemm and a bias pass), with the same ``nn.Linear`` parameters.

Which kernel is faster depends on the processor (docs/benchmarks.md, "Speed and memory", the two
rooflines: on an AMD EPYC oneDNN's was 2.2x MKL's, on an Intel Xeon 0.97x), so
:func:`choose_cpu_linear` times both on the model's own shapes, once per process;
``HPVIT_CPU_LINEAR=onednn|mkl`` fixes the choice. Only CPU fp32 inference takes this path (no
autograd or autocast, not traced, compiled or exported).

HPViT's blocks are built with :class:`CpuLinear` projections, which take the faster kernel for
their own shape by default; ``optimize_for_cpu_inference`` fixes one kernel for all of them
(:class:`OneDNNLinear` or ``nn.Linear``).
"""
import functools
import logging
import os
import time
from typing import NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

logger = logging.getLogger(__name__)

__all__ = ["CPU_LINEAR_ENV", "CPU_LINEARS", "CpuLinear", "CpuLinearChoice", "OneDNNLinear",
           "choose_cpu_linear", "onednn_applies", "preferred_cpu_linear", "token_linear"]

# The environment variable that fixes the CPU inference projections' kernel, and its values.
CPU_LINEAR_ENV = "HPVIT_CPU_LINEAR"
CPU_LINEARS = ("auto", "onednn", "mkl")
# Rows of the product each kernel is timed on in "auto": a quarter of an inference band
# (bands.INFERENCE_BAND_TOKENS) ranks the kernels at a quarter of the cost.
_TIMED_TOKENS = 2048


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


def _onednn_linear(x: torch.Tensor, weight: torch.Tensor,
                   bias: Optional[torch.Tensor]) -> torch.Tensor:
    """x (..., C_in) @ weight (C_out, C_in).T + bias through oneDNN's linear, no fused op."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def token_linear(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """
    ``linear(x)``, through oneDNN where :func:`onednn_applies`.

    Args:
        linear (nn.Linear): weight (C_out, C_in), bias (C_out,) or None.
        x (Tensor): (..., C_in), e.g. a (B, H, W, C_in) token map.
    Returns:
        Tensor (..., C_out), contiguous.
    """
    # A subclass (our CpuLinear and OneDNNLinear included) is called as it is: it chooses itself.
    if type(linear) is nn.Linear and onednn_applies(x) and linear.weight.dtype == x.dtype:
        return _onednn_linear(x, linear.weight, linear.bias)
    return linear(x)


class CpuLinearChoice(NamedTuple):
    """The CPU inference projections' kernel: ``kernel`` "onednn" or "mkl" (``F.linear``), and
    ``reason``, one line saying how it was decided (e.g. the measured ratio)."""

    kernel: str
    reason: str


def _requested(linear: Optional[str]) -> Tuple[str, str]:
    """The requested kernel and where the request came from (argument, environment, default)."""
    if linear is not None:
        source, value = "linear argument", linear
    elif os.environ.get(CPU_LINEAR_ENV):
        source, value = CPU_LINEAR_ENV, os.environ[CPU_LINEAR_ENV].strip().lower()
    else:
        return "auto", "default"
    if value not in CPU_LINEARS:
        from ..overrides import ConfigError  # a ValueError: one line at the command line

        raise ConfigError(f"{source}={value!r} is not a CPU linear kernel: use one of "
                         f"{', '.join(CPU_LINEARS)} (auto times both on this machine)")
    return value, source


def _seconds(product, rounds: int = 3) -> float:
    """The fastest of ``rounds`` calls of ``product``, after one call to warm it up."""
    product()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=None)
def _measured_speedup(shapes: Tuple[Tuple[int, int], ...], threads: int) -> float:
    """MKL's time over oneDNN's for the (C_in, C_out) projections ``shapes`` at
    :data:`_TIMED_TOKENS` fp32 tokens, summed over the shapes (>1: oneDNN is faster); once per
    process and thread count."""
    del threads  # part of the cache key: the ranking can change with the thread count
    generator = torch.Generator().manual_seed(0)
    totals = {"mkl": 0.0, "onednn": 0.0}
    with torch.no_grad():
        for c_in, c_out in shapes:
            x = torch.randn(_TIMED_TOKENS, c_in, generator=generator)
            weight = torch.randn(c_out, c_in, generator=generator) * c_in ** -0.5
            bias = torch.zeros(c_out)
            kernels = {
                "mkl": lambda: F.linear(x, weight, bias),
                "onednn": lambda: _onednn_linear(x, weight, bias),
            }
            for name, product in kernels.items():
                totals[name] += _seconds(product)
    return totals["mkl"] / totals["onednn"]


def choose_cpu_linear(shapes: Sequence[Tuple[int, int]], linear: Optional[str] = None
                      ) -> CpuLinearChoice:
    """
    The kernel of the CPU inference projections: the ``linear`` argument, else
    ``HPVIT_CPU_LINEAR``, else "auto": both kernels timed on ``shapes`` on this machine (once
    per process; the faster one wins).

    Args:
        shapes: the (C_in, C_out) of the projections, e.g. ViT-B's (768, 2304), (768, 768),
            (768, 3072), (3072, 768).
        linear (str or None): "auto", "onednn" or "mkl"; None reads the environment.
    Returns:
        :class:`CpuLinearChoice`. "mkl" wherever oneDNN's linear does not exist in this build.
    Raises:
        ConfigError: an unknown kernel name (the line names the argument or variable).
    """
    value, source = _requested(linear)
    if not (_ONEDNN_LINEAR and torch.backends.mkldnn.enabled):
        return CpuLinearChoice("mkl", "oneDNN's linear is not available in this PyTorch build")
    if value != "auto":
        return CpuLinearChoice(value, f"{source}={value}")
    ratio = _measured_speedup(tuple(sorted(set(shapes))), torch.get_num_threads())
    kernel = "onednn" if ratio > 1.0 else "mkl"
    return CpuLinearChoice(kernel, f"auto: oneDNN's linear {ratio:.2f}x F.linear's speed on the "
                                   f"blocks' projections, {torch.get_num_threads()} threads")


@functools.lru_cache(maxsize=None)
def _preferred(shape: Tuple[int, int], threads: int, requested: Optional[str]) -> str:
    """:func:`preferred_cpu_linear`, cached per shape, thread count and ``HPVIT_CPU_LINEAR``;
    logs the choice once."""
    del threads, requested  # cache keys: choose_cpu_linear reads both itself
    choice = choose_cpu_linear([shape])
    logger.info("HPViT CPU inference: %s projections through %s (%s)", "x".join(map(str, shape)),
                "oneDNN's linear" if choice.kernel == "onednn" else "F.linear (MKL)", choice.reason)
    return choice.kernel


def preferred_cpu_linear(in_features: int, out_features: int) -> str:
    """The faster CPU inference kernel for a (in_features -> out_features) projection on this
    machine, "onednn" or "mkl" (``HPVIT_CPU_LINEAR`` fixes it); timed once per process, shape and
    thread count (:func:`choose_cpu_linear`)."""
    return _preferred((in_features, out_features), torch.get_num_threads(),
                      os.environ.get(CPU_LINEAR_ENV))


class CpuLinear(nn.Linear):
    """
    An ``nn.Linear`` (same parameters and state dict) that at CPU fp32 inference
    (:func:`onednn_applies`) runs on :meth:`cpu_kernel`, by default the faster kernel for its
    shape on this machine (:func:`preferred_cpu_linear`), and everywhere else is ``nn.Linear``.
    x: (..., in_features) -> (..., out_features).
    """

    kernel: Optional[str] = None  # "onednn" or "mkl" fixes it; None: the faster for the shape

    def cpu_kernel(self) -> str:
        """The kernel of this projection at CPU fp32 inference, "onednn" or "mkl"."""
        return self.kernel or preferred_cpu_linear(self.in_features, self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if onednn_applies(x) and self.weight.dtype == x.dtype and self.cpu_kernel() == "onednn":
            return _onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)


class OneDNNLinear(CpuLinear):
    """A :class:`CpuLinear` on oneDNN's linear wherever it applies (what
    ``optimize_for_cpu_inference`` makes the projections when oneDNN is the faster)."""

    kernel = "onednn"
