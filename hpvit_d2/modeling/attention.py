"""
detectron2's ViT attention and block, the kernel chosen by ``Attention.fused_attn`` (timm's idiom);
at inference the block takes large maps in row bands (:class:`Block`).

Same parameters, names and initialisation as detectron2's; the attention partitions its input into
windows itself, so that it projects only the real tokens.

- ``fused_attn=True``: ``F.scaled_dot_product_attention`` with the decomposed relative positions as
  its additive bias, the queries in chunks of rows on large maps so that the (B, heads, N, N) bias
  never exists whole. ``qkv`` runs before the padding to whole windows (padded tokens get the
  ``qkv`` bias, what detectron2's zero padding of the normalised input gives them) and ``proj``
  after the crop. Training on the CPU, where SDPA with a bias that carries a gradient falls back
  to its math kernel, the same product is written out (:func:`attend_with_bias`).
- ``fused_attn=False``: detectron2's ``window_partition``, ``Attention.forward`` and
  ``window_unpartition``, for reference.
"""
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from detectron2.modeling.backbone import vit as d2_vit
from detectron2.modeling.backbone.utils import get_rel_pos, window_partition, window_unpartition

import hpvit_d2.modeling.bands as bands  # read at call time: the budget can be changed
from .projection import CpuLinear
from .retype import retype

__all__ = [
    "Attention",
    "BIAS_CHUNK_BYTES",
    "Block",
    "adopt_block",
    "attend_with_bias",
    "decomposed_rel_pos_bias",
    "merge_windows",
    "split_windows",
]

# Largest (B, heads, rows * W, N) bias chunk built at once, in bytes; docs/benchmarks.md
# ("Speed and memory") has the measurement behind it.
BIAS_CHUNK_BYTES = 128 * 2**20


def split_windows(
    x: torch.Tensor, window_size: int, fill: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """
    (B, H, W, C) -> windows (B * Hp/ws * Wp/ws, ws * ws, C) and (Hp, Wp), the map padded at the
    bottom and right to multiples of ws with ``fill`` (C,) (zeros if None).
    """
    B, H, W, C = x.shape
    ws = window_size
    Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
    if (Hp, Wp) != (H, W):
        padded = x.new_empty(B, Hp, Wp, C)
        padded[:, :H, :W] = x
        value = 0.0 if fill is None else fill.to(x.dtype)
        padded[:, H:] = value
        padded[:, :H, W:] = value
        x = padded
    windows = x.view(B, Hp // ws, ws, Wp // ws, ws, C).transpose(2, 3)
    return windows.reshape(-1, ws * ws, C), (Hp, Wp)


def merge_windows(
    windows: torch.Tensor, window_size: int, padded_hw: Tuple[int, int], hw: Tuple[int, int]
) -> torch.Tensor:
    """Inverse of :func:`split_windows`: (B * Hp/ws * Wp/ws, ws * ws, C) -> (B, H, W, C), cropped
    (a view) when there was padding."""
    ws = window_size
    (Hp, Wp), (H, W) = padded_hw, hw
    nh, nw = Hp // ws, Wp // ws
    C = windows.shape[-1]
    x = windows.view(-1, nh, nw, ws, ws, C).transpose(2, 3).reshape(-1, Hp, Wp, C)
    return x[:, :H, :W] if (Hp, Wp) != (H, W) else x


def decomposed_rel_pos_bias(
    q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor, q_size: Tuple[int, int],
    k_size: Tuple[int, int],
) -> torch.Tensor:
    """MViTv2/ViTDet's decomposed relative positions as an additive attention bias: unscaled
    queries (..., q_h * q_w, C), tables (Lh, C) and (Lw, C) -> (..., q_h * q_w, k_h * k_w)."""
    q_h, q_w = q_size
    k_h, k_w = k_size
    lead = q.shape[:-2]
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.view(*lead, q_h * q_w, k_h * k_w)


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                  q_size: Tuple[int, int], k_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """The bias's two factors, (B', q_h, q_w, k_h) and (B', q_h, q_w, k_w) with B' the product of
    q's leading dims; the bias is their broadcast sum."""
    (q_h, q_w), (k_h, k_w) = q_size, k_size
    r_q = q.reshape(-1, q_h, q_w, q.shape[-1])
    # Contiguous (einsum returns permuted strides), so that the large sum's reshape is a view.
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype))
    return rel_h.contiguous(), rel_w.contiguous()


def attend_with_bias(q, k, v, bias, scale: float) -> torch.Tensor:
    """
    softmax(q k^T * scale + bias) v for (..., N, C) queries, (..., M, C) keys and values and a
    (..., N, M) additive bias. ``F.scaled_dot_product_attention``, except when the bias carries a
    gradient on the CPU (training): there SDPA falls back to its math kernel, which also guards
    every row against being fully masked (``isneginf``, ``all``, ``where`` on the whole score
    matrix), so the product is written out instead, with the scores scaled and biased in place.
    """
    if q.is_cuda or not (bias.requires_grad and torch.is_grad_enabled()):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    scores = torch.matmul(q, k.transpose(-2, -1)).mul_(scale).add_(bias)
    return torch.matmul(scores.softmax(-1), v)


def sdpa_with_rel_pos(q, k, v, rel_pos_h, rel_pos_w, side: Tuple[int, int], scale: float,
                      chunk_bytes: Optional[int] = None) -> torch.Tensor:
    """SDPA with the decomposed relative-position bias, the queries in chunks of whole rows whose
    bias fits in ``chunk_bytes`` (default :data:`BIAS_CHUNK_BYTES`). q, k, v: (batch, heads, h * w,
    C) -> (batch, heads, h * w, C)."""
    h, w = side
    n = h * w
    budget = BIAS_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    row_bytes = q.shape[0] * q.shape[1] * w * n * q.element_size()
    rows = max(1, budget // row_bytes)
    if rows >= h:
        bias = decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, side, side)
        return attend_with_bias(q, k, v, bias, scale)
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, side, side)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # once, not once per chunk
    lead = q.shape[:2]
    out = q.new_empty(*lead, n, v.shape[-1])
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        bias = rel_h[:, r0:r1, :, :, None] + rel_w[:, r0:r1, :, None, :]
        bias = bias.view(*lead, (r1 - r0) * w, n)
        out[:, :, r0 * w:r1 * w] = attend_with_bias(q[:, :, r0 * w:r1 * w], k, v, bias, scale)
    return out


class Attention(d2_vit.Attention):
    """detectron2's ``Attention`` over a whole map, split into windows by itself; ``fused_attn``
    chooses the kernel (module docstring)."""

    fused_attn: bool = True

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, H, W, C); global attention for ``window_size`` 0."""
        if not self.fused_attn:
            if window_size == 0:
                return super().forward(x)
            windows, pad_hw = window_partition(x, window_size)
            return window_unpartition(super().forward(windows), window_size, pad_hw, x.shape[1:3])
        B, H, W, C = x.shape
        qkv = self.qkv(x)  # (B, H, W, 3C)
        if window_size > 0:
            qkv, padded_hw = split_windows(qkv, window_size, fill=self.qkv.bias)
            side = (window_size, window_size)
        else:
            qkv = qkv.reshape(B, H * W, 3 * C)
            side = (H, W)
        batch, tokens = qkv.shape[:2]
        # each (batch, heads, tokens, head_dim), strided views of the qkv output
        q, k, v = qkv.view(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        if self.use_rel_pos:
            out = sdpa_with_rel_pos(q, k, v, self.rel_pos_h, self.rel_pos_w, side, self.scale)
        else:
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(batch, tokens, C)
        if window_size > 0:
            out = merge_windows(out, window_size, padded_hw, (H, W))
        else:
            out = out.view(B, H, W, C)
        return self.proj(out)


class Block(d2_vit.Block):
    """
    detectron2's ``Block`` whose :class:`Attention` takes the window size. x: (B, H, W, C).

    At inference (no autograd, eval mode, not traced or compiled), a map of more than
    ``bands.INFERENCE_BAND_TOKENS`` tokens goes through the block in row bands, so that its
    (tokens, 3C) qkv and (tokens, 4C) MLP activations exist for one band at a time: a window block
    takes bands of whole window rows through both branches, a global block attends over the whole
    map and takes its MLP in bands. The output is the same. With ``inplace`` (as
    ``nn.ReLU(inplace=True)``; ``optimize_for_cpu_inference`` sets it, since HPViT's forward owns
    every map it passes to a block) the banded result is written into the input instead of a copy.
    """

    inplace: bool = False

    def __init__(self, *args, fused_attn: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        adopt_block(self, fused_attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._banded(x):
            return self._forward_in_bands(x)
        x = x + self.drop_path(self.attn(self.norm1(x), self.window_size))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x

    def _banded(self, x: torch.Tensor) -> bool:
        B, H, W, _ = x.shape
        return not (torch.is_grad_enabled() or self.training or torch.jit.is_tracing()
                    or torch.compiler.is_compiling() or B * H * W <= bands.INFERENCE_BAND_TOKENS)

    def _forward_in_bands(self, x: torch.Tensor) -> torch.Tensor:
        budget = bands.INFERENCE_BAND_TOKENS
        x = x if self.inplace else x.clone()
        ws = self.window_size
        if ws > 0:
            for band in bands.row_bands(x, budget, ws):  # views of x: no copy
                band += self.attn(self.norm1(band), ws)
                band += self.mlp(self.norm2(band))
        else:
            x += self.attn(self.norm1(x), 0)
            for band in bands.row_bands(x, budget):
                band += self.mlp(self.norm2(band))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x

    def projections(self) -> Tuple[nn.Linear, nn.Linear, nn.Linear, nn.Linear]:
        """The token projections: attention ``qkv`` and ``proj``, MLP ``fc1`` and ``fc2``."""
        return (self.attn.qkv, self.attn.proj, self.mlp.fc1, self.mlp.fc2)


def adopt_block(block: d2_vit.Block, fused_attn: bool = True) -> Block:
    """A detectron2 ``Block`` (one ``ViT.__init__`` built) as a :class:`Block` with an
    :class:`Attention` of kernel ``fused_attn`` and :class:`~.projection.CpuLinear` projections
    (the faster kernel at CPU inference), in place (:func:`~.retype.retype`)."""
    if not isinstance(block, Block):
        retype(block, Block)
    if not isinstance(block.attn, Attention):
        retype(block.attn, Attention)
    block.attn.fused_attn = fused_attn
    for projection in block.projections():
        if type(projection) is nn.Linear:
            retype(projection, CpuLinear)
    return block
