"""
The model's position tables resized at run time: the absolute embedding to a token map, and the
relative-position tables to a length.

detectron2's ``get_abs_pos`` runs ``F.interpolate(mode="bicubic")`` on every forward and returns
a permuted map, slow on HPViT's 1/4 map. Bicubic interpolation is separable, so here the grid is
resized as ``A_h @ grid @ A_w^T`` with the 1-D weights read off ``F.interpolate`` itself: the same
values to float rounding, written as a row-major (1, H, W, C) map.
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F

__all__ = ["bicubic_matrix", "resize_rel_pos", "resized_abs_pos"]


def bicubic_matrix(src: int, dst: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(dst, src) ``A`` with ``A @ v`` = ``v`` (src,) resized to dst by torch's bicubic."""
    eye = torch.eye(src, dtype=dtype, device=device).view(1, src, src, 1)  # src signals, one each
    return F.interpolate(eye, size=(dst, 1), mode="bicubic", align_corners=False)[0, :, :, 0].t()


def resized_abs_pos(abs_pos: torch.Tensor, has_cls_token: bool, hw: Tuple[int, int]) -> torch.Tensor:
    """detectron2's ``get_abs_pos(abs_pos, has_cls_token, hw)``: (1, [1 +] S * S, C) ->
    (1, H, W, C) row-major, in ``abs_pos``'s dtype (also under autocast)."""
    h, w = hw
    grid = abs_pos[:, 1:] if has_cls_token else abs_pos
    side = int(math.sqrt(grid.shape[1]))
    if side * side != grid.shape[1]:
        raise ValueError(f"the position embedding has {grid.shape[1]} entries, not a square grid")
    channels = grid.shape[2]
    if (side, side) == (h, w):
        return grid.reshape(1, h, w, channels)
    with torch.autocast(device_type=abs_pos.device.type, enabled=False):
        rows = bicubic_matrix(side, h, abs_pos.dtype, abs_pos.device)  # (H, S)
        cols = rows if w == h else bicubic_matrix(side, w, abs_pos.dtype, abs_pos.device)  # (W, S)
        tall = (rows @ grid.reshape(side, side * channels)).view(h, side, channels)  # (H, S, C)
        return torch.matmul(cols, tall).unsqueeze(0)  # (1, H, W, C)


def resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a relative-position table (L, C) -> (length, C), as detectron2's
    ``get_rel_pos`` does at run time."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.float().t()[None], size=length, mode="linear")
    return resized[0].t().to(table.dtype)
