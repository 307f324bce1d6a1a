"""The parts of a RegNet, with torchvision's module names and parameter shapes.

Every part keeps nn.Conv2d / nn.BatchNorm2d children (so state_dict keys are torchvision's) but runs its forward
through `fastregnet.ops`, which picks the Triton kernels or the PyTorch reference.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from . import ops
from .reference import fold_bn

__all__ = ["ConvNormActivation", "SqueezeExcitation", "BottleneckTransform", "ResBottleneckBlock", "AnyStage",
           "SimpleStemIN"]


class ConvNormActivation(nn.Sequential):
    """conv (no bias) -> BatchNorm2d -> optional ReLU; children named 0, 1, 2 as torchvision's Conv2dNormActivation.

    Eval mode runs conv with BN folded into the weight and a bias. The folded pair is cached while gradients are
    off and refolded when any parameter or running statistic changes (tracked by tensor versions and storage).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 activation: bool = True):
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                            bias=False),
                  nn.BatchNorm2d(out_channels, eps=1e-5, momentum=0.1)]
        if activation:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)
        self._fold_key = None
        self._fold_value = None
        # A 3x3 conv that keeps the width is the block's grouped conv (f.b): it has fused Triton kernels.
        self.grouped3x3 = kernel_size == 3 and in_channels == out_channels

    @property
    def has_activation(self) -> bool:
        return len(self) > 2

    @property
    def uses_batch_stats(self) -> bool:
        """nn.BatchNorm2d's rule for normalizing with batch statistics."""
        bn = self[1]
        return bn.training or bn.running_mean is None

    def batch_momentum(self) -> float:
        """The running-stat momentum for this batch; as nn.BatchNorm2d.forward, counts the batch when tracking, and
        momentum=None means a cumulative moving average. 0 when the running stats are not updated."""
        bn = self[1]
        if not (bn.training and bn.track_running_stats):
            return 0.0
        bn.num_batches_tracked.add_(1)
        return 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the conv with the eval-mode BN folded in."""
        conv, bn = self[0], self[1]
        tensors = (conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        cacheable = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        if not cacheable:
            return fold_bn(*tensors, bn.eps)
        key = tuple((t._version, t.data_ptr(), t.dtype, t.device) for t in tensors) + (bn.eps,)
        if key != self._fold_key:
            self._fold_value = fold_bn(*tensors, bn.eps)
            self._fold_key = key
        return self._fold_value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        stride, groups = conv.stride[0], conv.groups
        if self.uses_batch_stats:
            momentum = self.batch_momentum()
            train_op = ops.grouped_conv_bn_act_train if self.grouped3x3 else ops.conv_bn_act_train
            return train_op(x, conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, momentum, bn.eps,
                            stride, groups, self.has_activation)
        weight, bias = self.folded()
        eval_op = ops.grouped_conv_bias_act if self.grouped3x3 else ops.conv_bias_act
        return eval_op(x, weight, bias, stride, groups, self.has_activation)


class SqueezeExcitation(nn.Module):
    """SE with torchvision's names: fc1 (C -> C_se, bias), ReLU, fc2 (C_se -> C, bias), sigmoid, channel scale."""

    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fc1 weight, fc1 bias, fc2 weight, fc2 bias), as the fused block ops take them."""
        return self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.squeeze_excite(x, *self.params())


class BottleneckTransform(nn.Sequential):
    """a: 1x1 conv-BN-ReLU, b: 3x3 grouped conv-BN-ReLU (stride), se: optional SE, c: 1x1 conv-BN."""

    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int, bottleneck_multiplier: float,
                 se_ratio: float | None):
        w_b = int(round(width_out * bottleneck_multiplier))
        if w_b % group_width:
            raise ValueError(f"bottleneck width {w_b} is not divisible by group width {group_width}")
        layers = OrderedDict()
        layers["a"] = ConvNormActivation(width_in, w_b, 1)
        layers["b"] = ConvNormActivation(w_b, w_b, 3, stride=stride, groups=w_b // group_width)
        if se_ratio:
            # SE width from the block's INPUT width, as pycls, torchvision and timm do.
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)))
        layers["c"] = ConvNormActivation(w_b, width_out, 1, activation=False)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    """out = relu(f(x) + proj(x) or x); proj is a 1x1 strided conv-BN when the width or resolution changes."""

    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int = 1,
                 bottleneck_multiplier: float = 1.0, se_ratio: float | None = None):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = ConvNormActivation(width_in, width_out, 1, stride=stride, activation=False)
        self.f = BottleneckTransform(width_in, width_out, stride, group_width, bottleneck_multiplier, se_ratio)
        self.activation = nn.ReLU(inplace=True)

    def _se_params(self) -> tuple | None:
        return self.f.se.params() if hasattr(self.f, "se") else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.f
        convs = (f.a, f.b, f.c) if self.proj is None else (f.a, f.b, f.c, self.proj)
        if not torch.is_grad_enabled() and not any(m.uses_batch_stats for m in convs):
            return self._forward_inference(x)
        shortcut = x if self.proj is None else self.proj(x)
        if f.c.uses_batch_stats:
            # SE, conv c, BN, residual add and ReLU as one op (on Triton: one custom op, and one for its backward)
            y = f.b(f.a(x))
            se = self._se_params()
            conv, bn = f.c[0], f.c[1]
            return ops.se_conv_bn_add_relu_train(y, se, conv.weight, bn.weight, bn.bias, bn.running_mean,
                                                 bn.running_var, f.c.batch_momentum(), bn.eps, shortcut)
        return ops.add_relu(f(x), shortcut)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Eval with gradients off: the whole block as one op on folded weights (4 Triton launches with SE)."""
        f = self.f
        conv_b = f.b[0]
        se = self._se_params()
        proj = None if self.proj is None else self.proj.folded()
        return ops.residual_block_eval(x, f.a.folded(), (*f.b.folded(), conv_b.stride[0], conv_b.groups), se,
                                       f.c.folded(), proj)


class AnyStage(nn.Sequential):
    """`depth` blocks named blockS-0 .. blockS-(depth-1); the first one changes width and stride."""

    def __init__(self, width_in: int, width_out: int, stride: int, depth: int, group_width: int,
                 bottleneck_multiplier: float, se_ratio: float | None, stage_index: int):
        super().__init__()
        for i in range(depth):
            block = ResBottleneckBlock(width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                                       group_width, bottleneck_multiplier, se_ratio)
            self.add_module(f"block{stage_index}-{i}", block)


class SimpleStemIN(ConvNormActivation):
    """The stem: 3x3 stride-2 conv, BN, ReLU."""

    def __init__(self, width_in: int, width_out: int):
        super().__init__(width_in, width_out, 3, stride=2)
