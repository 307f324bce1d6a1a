"""Eval without kernels ("auto" on a CPU): the ops the modules would run, called directly.

A part or block whose children `fastregnet.fusion` allows (exact types, no hooks) and whose norms use their
running statistics runs here instead of through its children's `__call__`: F.conv2d, F.batch_norm with the
running statistics, relu_, SE's pool / fc / ReLU / sigmoid / scale, the residual add and ReLU -- the same
PyTorch ops, without nn.Module's dispatch and each module's Python forward (about 0.5 ms of a 14 ms batch-1
forward of regnet_y_400mf on the 2-core development machine, where the compute is oneDNN's either way).

Two deliberate differences, both the modules' math up to rounding:
- a BN is folded into its conv, per call from the live tensors, where the conv's output is large enough for that
  to pay (`ConvNormActivation.fold_pays`, a shape rule): one pass over the output fewer;
- SE's fc1 / fc2 (1x1 convs on a 1x1 map) run as F.linear: ATen sends a 1x1-map conv in channels_last to its
  slow reference conv (57-91 us at batch 8), a GEMM takes 10-17 us.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import is_frozen_batch_norm

__all__ = ["conv_norm_act", "squeeze_excite", "residual_block"]


def _norm(bn: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """An eval BN (running statistics) as nn.BatchNorm2d.forward computes it; a FrozenBatchNorm2d by its own
    forward."""
    if is_frozen_batch_norm(bn):
        return bn(y)
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def conv_norm_act(part: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ConvNormActivation in eval: conv, BN (folded into the conv where that pays), optional ReLU in place."""
    children = part._modules
    conv = children["0"]
    if part.fold_pays(x):
        weight, bias = part.folded()
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    else:
        y = _norm(children["1"], F.conv2d(x, conv.weight, None, conv.stride, conv.padding, conv.dilation,
                                         conv.groups))
    return torch.relu_(y) if "2" in children else y


def squeeze_excite(se: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchvision's SqueezeExcitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))), the fcs as GEMMs."""
    fc1, fc2 = se.fc1, se.fc2
    s = F.adaptive_avg_pool2d(x, 1).flatten(1)
    s = torch.relu_(F.linear(s, fc1.weight.flatten(1), fc1.bias))
    s = torch.sigmoid(F.linear(s, fc2.weight.flatten(1), fc2.bias))
    return x * s[:, :, None, None]


def residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ResBottleneckBlock in eval: relu(proj(x) + f(x)), torchvision's order; a drop path runs as its module."""
    f = block.f._modules
    shortcut = x if block.proj is None else conv_norm_act(block.proj, x)
    y = conv_norm_act(f["b"], conv_norm_act(f["a"], x))
    if "se" in f:
        y = squeeze_excite(f["se"], y)
    y = conv_norm_act(f["c"], y)
    drop = block._modules.get("drop_path")
    if drop is not None:
        y = drop(y)
    return torch.relu_(shortcut + y)
