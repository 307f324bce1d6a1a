"""Stochastic depth (timm's drop_path, torchvision's StochasticDepth in "row" mode): in training, each sample's
residual branch is dropped with probability `rate` and the kept ones are scaled by 1 / (1 - rate); in eval it is the
identity. Per-block rates follow timm's linear rule (`drop_path_rates`)."""

from __future__ import annotations

import torch

__all__ = ["drop_path", "drop_path_rates", "keep_scale"]


def drop_path_rates(drop_path_rate: float, depths: tuple[int, ...]) -> list[list[float]]:
    """timm's linear rule: block i of all sum(depths) blocks gets drop_path_rate * i / (blocks - 1), per stage."""
    total = sum(depths)
    rates = [drop_path_rate * i / (total - 1) if total > 1 else 0.0 for i in range(total)]
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def keep_scale(batch: int, rate: float, like: torch.Tensor) -> torch.Tensor:
    """Per-sample factors (batch,): 0 for a dropped sample, 1 / (1 - rate) for a kept one, drawn from the global
    generator of like's device (so torch.manual_seed and checkpoint's RNG replay fix the mask)."""
    keep = 1.0 - rate
    scale = torch.empty(batch, device=like.device, dtype=like.dtype).bernoulli_(keep)
    return scale.div_(keep) if keep > 0.0 else scale


def drop_path(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """x with whole samples dropped (training, rate > 0), as timm's DropPath(scale_by_keep=True)."""
    if not training or rate == 0.0:
        return x
    return x * keep_scale(x.shape[0], rate, x).view(-1, *([1] * (x.dim() - 1)))
