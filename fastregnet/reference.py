"""The pure-PyTorch version of every fused op: the fallback path (cuDNN / oneDNN) and the test oracle in one.

Each `<op>_ref` has the same signature and outputs as the Triton-backed op in `fastregnet.ops`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["fold_bn", "conv_bias_act_ref", "conv_bn_act_train_ref", "update_running_stats",
           "squeeze_excite_ref", "add_relu_ref"]


def fold_bn(weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor, running_mean: torch.Tensor,
            running_var: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding bias-free conv2d: returns (weight', bias').

    BN(conv(x, W)) = conv(x, W * s) + (beta - mean * s), with s = gamma / sqrt(var + eps), per output channel.
    Computed in float32 at least, then cast back to the weight's dtype. It runs on every eval call (nothing is
    cached), so it is written as few PyTorch ops as possible: casts only where a dtype differs.
    """
    dtype = torch.promote_types(weight.dtype, torch.float32)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t if t.dtype == dtype else t.to(dtype)

    scale = torch.rsqrt(cast(running_var) + eps) * cast(bn_weight)
    w = cast(weight) * scale.reshape(-1, 1, 1, 1)
    b = torch.addcmul(cast(bn_bias), cast(running_mean), scale, value=-1)
    if dtype == weight.dtype:
        return w, b
    return w.to(weight.dtype), b.to(weight.dtype)


def conv_bias_act_ref(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int,
                      relu: bool) -> torch.Tensor:
    """Eval-mode conv + folded BN (+ ReLU): relu(conv2d(x, W', b', stride, padding=k//2, groups))."""
    y = F.conv2d(x, weight, bias, stride, weight.shape[-1] // 2, 1, groups)
    # in place when no graph needs y (not while jit-tracing: its check re-traces under no_grad)
    return F.relu(y, inplace=not (y.requires_grad or torch.jit.is_tracing())) if relu else y


def conv_bn_act_train_ref(x: torch.Tensor, weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                          running_mean: torch.Tensor | None, running_var: torch.Tensor | None, momentum: float,
                          eps: float, stride: int, groups: int, relu: bool) -> torch.Tensor:
    """Train-mode conv + BatchNorm (batch statistics; running stats updated in place as nn.BatchNorm2d does)."""
    y = F.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, groups)
    y = F.batch_norm(y, running_mean, running_var, bn_weight, bn_bias, True, momentum, eps)
    return F.relu(y, inplace=True) if relu else y


@torch.no_grad()
def update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, batch_mean: torch.Tensor,
                         batch_var: torch.Tensor, count: int, momentum: float) -> None:
    """nn.BatchNorm2d's running-statistics update from a batch's mean and biased variance over `count` values:
    r = (1 - momentum) * r + momentum * batch, with the unbiased variance var * n / (n - 1) for running_var."""
    unbiased = batch_var * (count / max(count - 1, 1))
    running_mean.mul_(1 - momentum).add_(batch_mean.to(running_mean.dtype), alpha=momentum)
    running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)


def squeeze_excite_ref(x: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                       fc2_bias: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(fc2(relu(fc1(mean_hw(x))))) with 1x1-conv weights, as torchvision.ops.SqueezeExcitation."""
    s = F.adaptive_avg_pool2d(x, 1)
    s = F.relu(F.conv2d(s, fc1_weight, fc1_bias), inplace=True)
    s = torch.sigmoid(F.conv2d(s, fc2_weight, fc2_bias))
    return x * s


def add_relu_ref(y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """The block's output: relu(y + shortcut)."""
    out = y + shortcut
    return F.relu(out, inplace=True)
