"""BatchNorm with batch statistics synchronized across ranks, as nn.SyncBatchNorm computes it, on any device and
backend torch.distributed runs (gloo on CPU too, where nn.SyncBatchNorm refuses).

`RankStats` is the exchange, shared by both paths: forward, each rank's (count, mean, M2) per channel are
gathered over the norm's process group (one all_gather) and merged with Chan's rule, so every rank normalizes
with the global mean and biased variance and updates its running statistics with the global unbiased variance;
backward, the two per-channel sums (sum dy, sum dy * xhat) are all-reduced (one collective) and the input
gradient uses the global ones, while the affine parameters' gradients stay local, as nn.SyncBatchNorm's, for DDP
to reduce. The Triton path (`ops.conv_sync_bn_act_train`) calls it between the conv epilogue's statistics and
the BN apply, and between the backward's reduction and its data / weight grads; the PyTorch path
(`sync_batch_norm`) around a conv's output. Statistics are fp32 whatever the activations' dtype.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from .backend import on_tensor_device, refuse_double_backward
from .reference import update_running_stats

__all__ = ["sync_needed", "refuses_cpu", "RankStats", "merge_moments", "update_running", "sync_batch_norm", "TritonSyncConvBN"]


def sync_needed(bn: nn.Module) -> bool:
    """nn.SyncBatchNorm's rule: synchronize in training with batch statistics when torch.distributed is
    initialized and the norm's process group has more than one rank."""
    if not (isinstance(bn, nn.SyncBatchNorm) and bn.training):
        return False
    if not (dist.is_available() and dist.is_initialized()):
        return False
    return dist.get_world_size(bn.process_group or dist.group.WORLD) > 1


def refuses_cpu(bn: nn.Module) -> bool:
    """Whether nn.SyncBatchNorm.forward would refuse a CPU tensor: in training once torch.distributed is initialized,
    whatever the group's size (fastregnet's reference synchronizes CPU tensors over gloo instead)."""
    return (isinstance(bn, nn.SyncBatchNorm) and bn.training and dist.is_available()
            and dist.is_initialized())


def merge_moments(counts: torch.Tensor, means: torch.Tensor, m2: torch.Tensor):
    """Chan's parallel merge of per-rank (count (R, 1), mean (R, C), M2 (R, C)): (total, mean, biased var)."""
    total = counts.sum()
    mean = (counts * means).sum(0) / total
    m2_total = (m2 + counts * (means - mean) ** 2).sum(0)
    return total, mean, m2_total / total


class RankStats:
    """One synchronized BatchNorm call's exchanges over `group`; `total` is the global count after merge."""

    def __init__(self, group=None):
        self.group = group or dist.group.WORLD
        self.total = None

    def merge(self, mean: torch.Tensor, var: torch.Tensor, count: int, eps: float):
        """This rank's (mean, biased var) over `count` values per channel -> the global (mean, var, invstd)."""
        c = mean.shape[0]
        local = torch.cat((mean.new_full((1,), count), mean.float(), var.float() * count))
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(self.group))]
        dist.all_gather(gathered, local, group=self.group)
        stats = torch.stack(gathered)
        total, mean, var = merge_moments(stats[:, :1], stats[:, 1:1 + c], stats[:, 1 + c:])
        self.total = int(total.item())
        if self.total <= 1:
            raise ValueError(f"SyncBatchNorm needs more than one value per channel across ranks, got {self.total}")
        return mean, var, torch.rsqrt(var + eps)

    def reduce(self, sum_dy: torch.Tensor, sum_dy_xhat: torch.Tensor):
        """The backward's per-channel sums over every rank (one all_reduce)."""
        combined = torch.cat((sum_dy.float(), sum_dy_xhat.float()))
        dist.all_reduce(combined, group=self.group)
        return combined.split(sum_dy.shape[0])


def update_running(running_mean: torch.Tensor | None, running_var: torch.Tensor | None, mean: torch.Tensor,
                   var: torch.Tensor, total: int, momentum: float) -> None:
    """nn.SyncBatchNorm's running-statistics update from the global mean and biased var over `total` values
    (BatchNorm's update, `reference.update_running_stats`), when the norm tracks them."""
    if running_mean is not None and momentum:
        update_running_stats(running_mean, running_var, mean, var, total, momentum)


def _channel_view(v: torch.Tensor) -> torch.Tensor:
    return v.view(1, -1, 1, 1)


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, weight, bias, running_mean, running_var, momentum, eps, group):
        sync = RankStats(group)
        yf = y.float()
        var, mean = torch.var_mean(yf, dim=(0, 2, 3), correction=0)
        mean, var, invstd = sync.merge(mean, var, y.numel() // y.shape[1], eps)
        update_running(running_mean, running_var, mean, var, sync.total, momentum)
        xhat = (yf - _channel_view(mean)) * _channel_view(invstd)
        out = xhat * _channel_view(weight.float()) + _channel_view(bias.float())
        ctx.save_for_backward(y, weight, mean, invstd)
        ctx.sync = sync
        return out.to(y.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        y, weight, mean, invstd = ctx.saved_tensors
        go = grad_out.float()
        xhat = (y.float() - _channel_view(mean)) * _channel_view(invstd)
        sum_dy, sum_dy_xhat = go.sum((0, 2, 3)), (go * xhat).sum((0, 2, 3))
        g_sum_dy, g_sum_dy_xhat = ctx.sync.reduce(sum_dy, sum_dy_xhat)
        total = ctx.sync.total
        grad_y = _channel_view(weight.float() * invstd) * (
            go - _channel_view(g_sum_dy / total) - xhat * _channel_view(g_sum_dy_xhat / total))
        # the affine grads are this rank's own sums, as nn.SyncBatchNorm's (DDP reduces them)
        return (grad_y.to(y.dtype), sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype), None, None, None, None,
                None)


class TritonSyncConvBN(torch.autograd.Function):
    """conv (1x1 or grouped 3x3) + BN synchronized across ranks + optional ReLU on fastregnet's Triton kernels: the
    conv epilogue's statistics go through RankStats.merge before the apply, and the backward's reduction through
    RankStats.reduce before the data and weight grads. Used for convs a, b, c and the projection; the stem (a 3x3
    conv from 3 channels, PyTorch's conv on every path) goes through `sync_batch_norm`. (A Python autograd function
    rather than a custom op: the process group is not a type custom ops can take.)"""

    @staticmethod
    def forward(ctx, x, weight, gamma, beta, running_mean, running_var, momentum, eps, stride, groups, relu, group):
        from .kernels.grouped_conv import grouped_conv_train_fwd
        from .kernels.pointwise_conv import pointwise_conv_train_fwd

        sync = RankStats(group)
        grouped = weight.shape[-1] == 3
        with on_tensor_device(x):
            if grouped:
                out, y, mean, var, invstd = grouped_conv_train_fwd(x, weight, gamma, beta, eps, stride, groups, relu,
                                                                   sync=sync)
            else:
                out, y, mean, var, invstd = pointwise_conv_train_fwd(x, weight, gamma, beta, eps, stride, relu,
                                                                     sync=sync)
            update_running(running_mean, running_var, mean, var, sync.total, momentum)
        ctx.save_for_backward(x, weight, y, mean, invstd, gamma, beta)
        ctx.conf = (grouped, stride, groups, relu, sync)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        refuse_double_backward("conv_sync_bn_act_train")
        from .kernels.grouped_conv import grouped_conv_bwd
        from .kernels.pointwise_conv import pointwise_conv_bwd

        x, weight, y, mean, invstd, gamma, beta = ctx.saved_tensors
        grouped, stride, groups, relu, sync = ctx.conf
        with on_tensor_device(x):
            if grouped:
                gx, gw, dgamma, dbeta = grouped_conv_bwd(grad_out, x, weight, y, mean, invstd, gamma, beta, stride,
                                                         groups, relu, True, sync=sync)
            else:
                gx, gw, dgamma, dbeta, _, _ = pointwise_conv_bwd(grad_out, x, weight, y, None, mean, invstd, gamma,
                                                                 beta, stride, relu, sync=sync)
        return (gx, gw, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None, None, None, None, None, None, None)


def sync_batch_norm(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor | None,
                    running_var: torch.Tensor | None, momentum: float, eps: float, process_group=None) -> torch.Tensor:
    """Training-mode BatchNorm of y (N, C, H, W) over the batch of every rank in process_group (default: WORLD);
    running statistics (when given) updated in place with momentum."""
    return _SyncBatchNorm.apply(y, weight, bias, running_mean, running_var, momentum, eps, process_group)
