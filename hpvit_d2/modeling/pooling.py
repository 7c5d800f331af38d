"""Pooling layers inserted between HPViT stages: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C)."""
import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["POOL_TYPES", "TokenPool", "check_pool_type"]

POOL_TYPES = ("conv", "avg", "max")


def check_pool_type(pool_type: str) -> None:
    if pool_type not in POOL_TYPES:
        raise ValueError(f"pool_type={pool_type!r} is unknown: use one of {POOL_TYPES}")


class TokenPool(nn.Module):
    """
    Halve a channels-last token map with a 2x2, stride-2 window.

    Odd sides are padded by one row/column that repeats the border, so the output side is
    ceil(side / 2) and every pooling type sees the same input.
    """

    def __init__(self, dim: int, pool_type: str = "conv"):
        """
        Args:
            dim (int): channels C, kept unchanged.
            pool_type (str): "conv" (learned 2x2 convolution, initialised to the average),
                "avg" or "max" (parameter-free).
        """
        super().__init__()
        check_pool_type(pool_type)
        self.pool_type = pool_type
        if pool_type == "conv":
            self.conv = nn.Conv2d(dim, dim, kernel_size=2, stride=2)
            self.reset_to_average()

    @torch.no_grad()
    def reset_to_average(self):
        """Set the convolution to compute the 2x2 mean of each channel (what "avg" computes)."""
        self.conv.weight.zero_()
        channels = torch.arange(self.conv.out_channels)
        self.conv.weight[channels, channels] = 0.25
        self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C) -> (B, ceil(H/2), ceil(W/2), C)."""
        x = x.permute(0, 3, 1, 2)
        pad_h, pad_w = x.shape[2] % 2, x.shape[3] % 2
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        if self.pool_type == "conv":
            x = self.conv(x)
        elif self.pool_type == "avg":
            x = F.avg_pool2d(x, kernel_size=2, stride=2)
        else:
            x = F.max_pool2d(x, kernel_size=2, stride=2)
        return x.permute(0, 2, 3, 1)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"
