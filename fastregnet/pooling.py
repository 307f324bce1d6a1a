"""The classifier head's global pooling, by timm's names: "avg" (torchvision's nn.AdaptiveAvgPool2d, the default),
"max", "avgmax" (the mean of the two), "catavgmax" (both, concatenated: twice the features) and "" (no pooling:
the head returns the feature map, for use with num_classes=0)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["POOL_TYPES", "global_pool", "pooled_features", "AdaptiveAvgMaxPool2d", "AdaptiveCatAvgMaxPool2d"]

POOL_TYPES = ("avg", "max", "avgmax", "catavgmax", "")


class AdaptiveAvgMaxPool2d(nn.Module):
    """0.5 * (global average + global max), (N, C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (nn.functional.adaptive_avg_pool2d(x, 1) + nn.functional.adaptive_max_pool2d(x, 1))


class AdaptiveCatAvgMaxPool2d(nn.Module):
    """Global average and global max concatenated on channels, (N, 2C, 1, 1)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((nn.functional.adaptive_avg_pool2d(x, 1), nn.functional.adaptive_max_pool2d(x, 1)), 1)


def _check(pool_type: str) -> str:
    if not isinstance(pool_type, str) or pool_type not in POOL_TYPES:
        raise ValueError(f"global_pool must be one of {', '.join(repr(p) for p in POOL_TYPES)}, got {pool_type!r}")
    return pool_type


def global_pool(pool_type: str) -> nn.Module:
    """The pooling module for a pool type ("" gives nn.Identity)."""
    return {"avg": lambda: nn.AdaptiveAvgPool2d((1, 1)), "max": lambda: nn.AdaptiveMaxPool2d((1, 1)),
            "avgmax": AdaptiveAvgMaxPool2d, "catavgmax": AdaptiveCatAvgMaxPool2d, "": nn.Identity}[_check(pool_type)]()


def pooled_features(pool_type: str, num_features: int) -> int:
    """Features the classifier sees after pooling num_features channels."""
    return 2 * num_features if _check(pool_type) == "catavgmax" else num_features
