"""The CPU path without kernels ("auto" on a CPU): the ops the modules would run, called directly.

A part or block whose children `fastregnet.fusion` allows (exact types, no hooks) runs here instead of through its
children's `__call__`, in eval and in training: F.conv2d, F.batch_norm (running statistics in eval; in training
the batch's, updating the running statistics as nn.BatchNorm2d.forward does), relu_, SE's pool / fc / ReLU /
sigmoid / scale, the residual add and ReLU -- the same PyTorch ops, differentiable as the modules', without
nn.Module's dispatch and each module's Python forward (about 0.5 ms of a 14 ms batch-1 forward of regnet_y_400mf
on the 2-core development machine, where the compute is oneDNN's either way).

Three deliberate differences in inference (autograd off, running statistics), all the modules' math up to rounding:
- an eval BN is folded into its conv, per call from the live tensors, where the conv's output is large enough
  for that to pay (`ConvNormActivation.fold_pays`, a shape rule): one pass over the output fewer;
- SE's fc1 / fc2 (1x1 convs on a 1x1 map) run as F.linear: ATen sends a 1x1-map conv in channels_last to its
  slow reference conv (57-91 us at batch 8), a GEMM takes 10-17 us;
- a stride-1 1x1 conv on a small channels_last map runs as F.linear over its rows (`runs_as_gemm`, a shape rule
  measured below).
With autograd on (training, a frozen or eval BN included) it runs exactly the modules' ops, so loss, gradients and
buffers are torchvision's bit for bit. Two writes go into tensors nothing else holds (same bits, fewer allocations):
the residual sum into conv c's output, and in inference SE's scale into conv b's output.

A training nn.SyncBatchNorm is not run here (it synchronizes across ranks: its module, or fastregnet's reference).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .fusion import is_frozen_batch_norm

__all__ = ["conv_norm_act", "inference", "runs_as_gemm", "squeeze_excite", "residual_block"]


def _norm(part: nn.Module, y: torch.Tensor, batch_stats: bool) -> torch.Tensor:
    """The part's BN as nn.BatchNorm2d.forward computes it: batch statistics (counting the batch and updating the
    running statistics where it tracks them) or the running ones; a FrozenBatchNorm2d by its own forward."""
    bn = part._modules["1"]
    if is_frozen_batch_norm(bn):
        return bn(y)
    if batch_stats:
        running_mean, running_var, momentum = part.running_update()
        return F.batch_norm(y, running_mean, running_var, bn.weight, bn.bias, True, momentum, bn.eps)
    return F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


# A stride-1 1x1 conv on a channels_last map is a GEMM over its N*H*W rows; oneDNN's conv has a fixed cost that
# F.linear does not, which shows at few rows. Measured on the 2-core development machine in inference (y_400mf,
# x_400mf, y_1_6gf, 224 px; both variants in one process, order shuffled each round, median of per-round ratios):
# with this bound the whole forward was 1.01-1.05x faster at batch 1 (the 28x28 maps and smaller) and 1.00-1.02x
# at batch 8 (the 7x7 maps), less than separate processes resolve (they moved fastregnet against torchvision by
# +-5%); per shape, GEMMs won by up to 1.5x below ~1000 rows and lost by up to 10% on the large maps of batch 8.
GEMM_MAX_ROWS = 1024


def inference(part: nn.Module) -> bool:
    """Autograd off and the part's BN on running statistics: where the three differences above may apply."""
    return not torch.is_grad_enabled() and not part.uses_batch_stats


def runs_as_gemm(part: nn.Module, x: torch.Tensor, in_inference: bool) -> bool:
    """Whether this part's conv runs as F.linear: a stride-1, ungrouped 1x1 conv on a small channels_last map, in
    inference (`inference(part)`) only: training and autograd keep the conv, bit-identical to torchvision."""
    conv = part._modules["0"]
    return (in_inference and conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1
            and x.shape[0] * x.shape[2] * x.shape[3] <= GEMM_MAX_ROWS
            and x.is_contiguous(memory_format=torch.channels_last))


def conv_norm_act(part: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ConvNormActivation: conv (a GEMM where `runs_as_gemm`), BN (in eval folded into the conv where that pays),
    optional ReLU in place."""
    children = part._modules
    conv = children["0"]
    batch_stats = part.uses_batch_stats  # (a property: read once)
    in_inference = not batch_stats and not torch.is_grad_enabled()
    fold = in_inference and part.fold_pays(x)
    weight, bias = part.folded() if fold else (conv.weight, None)
    if runs_as_gemm(part, x, in_inference):  # NHWC rows times the weight: the output is channels_last again
        y = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    else:
        y = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    if not fold:
        y = _norm(part, y, batch_stats)
    return torch.relu_(y) if "2" in children else y


def squeeze_excite(se: nn.Module, x: torch.Tensor, in_inference: bool) -> torch.Tensor:
    """torchvision's SqueezeExcitation: x * sigmoid(fc2(relu(fc1(avgpool(x))))). In inference the fcs run as GEMMs
    and x (conv b's output, used nowhere else) is scaled in place; otherwise the fcs' own 1x1 convs and a new
    tensor, as the module (autograd saves x)."""
    fc1, fc2 = se.fc1, se.fc2
    if not in_inference:
        s = torch.relu_(F.conv2d(F.adaptive_avg_pool2d(x, 1), fc1.weight, fc1.bias))
        return x * torch.sigmoid(F.conv2d(s, fc2.weight, fc2.bias))
    s = F.adaptive_avg_pool2d(x, 1).flatten(1)
    s = torch.relu_(F.linear(s, fc1.weight.flatten(1), fc1.bias))
    s = torch.sigmoid(F.linear(s, fc2.weight.flatten(1), fc2.bias))
    return x.mul_(s[:, :, None, None])


def residual_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A ResBottleneckBlock: relu(proj(x) + f(x)), torchvision's order; a drop path runs as its module."""
    f = block.f._modules
    shortcut = x if block.proj is None else conv_norm_act(block.proj, x)
    y = conv_norm_act(f["b"], conv_norm_act(f["a"], x))
    if "se" in f:
        # GEMMs only in inference on running statistics: with autograd on or batch statistics the fcs' own convs,
        # bit-identical to torchvision's (the GEMM rounds differently, and batch statistics amplify that: 1.3e-4
        # on a weight gradient of regnet_y_400mf at batch 3, 64 px)
        y = squeeze_excite(f["se"], y, in_inference=inference(f["c"]))
    y = conv_norm_act(f["c"], y)
    drop = block._modules.get("drop_path")
    if drop is not None:
        return torch.relu_(shortcut + drop(y))
    # y is conv c's BN output (fastregnet.fusion refuses a c with an activation), which neither autograd (BN saves
    # its input) nor anything else holds: the sum goes into it, one block-sized allocation fewer (the same bits: a + b == b + a). Measured against the new-tensor sum
    # in one process (with SE's in-place scale): 1.02x on a batch-8 eval forward of y_400mf and x_400mf, nothing
    # resolvable at batch 1 or in training.
    return torch.relu_(y.add_(shortcut))
