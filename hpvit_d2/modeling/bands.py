"""
A block taken over a token map in row bands, so that its large activations exist for one band at a
time. Window attention never crosses a row of windows and the MLP is per token, so a window
block's output over bands of whole window rows is its output over the map.
"""
from typing import Iterator

import torch

__all__ = ["INFERENCE_BAND_TOKENS", "RECOMPUTE_BAND_TOKENS", "row_bands"]

# Tokens per band, the two budgets side by side:
# training with recomputation: the activations backward rebuilds at once (HPViT.forward);
RECOMPUTE_BAND_TOKENS = 4096
# inference: the (tokens, 3C) qkv and (tokens, 4C) MLP activations (attention.Block).
INFERENCE_BAND_TOKENS = 8192


def row_bands(x: torch.Tensor, budget: int, unit: int = 1) -> Iterator[torch.Tensor]:
    """
    Views ``x[:, r0:r1]`` of a (B, H, W, C) map, top to bottom: each a multiple of ``unit`` rows
    (a window side, or 1) and at most ``budget`` tokens, but at least ``unit`` rows.
    """
    B, H, W, _ = x.shape
    rows = unit * max(1, budget // max(1, B * W * unit))
    for r0 in range(0, H, rows):
        yield x[:, r0:r0 + rows]
