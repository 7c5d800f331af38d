"""detectron2's ViT attention and block, with attention computed by PyTorch's fused kernel."""
import torch
import torch.nn.functional as F
from detectron2.modeling.backbone import vit as d2_vit
from detectron2.modeling.backbone.utils import get_rel_pos

__all__ = ["Attention", "Block", "decomposed_rel_pos_bias"]


def decomposed_rel_pos_bias(q, rel_pos_h, rel_pos_w, q_size, k_size):
    """
    Decomposed relative-position term of MViTv2/ViTDet as an additive attention bias.

    Args:
        q (Tensor): unscaled queries, (B, q_h * q_w, C).
        rel_pos_h, rel_pos_w (Tensor): tables (Lh, C) and (Lw, C), resized to the sizes if needed.
        q_size, k_size (tuple[int, int]): (h, w) of the query and key maps.
    Returns:
        Tensor (B, q_h * q_w, k_h * k_w).
    """
    q_h, q_w = q_size
    k_h, k_w = k_size
    Rh = get_rel_pos(q_h, k_h, rel_pos_h)
    Rw = get_rel_pos(q_w, k_w, rel_pos_w)
    r_q = q.reshape(q.shape[0], q_h, q_w, -1)
    rel_h = torch.einsum("bhwc,hkc->bhwk", r_q, Rh)
    rel_w = torch.einsum("bhwc,wkc->bhwk", r_q, Rw)
    bias = rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]
    return bias.reshape(q.shape[0], q_h * q_w, k_h * k_w)


class Attention(d2_vit.Attention):
    """Same parameters as detectron2's; forward uses scaled_dot_product_attention (faster, less memory)."""

    def forward(self, x):
        """x: (B, H, W, C) -> (B, H, W, C)."""
        B, H, W, _ = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each (B, nHeads, H*W, head_dim)
        bias = None
        if self.use_rel_pos:
            q_flat = q.reshape(B * self.num_heads, H * W, -1)
            bias = decomposed_rel_pos_bias(q_flat, self.rel_pos_h, self.rel_pos_w, (H, W), (H, W))
            bias = bias.view(B, self.num_heads, H * W, H * W).to(q.dtype)
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        x = x.transpose(1, 2).reshape(B, H, W, -1)
        return self.proj(x)


class Block(d2_vit.Block):
    """detectron2's ViT block with the attention above; parameter names and shapes are unchanged."""

    def __init__(self, dim, num_heads, qkv_bias=True, use_rel_pos=False, rel_pos_zero_init=True,
                 window_size=0, input_size=None, **kwargs):
        super().__init__(dim, num_heads, qkv_bias=qkv_bias, use_rel_pos=use_rel_pos,
                         rel_pos_zero_init=rel_pos_zero_init, window_size=window_size,
                         input_size=input_size, **kwargs)
        self.attn = Attention(
            dim,
            num_heads=num_heads,
            qkv_bias=qkv_bias,
            use_rel_pos=use_rel_pos,
            rel_pos_zero_init=rel_pos_zero_init,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
