"""
detectron2's ViT attention and block, with the attention kernel chosen by one switch.

:class:`Attention` and :class:`Block` subclass detectron2's (same parameters, names, shapes and
initialisation; HPViT adopts the modules detectron2's ``ViT.__init__`` builds). The one
difference in structure is that the attention partitions its input into windows itself, so that
it can project only the real tokens. Following timm's ``fused_attn`` idiom, ``Attention.fused_attn``
chooses the kernel:

- ``True`` (default): ``F.scaled_dot_product_attention``, the decomposed relative positions
  passed as its additive bias. On large maps the queries are taken in chunks of rows, each with
  its own slice of the bias, so the full (B, heads, N, N) bias is never in memory
  (:data:`BIAS_CHUNK_BYTES` per chunk). Window attention projects only the real tokens: ``qkv``
  runs before the map is padded to whole windows, the padded tokens get the ``qkv`` bias (what
  detectron2's zero padding of the normalised input gives them), and the output projection runs
  after the windows are merged and cropped. q, k and v are strided views of the qkv output.
- ``False``: detectron2's ``window_partition``, ``Attention.forward`` and ``window_unpartition``
  exactly, for reference.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from detectron2.modeling.backbone import vit as d2_vit
from detectron2.modeling.backbone.utils import get_rel_pos, window_partition, window_unpartition

__all__ = [
    "Attention",
    "BIAS_CHUNK_BYTES",
    "Block",
    "adopt_block",
    "decomposed_rel_pos_bias",
    "merge_windows",
    "split_windows",
]


# Largest relative-position bias built at once (bytes): the queries are chunked so that a chunk's
# (B, heads, rows * W, N) bias fits in it. Smaller chunks cost speed (SDPA is slower on few
# queries); docs/benchmarks.md has the measurement behind this value.
BIAS_CHUNK_BYTES = 128 * 2**20


def split_windows(
    x: torch.Tensor, window_size: int, fill: Optional[torch.Tensor] = None
) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """
    Cut a channels-last map into non-overlapping windows, padding at the bottom and right.

    Args:
        x (Tensor): (B, H, W, C).
        window_size (int): window side ws.
        fill (Tensor or None): (C,) value given to padded tokens; zeros if None.
    Returns:
        windows (Tensor): (B * Hp/ws * Wp/ws, ws * ws, C), row-major windows of row-major tokens.
        (Hp, Wp): the padded size, multiples of ws.
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
    """
    Inverse of :func:`split_windows`, cropped back to the unpadded map.

    Args:
        windows (Tensor): (B * Hp/ws * Wp/ws, ws * ws, C).
        window_size (int): window side ws.
        padded_hw, hw (tuple[int, int]): (Hp, Wp) and (H, W).
    Returns:
        Tensor (B, H, W, C); a view (not a copy) when there was padding.
    """
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
    """
    Decomposed relative-position term of MViTv2/ViTDet as an additive attention bias.

    Args:
        q (Tensor): unscaled queries, (..., q_h * q_w, C); any leading dims (e.g. B, heads).
        rel_pos_h, rel_pos_w (Tensor): tables (Lh, C) and (Lw, C), resized to the sizes if needed.
        q_size, k_size (tuple[int, int]): (h, w) of the query and key maps.
    Returns:
        Tensor (..., q_h * q_w, k_h * k_w), in q's dtype.
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    lead = q.shape[:-2]
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, q_size, k_size)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.view(*lead, q_h * q_w, k_h * k_w)


def rel_pos_terms(q: torch.Tensor, rel_pos_h: torch.Tensor, rel_pos_w: torch.Tensor,
                  q_size: Tuple[int, int], k_size: Tuple[int, int]) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    The two small factors of the decomposed relative-position bias.

    Args:
        q (Tensor): unscaled queries, (..., q_h * q_w, C).
        rel_pos_h, rel_pos_w (Tensor): tables (Lh, C) and (Lw, C), resized to the sizes if needed.
        q_size, k_size (tuple[int, int]): (h, w) of the query and key maps.
    Returns:
        (Tensor, Tensor): (B', q_h, q_w, k_h) and (B', q_h, q_w, k_w), B' the product of q's
        leading dims, contiguous and in q's dtype; the bias is their broadcast sum.
    """
    (q_h, q_w), (k_h, k_w) = q_size, k_size
    r_q = q.reshape(-1, q_h, q_w, q.shape[-1])
    # einsum returns permuted strides; the (small) terms are made contiguous so that the (large)
    # sum is laid out row-major and its reshape is a view, not a copy.
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, get_rel_pos(q_h, k_h, rel_pos_h).to(q.dtype))
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, get_rel_pos(q_w, k_w, rel_pos_w).to(q.dtype))
    return rel_h.contiguous(), rel_w.contiguous()


def sdpa_with_rel_pos(q, k, v, rel_pos_h, rel_pos_w, side: Tuple[int, int], scale: float,
                      chunk_bytes: Optional[int] = None) -> torch.Tensor:
    """
    SDPA with the decomposed relative-position bias, the queries in chunks of whole rows so that
    no chunk's bias exceeds ``chunk_bytes`` (default :data:`BIAS_CHUNK_BYTES`).

    Args:
        q, k, v (Tensor): (batch, heads, N, C) with N = h * w tokens of a map of size ``side``.
    Returns:
        Tensor (batch, heads, N, C).
    """
    h, w = side
    n = h * w
    budget = BIAS_CHUNK_BYTES if chunk_bytes is None else chunk_bytes
    row_bytes = q.shape[0] * q.shape[1] * w * n * q.element_size()
    rows = max(1, budget // row_bytes)
    if rows >= h:
        bias = decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, side, side)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
    # The two small terms, (batch * heads, h, w, h) and (..., w), for all queries at once; only
    # their (large) sum is built chunk by chunk.
    rel_h, rel_w = rel_pos_terms(q, rel_pos_h, rel_pos_w, side, side)
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # once, not once per chunk
    lead = q.shape[:2]
    out = q.new_empty(*lead, n, v.shape[-1])
    for r0 in range(0, h, rows):
        r1 = min(h, r0 + rows)
        bias = rel_h[:, r0:r1, :, :, None] + rel_w[:, r0:r1, :, None, :]
        bias = bias.view(*lead, (r1 - r0) * w, n)
        out[:, :, r0 * w:r1 * w] = F.scaled_dot_product_attention(
            q[:, :, r0 * w:r1 * w], k, v, attn_mask=bias, scale=scale)
    return out


class Attention(d2_vit.Attention):
    """
    detectron2's ``Attention`` over a whole map, partitioned into windows by the attention itself.
    ``fused_attn`` (instance or class attribute) chooses the kernel (see the module docstring).
    """

    fused_attn: bool = True

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        """
        Args:
            x (Tensor): (B, H, W, C), the normalised map.
            window_size (int): 0 for global attention, else attention within ws x ws windows of
                the map zero-padded to whole windows (detectron2's ``window_partition``).
        Returns:
            Tensor (B, H, W, C).
        """
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
        # (3, batch, heads, tokens, head_dim), strided views of the qkv output
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
    """detectron2's ``Block`` whose :class:`Attention` takes the window size. x: (B, H, W, C).
    Built with detectron2's ``Block`` arguments plus ``fused_attn``, or from a block detectron2
    built (:func:`adopt_block`)."""

    def __init__(self, *args, fused_attn: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        adopt_block(self, fused_attn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), self.window_size))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_residual_block:
            x = self.residual(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
        return x


def adopt_block(block: d2_vit.Block, fused_attn: bool = True) -> Block:
    """
    Make a detectron2 ``Block`` (e.g. one ``ViT.__init__`` built) a :class:`Block` with an
    :class:`Attention` of kernel ``fused_attn``, in place: the modules, parameters and state-dict
    keys stay the ones detectron2 built, only their forwards change.
    """
    if not isinstance(block, Block):
        block.__class__ = Block
    if not isinstance(block.attn, Attention):
        block.attn.__class__ = Attention
    block.attn.fused_attn = fused_attn
    return block
