"""BatchNorm with batch statistics synchronized across ranks, as nn.SyncBatchNorm computes it, on any device and
backend torch.distributed runs (gloo on CPU too, where nn.SyncBatchNorm refuses).

Forward: each rank's (count, mean, M2) per channel are gathered over the norm's process group (one all_gather)
and merged with Chan's rule; every rank normalizes with the global mean and biased variance and updates its
running statistics with the global unbiased variance. Backward: the two per-channel sums (sum dy, sum dy * xhat)
are all-reduced (one collective) and the input gradient uses the global ones; the affine parameters' gradients
stay local, as nn.SyncBatchNorm's, for DDP to reduce. Statistics are fp32 whatever the activations' dtype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["sync_needed", "sync_batch_norm", "merge_moments"]


def sync_needed(bn: nn.Module) -> bool:
    """nn.SyncBatchNorm's rule: synchronize in training with batch statistics when torch.distributed is
    initialized and the norm's process group has more than one rank."""
    if not (isinstance(bn, nn.SyncBatchNorm) and bn.training):
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(bn.process_group or dist.group.WORLD) > 1


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2: torch.Tensor):
    """Chan's parallel merge of per-rank (count (R, 1), mean (R, C), M2 (R, C)): (total, mean, biased var)."""
    total = counts.sum()
    mean = (counts * means).sum(0) / total
    m2_total = (m2 + counts * (means - mean) ** 2).sum(0)
    return total, mean, m2_total / total


def _channel_view(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, bias, running_mean, running_var, momentum, eps, group):
        c = y.shape[1]
        yf = y.float()
        var, mean = torch.var_mean(yf, dim=(0, 2, 3), correction=0)
        count = yf.new_full((1,), y.numel() // c)
        local = torch.cat((count, mean, var * count))
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
        dist.all_gather(gathered, local, group=group)
        stats = torch.stack(gathered)
        total, mean, var = merge_moments(stats[:, :1], stats[:, 1:1 + c], stats[:, 1 + c:])
        if total <= 1:
            raise ValueError(f"SyncBatchNorm needs more than one value per channel across ranks, got {int(total)}")
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            with torch.no_grad():
                unbiased = var * (total / (total - 1))
                running_mean.mul_(1 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
        xhat = (yf - _channel_view(mean)) * _channel_view(invstd)
        out = xhat * _channel_view(weight.float()) + _channel_view(bias.float())
        ctx.save_for_backward(y, weight, mean, invstd)
        ctx.total, ctx.group = total, group
        return out.to(y.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        y, weight, mean, invstd = ctx.saved_tensors
        go = grad_out.float()
        xhat = (y.float() - _channel_view(mean)) * _channel_view(invstd)
        sum_dy, sum_dy_xhat = go.sum((0, 2, 3)), (go * xhat).sum((0, 2, 3))
        grad_weight, grad_bias = sum_dy_xhat.clone(), sum_dy.clone()  # local, as nn.SyncBatchNorm's
        combined = torch.cat((sum_dy, sum_dy_xhat))
        dist.all_reduce(combined, group=ctx.group)
        g_sum_dy, g_sum_dy_xhat = combined.split(sum_dy.shape[0])
        grad_y = _channel_view(weight.float() * invstd) * (
            go - _channel_view(g_sum_dy / ctx.total) - xhat * _channel_view(g_sum_dy_xhat / ctx.total))
        return (grad_y.to(y.dtype), grad_weight.to(weight.dtype), grad_bias.to(weight.dtype), None, None, None, None,
                None)


def sync_batch_norm(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor | None,
                    running_var: torch.Tensor | None, momentum: float, eps: float, process_group=None) -> torch.Tensor:
    """Training-mode BatchNorm of y (N, C, H, W) over the batch of every rank in process_group (default: WORLD);
    running statistics (when given) updated in place with momentum."""
    group = process_group or dist.group.WORLD
    return _SyncBatchNorm.apply(y, weight, bias, running_mean, running_var, momentum, eps, group)
