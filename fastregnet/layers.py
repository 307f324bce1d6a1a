"""The parts of a RegNet, with torchvision's module names and parameter shapes.

Every part keeps torchvision's children (so state_dict keys and forward hooks are torchvision's). Where
`fastregnet.fusion` says the children are exactly what a fused path implements, a part runs through
`fastregnet.ops`, which picks the Triton kernels or the PyTorch reference; otherwise it calls its children.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from typing import Callable, Sequence

import torch
from torch import nn

from . import cpu_direct, fusion, ops, stochastic_depth
from .backend import auto_without_kernels
from .checkpointing import checkpoint_block
from .reference import fold_bn
from .sync_batch_norm import refuses_cpu, sync_needed

__all__ = ["ConvNormActivation", "SqueezeExcitation", "BottleneckTransform", "ResBottleneckBlock", "AnyStage",
           "SimpleStemIN", "DropPath", "NotScriptable"]

# Under torch.fx symbolic tracing the blocks trace their children (as torchvision's do), and a conv-norm-act part
# or SE records itself as one call_module node: torchvision's feature-extraction tracer keeps its own
# Conv2dNormActivation and SqueezeExcitation as leaves, so the node names are torchvision's ("...f.a", "...f.se",
# "...add", "...activation"), and the traced graph calls these modules, which run fused. Under FX quantization's
# tracer the conv-norm-act parts and SE trace their children instead, so that it observes and quantizes the convs
# as in torchvision's graph (DropPath stays one node, so the graph still follows .train() / .eval()).


def _is_quantization_tracer(tracer) -> bool:
    """torch.ao's FX quantization tracer (prepare_fx / prepare_qat_fx): it must see the convs, BNs and ReLUs."""
    quant_fx = sys.modules.get("torch.ao.quantization.fx.tracer")
    return quant_fx is not None and isinstance(tracer, quant_fx.QuantizationTracer)


def _direct_calls_allowed() -> bool:
    """Whether fastregnet.cpu_direct may call the modules' ops itself: not while torch.jit.trace or torch.export
    records a graph (an exported graph keeps the modules' conv -> BN: quantizers look for it)."""
    return not (torch.jit.is_tracing() or torch.compiler.is_exporting())


def _sync_norm_trains(part: nn.Module | None) -> bool:
    """A training nn.SyncBatchNorm (it may synchronize across ranks): the CPU path leaves it to its module."""
    bn = getattr(part, "_modules", {}).get("1")
    return isinstance(bn, nn.SyncBatchNorm) and bn.training


def _traced_leaf(module: nn.Module, x) -> torch.fx.Proxy | None:
    """module(x) as one call_module node when x is an fx Proxy; None when module is the traced root itself."""
    path = x.tracer.path_of_module(module)
    if not path:
        return None
    return x.tracer.create_proxy("call_module", path, (x,), {})


class NotScriptable:
    """torch.jit.script calls __prepare_scriptable__ on every module first: refuse with one clear error."""

    def __prepare_scriptable__(self):
        raise RuntimeError(
            f"fastregnet's {type(self).__name__} cannot be compiled by torch.jit.script: its fused paths choose, "
            f"per call in Python, between Triton custom ops and the modules. Capture it with torch.export.export or "
            f"torch.compile (both supported), or with torch.jit.trace.")


def default_norm_layer(num_features: int) -> nn.Module:
    """torchvision's RegNet norm: BatchNorm2d(eps=1e-5, momentum=0.1)."""
    return nn.BatchNorm2d(num_features, eps=1e-5, momentum=0.1)


class ConvNormActivation(NotScriptable, nn.Sequential):
    """conv (no bias) -> norm -> optional activation; children named 0, 1, 2 as torchvision's
    Conv2dNormActivation. The norm is `norm_layer(out_channels)` (BatchNorm2d by default) and the activation
    `activation_layer(inplace=True)` (ReLU by default, None for none).

    When `fastregnet.fusion` allows it (plain children, no hooks) and the kernels can run (or the backend names a
    path), runs as one fused op: with batch statistics the conv + BN (+ ReLU) training op; in eval, or with
    torchvision's FrozenBatchNorm2d in any mode, the conv with the norm applied from the live tensors (nothing
    cached, so nothing can go stale). On a CPU under the "auto" backend the children's ops called directly
    (`fastregnet.cpu_direct`: F.conv2d and F.batch_norm; in inference an eval BN folded into the conv where the
    output is large and a 1x1 conv on a small map run as a GEMM).
    Otherwise the children's own forward, in order, as torchvision.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1,
                 activation_layer: Callable[..., nn.Module] | None = nn.ReLU,
                 norm_layer: Callable[..., nn.Module] | None = None):
        norm_layer = norm_layer or default_norm_layer
        layers = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, groups=groups,
                            bias=False),
                  norm_layer(out_channels)]
        if activation_layer is not None:
            layers.append(activation_layer(inplace=True))
        super().__init__(*layers)

    @property
    def has_activation(self) -> bool:
        return len(self) > 2

    @property
    def grouped3x3(self) -> bool:
        """A 3x3 conv that keeps the width is the block's grouped conv (f.b): it has fused Triton kernels."""
        conv = self[0]
        return conv.kernel_size == (3, 3) and conv.in_channels == conv.out_channels

    @property
    def uses_batch_stats(self) -> bool:
        """nn.BatchNorm2d's rule for normalizing with batch statistics (a frozen BN never does)."""
        bn = self._modules["1"]
        if fusion.is_frozen_batch_norm(bn):
            return False
        return bn.training or (bn.running_mean is None and bn.running_var is None)

    def fusion_reason(self) -> str | None:
        """None when this part runs as one fused op, else why it runs its children (see fastregnet.fusion)."""
        return fusion.global_hooks_reason() or fusion.conv_norm_act_reason(self)

    @property
    def needs_sync(self) -> bool:
        """An nn.SyncBatchNorm that synchronizes on this call (training, torch.distributed up, > 1 rank)."""
        return sync_needed(self[1])

    def running_update(self) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
        """(running_mean, running_var, momentum) to update with this batch's statistics, as nn.BatchNorm2d.forward:
        counts the batch when training and tracking (even without running buffers, as torch), momentum=None means
        a cumulative moving average; when not tracking (None, None, 0.0), so nothing is written (not even a NaN
        batch mean times a zero momentum). fastregnet.fusion sends buffers nn.BatchNorm2d never builds (one of
        mean / var, no num_batches_tracked) to the module."""
        bn = self._modules["1"]
        if not (bn.training and bn.track_running_stats):
            return None, None, 0.0
        bn.num_batches_tracked.add_(1)
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return bn.running_mean, bn.running_var, momentum

    def fold_pays(self, x: torch.Tensor) -> bool:
        """Whether folding an eval BN into this conv pays on the CPU path (fastregnet.cpu_direct): the fold is a few small ops per call
        (a fixed cost), BN's own pass costs per output element, so it pays for large outputs only. The threshold
        (2**18 output elements) is measured on the CPU, not derived: with it batch 8 at 224 px folds most parts
        (about 1.15-1.25x faster in eval than the modules) and batch 1 almost none (folding every part there was
        5-20% slower). Shapes only: nothing derived from parameter values."""
        conv = self._modules["0"]
        if not isinstance(conv, nn.Conv2d) or torch.compiler.is_exporting():
            return False  # (an exported graph keeps the modules' ops: quantizers look for conv -> BN)
        s = conv.stride[0]
        return x.shape[0] * conv.out_channels * ((x.shape[-2] - 1) // s + 1) * ((x.shape[-1] - 1) // s + 1) >= 2**18

    def runs_cpu_direct(self, x: torch.Tensor) -> bool:
        """Whether fastregnet.cpu_direct runs this part: children the fusion rule allows (a training SyncBatchNorm
        excepted), an input the fused paths take, and no graph being recorded."""
        return (x.dim() == 4 and not _sync_norm_trains(self) and _direct_calls_allowed()
                and self.fusion_reason() is None and fusion.input_reason(x, self._modules["0"].weight) is None)

    def eval_bn(self) -> tuple:
        """(conv weight, (gamma, beta, running_mean, running_var), eps): what the fused inference ops read."""
        conv, bn = self[0], self[1]
        return conv.weight, (bn.weight, bn.bias, bn.running_mean, bn.running_var), bn.eps

    def folded(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the conv with the eval-mode BN folded in, from the current tensors."""
        conv, bn = self[0], self[1]
        return fold_bn(conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            leaf = None if _is_quantization_tracer(x.tracer) else _traced_leaf(self, x)
            return super().forward(x) if leaf is None else leaf
        # Without kernels ("auto" on a CPU) the modules' ops: called directly where fusion allows
        # (fastregnet.cpu_direct, which folds an eval BN where that pays), otherwise through the children; except an nn.SyncBatchNorm that would
        # refuse CPU tensors (the reference synchronizes them).
        if auto_without_kernels(x) and not refuses_cpu(self._modules.get("1")):
            return cpu_direct.conv_norm_act(self, x) if self.runs_cpu_direct(x) else super().forward(x)
        if self.fusion_reason() is not None or fusion.input_reason(x, self[0].weight) is not None:
            return super().forward(x)
        conv, bn = self[0], self[1]
        stride, groups = conv.stride[0], conv.groups
        if self.uses_batch_stats:
            running_mean, running_var, momentum = self.running_update()
            if self.needs_sync:
                return ops.conv_sync_bn_act_train(x, conv.weight, bn.weight, bn.bias, running_mean, running_var,
                                                  momentum, bn.eps, stride, groups, self.has_activation,
                                                  bn.process_group)
            train_op = ops.grouped_conv_bn_act_train if self.grouped3x3 else ops.conv_bn_act_train
            return train_op(x, conv.weight, bn.weight, bn.bias, running_mean, running_var, momentum, bn.eps,
                            stride, groups, self.has_activation)
        weight, bias = self.folded()
        eval_op = ops.grouped_conv_bias_act if self.grouped3x3 else ops.conv_bias_act
        return eval_op(x, weight, bias, stride, groups, self.has_activation)


class SqueezeExcitation(NotScriptable, nn.Module):
    """torchvision.ops.SqueezeExcitation's modules and forward: avgpool, fc1 (C -> C_se, bias), activation (ReLU),
    fc2 (C_se -> C, bias), scale_activation (Sigmoid), then the channel scale. Only fc1/fc2 hold state.

    Called on its own it runs its children (the math is PyTorch's either way); the fused block paths read its fc
    weights when `fastregnet.fusion` allows."""

    def __init__(self, input_channels: int, squeeze_channels: int,
                 activation: Callable[..., nn.Module] = nn.ReLU):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = nn.Sigmoid()

    def params(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(fc1 weight, fc1 bias, fc2 weight, fc2 bias), as the fused block ops take them."""
        return self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias

    def _scale(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.avgpool(x)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            leaf = None if _is_quantization_tracer(x.tracer) else _traced_leaf(self, x)
            if leaf is not None:
                return leaf
        return self._scale(x) * x


class BottleneckTransform(NotScriptable, nn.Sequential):
    """a: 1x1 conv-BN-ReLU, b: 3x3 grouped conv-BN-ReLU (stride), se: optional SE, c: 1x1 conv-BN."""

    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int, bottleneck_multiplier: float,
                 se_ratio: float | None, norm_layer: Callable[..., nn.Module] | None = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU):
        w_b = int(round(width_out * bottleneck_multiplier))
        if w_b % group_width:
            raise ValueError(f"bottleneck width {w_b} is not divisible by group width {group_width}")
        layers = OrderedDict()
        layers["a"] = ConvNormActivation(width_in, w_b, 1, activation_layer=activation_layer, norm_layer=norm_layer)
        layers["b"] = ConvNormActivation(w_b, w_b, 3, stride=stride, groups=w_b // group_width,
                                         activation_layer=activation_layer, norm_layer=norm_layer)
        if se_ratio:
            # SE width from the block's INPUT width, as pycls, torchvision and timm do.
            layers["se"] = SqueezeExcitation(w_b, int(round(se_ratio * width_in)), activation_layer)
        layers["c"] = ConvNormActivation(w_b, width_out, 1, activation_layer=None, norm_layer=norm_layer)
        super().__init__(layers)


class DropPath(NotScriptable, nn.Module):
    """Stochastic depth on a residual branch (timm's DropPath): in training, whole samples dropped with
    probability `rate`, the kept ones scaled by 1 / (1 - rate); identity in eval (`fastregnet.stochastic_depth`).
    One node under fx, so a traced graph follows .train() / .eval()."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def extra_repr(self) -> str:
        return f"rate={self.rate}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            leaf = _traced_leaf(self, x)
            if leaf is not None:
                return leaf
        return stochastic_depth.drop_path(x, self.rate, self.training)


class ResBottleneckBlock(NotScriptable, nn.Module):
    """out = relu(proj(x) + f(x)) or relu(x + f(x)); proj is a 1x1 strided conv-BN when the width or resolution
    changes. With drop_path_rate > 0 (timm's stochastic depth; torchvision has none), training drops whole samples'
    f(x), scaling the kept ones by 1 / (1 - rate); the fused training path applies the factors in conv c's BN
    epilogue and backward.

    With plain children and no hooks (`fastregnet.fusion.block_reason`), the block runs fused: in eval with
    gradients off as one op (6 Triton launches with SE); in training (`block_tail_reason`) with SE, conv c, BN, the
    add and the ReLU as one op, after calling f.a, f.b and the projection. Otherwise it runs its children as
    torchvision's block does.
    """

    def __init__(self, width_in: int, width_out: int, stride: int, group_width: int = 1,
                 bottleneck_multiplier: float = 1.0, se_ratio: float | None = None, drop_path_rate: float = 0.0,
                 norm_layer: Callable[..., nn.Module] | None = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = ConvNormActivation(width_in, width_out, 1, stride=stride, activation_layer=None,
                                           norm_layer=norm_layer)
        self.f = BottleneckTransform(width_in, width_out, stride, group_width, bottleneck_multiplier, se_ratio,
                                     norm_layer, activation_layer)
        self.activation = activation_layer(inplace=True)
        if drop_path_rate > 0.0:  # only then: at 0 the module tree stays torchvision's
            self.drop_path = DropPath(drop_path_rate)

    @property
    def drop_path_rate(self) -> float:
        drop = self._modules.get("drop_path")
        return drop.rate if drop is not None else 0.0

    def _se_params(self) -> tuple | None:
        """The SE's fc tensors as the fused ops take them, or None without SE."""
        return self.f.se.params() if "se" in self.f._modules else None

    def fusion_reason(self) -> str | None:
        """None when the block runs fused across its parts, else why it runs its children (fastregnet.fusion)."""
        return fusion.block_reason(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, torch.fx.Proxy):
            return self.forward_modules(x)  # fx: torchvision's graph, whose parts still run fused (see above)
        f = self.f
        if auto_without_kernels(x):  # the modules' ops, called directly where fusion allows (fastregnet.cpu_direct)
            return cpu_direct.residual_block(self, x) if self._runs_cpu_direct(x) else self.forward_modules(x)
        # (a part replaced by torch.ao.quantization.fuse_modules has no .weight: fusion_reason says why below)
        if fusion.input_reason(x, getattr(f.a[0], "weight", None)) is not None:
            return self.forward_modules(x)
        parts = (f.a, f.b, f.c) if self.proj is None else (f.a, f.b, f.c, self.proj)
        # (jit.trace checks its trace by re-tracing under no_grad: while tracing, the path must not follow grad mode)
        if (not torch.is_grad_enabled() and not torch.jit.is_tracing() and self.fusion_reason() is None
                and not any(p.uses_batch_stats for p in parts)):
            return self._forward_inference(x)
        if fusion.block_tail_reason(self) is not None or not f.c.uses_batch_stats or f.c.needs_sync:
            return self.forward_modules(x)
        # torchvision's order: the projection first, then f; f.a, f.b and proj are called as modules.
        shortcut = x if self.proj is None else self.proj(x)
        y = f.b(f.a(x))
        # SE, conv c, BN, drop path, residual add and ReLU as one op (on Triton: one custom op, and one for its
        # backward). The drop-path factors are drawn where the module path draws them (after f), so a seed gives
        # both paths the same mask.
        drop = self._modules.get("drop_path")
        sample_scale = None
        if drop is not None and drop.training:
            sample_scale = stochastic_depth.keep_scale(y.shape[0], drop.rate, y)
        se = self._se_params()
        conv, bn = f.c[0], f.c[1]
        running_mean, running_var, momentum = f.c.running_update()
        return ops.se_conv_bn_add_relu_train(y, se, conv.weight, bn.weight, bn.bias, running_mean, running_var,
                                             momentum, bn.eps, shortcut, sample_scale)

    def _runs_cpu_direct(self, x: torch.Tensor) -> bool:
        """Whether fastregnet.cpu_direct runs the whole block (see ConvNormActivation.runs_cpu_direct)."""
        if x.dim() != 4 or not _direct_calls_allowed() or self.fusion_reason() is not None:
            return False  # (a 3-D input goes to the modules, whose BatchNorm2d refuses it as torchvision's)
        parts = self._modules["f"]._modules
        if any(_sync_norm_trains(p) for p in (parts["a"], parts["b"], parts["c"], self._modules.get("proj"))):
            return False
        return fusion.input_reason(x, parts["a"]._modules["0"].weight) is None

    def forward_modules(self, x: torch.Tensor) -> torch.Tensor:
        """torchvision's ResBottleneckBlock.forward: every child called through its own forward (and hooks)."""
        shortcut = x if self.proj is None else self.proj(x)
        branch = self.f(x)
        if "drop_path" in self._modules:
            branch = self.drop_path(branch)
        return self.activation(shortcut + branch)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """Eval with gradients off: the whole block as one op (6 Triton launches with SE), BN from the live tensors."""
        f = self.f
        conv_b = f.b[0]
        se = self._se_params()
        proj = None if self.proj is None else self.proj.eval_bn()
        return ops.residual_block_eval(x, f.a.eval_bn(), (*f.b.eval_bn(), conv_b.stride[0], conv_b.groups), se,
                                       f.c.eval_bn(), proj)


class AnyStage(NotScriptable, nn.Sequential):
    """`depth` blocks named blockS-0 .. blockS-(depth-1); the first one changes width and stride.

    With `grad_checkpointing` on (RegNet.set_grad_checkpointing), training runs each block under
    torch.utils.checkpoint: its activations are recomputed in backward, and BatchNorm running statistics are
    updated once, by the first forward (`fastregnet.checkpointing`)."""

    def __init__(self, width_in: int, width_out: int, stride: int, depth: int, group_width: int,
                 bottleneck_multiplier: float, se_ratio: float | None, stage_index: int,
                 drop_path_rates: Sequence[float] | None = None, norm_layer: Callable[..., nn.Module] | None = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU):
        super().__init__()
        rates = [0.0] * depth if drop_path_rates is None else list(drop_path_rates)
        for i in range(depth):
            block = ResBottleneckBlock(width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                                       group_width, bottleneck_multiplier, se_ratio, rates[i], norm_layer,
                                       activation_layer)
            self.add_module(f"block{stage_index}-{i}", block)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.grad_checkpointing or not torch.is_grad_enabled() or isinstance(x, torch.fx.Proxy):
            return super().forward(x)
        for block in self:
            x = checkpoint_block(block, x)
        return x


class SimpleStemIN(ConvNormActivation):
    """The stem: 3x3 stride-2 conv, norm, activation."""

    def __init__(self, width_in: int, width_out: int, norm_layer: Callable[..., nn.Module] | None = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU):
        super().__init__(width_in, width_out, 3, stride=2, activation_layer=activation_layer, norm_layer=norm_layer)
