"""When a fused path may replace the modules' own forward: the one rule, checked on every call.

A fused path reads a part's tensors (conv weight, BN affine parameters and running statistics, SE fc weights) and
computes what nn.Conv2d -> nn.BatchNorm2d -> nn.ReLU (and torchvision's SqueezeExcitation, residual add and ReLU)
would. That is only the modules' computation when each child is *exactly* the type and configuration the path
implements and nothing observes the skipped calls. So a path is taken only if:

- every module it skips is exactly nn.Conv2d (no bias, square kernel and stride, padding k // 2, dilation 1, zero
  padding), nn.BatchNorm2d or nn.SyncBatchNorm with affine parameters, torchvision's FrozenBatchNorm2d (an eval
  BN in every mode), nn.ReLU, nn.Sigmoid, nn.AdaptiveAvgPool2d(1), or one of fastregnet's own containers
  (`fastregnet.layers`) -- a subclass, a parametrized conv, GroupNorm, Identity, SiLU or any wrapper fails this;
- none of them has a forward hook, forward pre-hook or backward hook, or a `forward` set on the instance, and no
  global module hook is registered (torch.nn.modules.module.register_module_forward_hook and friends);
- the input's dtype matches the weights' (or autocast is on), and the input is not empty.

Otherwise the caller runs its children's own `forward` in torchvision's order, so any replacement behaves exactly
as it does in torchvision. The functions return None when the fused path may run and a short reason when not;
they allocate nothing on the fused path (the reason strings are built only when a check fails).
`explain_fusion(model)` reports, per part, the path and the reason.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _nn_module

__all__ = ["explain_fusion", "is_frozen_batch_norm", "conv_norm_act_reason", "squeeze_excitation_reason", "block_reason",
           "block_tail_reason", "input_reason", "global_hooks_reason"]

_LAYERS_MODULE = __name__.rsplit(".", 1)[0] + ".layers"
_GLOBAL_HOOK_DICTS = tuple(getattr(_nn_module, name) for name in (
    "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")
    if hasattr(_nn_module, name))


def _observed(m: nn.Module) -> bool:
    """Whether skipping m's __call__ would be visible: hooks on it, or a forward patched onto the instance."""
    d = m.__dict__  # (read directly: this runs for every skipped module on every call)
    return bool(d.get("_forward_hooks") or d.get("_forward_pre_hooks") or d.get("_backward_hooks")
                or d.get("_backward_pre_hooks") or "forward" in d)


def _skip_reason(m: nn.Module | None, expected: type, role: str) -> str | None:
    if type(m) is not expected:
        return f"{role} is {type(m).__name__}, not {expected.__module__}.{expected.__name__}"
    if _observed(m):
        return f"{role} has hooks or an instance forward"
    return None


def _own_container_reason(m: nn.Module, class_name: str, role: str) -> str | None:
    """fastregnet's own container class, exactly (a subclass may override forward), and unobserved."""
    cls = type(m)
    if cls.__name__ != class_name or cls.__module__ != _LAYERS_MODULE:
        return f"{role} is {cls.__name__}, not fastregnet's {class_name}"
    if _observed(m):
        return f"{role} has hooks or an instance forward"
    return None


def is_frozen_batch_norm(m: nn.Module) -> bool:
    """Exactly torchvision.ops.misc.FrozenBatchNorm2d (checked by name: torchvision need not be installed). Its
    forward is x * scale + (bias - running_mean * scale), scale = weight * rsqrt(running_var + eps): the eval BN
    the fused paths fold."""
    cls = type(m)
    return cls.__name__ == "FrozenBatchNorm2d" and cls.__module__ == "torchvision.ops.misc"


def _norm_reason(bn: nn.Module) -> str | None:
    if is_frozen_batch_norm(bn):
        return "norm has hooks or an instance forward" if _observed(bn) else None
    # nn.SyncBatchNorm is BatchNorm2d's computation, over every rank's batch when it synchronizes (the part then
    # runs fastregnet.sync_batch_norm, see ConvNormActivation.forward)
    reason = _skip_reason(bn, nn.SyncBatchNorm if type(bn) is nn.SyncBatchNorm else nn.BatchNorm2d, "norm")
    if reason is not None:
        return reason
    params = bn._parameters
    if params.get("weight") is None or params.get("bias") is None:
        return "norm has no affine parameters (affine=False)"
    # (buffers set by hand in ways nn.BatchNorm2d never builds: its own forward handles them)
    buffers = bn._buffers
    if (buffers.get("running_mean") is None) != (buffers.get("running_var") is None):
        return "norm has only one of running_mean / running_var"
    if bn.track_running_stats and buffers.get("num_batches_tracked") is None:
        return "norm tracks running statistics without num_batches_tracked"
    return None


def global_hooks_reason() -> str | None:
    if any(_GLOBAL_HOOK_DICTS):
        return "global module hooks are registered"
    return None


def _conv_reason(conv: nn.Module, role: str) -> str | None:
    reason = _skip_reason(conv, nn.Conv2d, role)
    if reason is not None:
        return reason
    k = conv.kernel_size
    if conv._parameters.get("bias") is not None:
        return f"{role} has a bias"
    if (k[0] != k[1] or conv.stride[0] != conv.stride[1] or conv.padding != (k[0] // 2, k[0] // 2)
            or conv.dilation != (1, 1) or conv.padding_mode != "zeros"):
        return (f"{role} is not a square conv with padding k//2 (kernel {k}, stride {conv.stride}, padding "
                f"{conv.padding}, dilation {conv.dilation}, padding_mode {conv.padding_mode!r})")
    return None


def conv_norm_act_reason(part: nn.Sequential) -> str | None:
    """Children of a conv-norm-act part: 0 a plain conv, 1 an affine nn.BatchNorm2d / nn.SyncBatchNorm or a
    FrozenBatchNorm2d, optional 2 an nn.ReLU."""
    children = tuple(part._modules.values())  # (Sequential indexing walks an iterator: this runs every call)
    if len(children) not in (2, 3):
        return f"has {len(children)} children, not conv, norm[, ReLU]"
    conv, bn = children[0], children[1]
    reason = _conv_reason(conv, "conv") or _norm_reason(bn)
    if reason is not None:
        return reason
    if bn.weight.shape[0] != conv.out_channels:
        return f"norm has {bn.weight.shape[0]} features for {conv.out_channels} conv channels"
    if len(children) == 3:
        return _skip_reason(children[2], nn.ReLU, "activation")
    return None


def squeeze_excitation_reason(se: nn.Module) -> str | None:
    """avgpool -> fc1 (1x1 conv, bias) -> ReLU -> fc2 (1x1 conv, bias) -> Sigmoid, each exactly that module."""
    children = se._modules
    avgpool, fc1, fc2 = children.get("avgpool"), children.get("fc1"), children.get("fc2")
    reason = (_skip_reason(avgpool, nn.AdaptiveAvgPool2d, "se.avgpool")
              or _skip_reason(fc1, nn.Conv2d, "se.fc1") or _skip_reason(fc2, nn.Conv2d, "se.fc2")
              or _skip_reason(children.get("activation"), nn.ReLU, "se.activation")
              or _skip_reason(children.get("scale_activation"), nn.Sigmoid, "se.scale_activation"))
    if reason is not None:
        return reason
    if avgpool.output_size not in (1, (1, 1)):
        return f"se.avgpool has output size {avgpool.output_size}"
    for fc in (fc1, fc2):
        if (fc._parameters.get("bias") is None or fc.kernel_size != (1, 1) or fc.stride != (1, 1) or fc.padding != (0, 0)
                or fc.dilation != (1, 1) or fc.groups != 1):
            return "se fc is not a 1x1 conv with bias"
    return None


def block_tail_reason(block: nn.Module) -> str | None:
    """What the block's training path skips: f's own forward, SE, conv c's part, the drop path and the final ReLU
    (f.a, f.b and the projection it still calls as modules, so each of those decides for itself)."""
    children = block._modules  # (children read from _modules: nn.Module.__getattr__ is slow on every call)
    reason = global_hooks_reason() or _skip_reason(children.get("activation"), nn.ReLU, "activation")
    if reason is not None:
        return reason
    f = children["f"]
    reason = _own_container_reason(f, "BottleneckTransform", "f")
    if reason is not None:
        return reason
    parts = f._modules
    names = tuple(parts)
    if names not in (("a", "b", "se", "c"), ("a", "b", "c")):
        return f"f has children {names}, not a, b, [se,] c"
    reason = _part_reason(parts["c"], "f.c", activation=False, kernel=1)
    if reason is None and "drop_path" in children:
        reason = _own_container_reason(children["drop_path"], "DropPath", "drop_path")
    if reason is None and "se" in parts:
        reason = _own_container_reason(parts["se"], "SqueezeExcitation", "f.se") or squeeze_excitation_reason(
            parts["se"])
    return reason


def block_reason(block: nn.Module) -> str | None:
    """What the block's inference path skips: every part (f.a, f.b, the projection too)."""
    reason = block_tail_reason(block)
    if reason is not None:
        return reason
    parts, proj = block._modules["f"]._modules, block._modules.get("proj")
    reason = (_part_reason(parts["a"], "f.a", activation=True, kernel=1)
              or _part_reason(parts["b"], "f.b", activation=True, kernel=3))
    if reason is None and proj is not None:
        reason = _part_reason(proj, "proj", activation=False, kernel=1)
    conv_b = parts["b"]._modules["0"]
    if reason is None and conv_b.in_channels != conv_b.out_channels:
        reason = "f.b does not keep the width"
    return reason


def _part_reason(part: nn.Module, role: str, activation: bool, kernel: int) -> str | None:
    reason = _own_container_reason(part, "ConvNormActivation", role) or conv_norm_act_reason(part)
    if reason is not None:
        return f"{role}: {reason}"
    conv = part._modules["0"]
    if (len(part._modules) == 3) != activation:
        return f"{role} {'lacks' if activation else 'has'} an activation"
    if conv.kernel_size != (kernel, kernel) or (kernel == 1 and conv.groups != 1):
        return f"{role} is not a {'1x1' if kernel == 1 else '3x3'} conv"
    return None


def input_reason(x: torch.Tensor, weight: torch.Tensor | None) -> str | None:
    """What the fused ops need of the input beyond the modules: the weights' dtype (or autocast), and elements.
    weight None: the part's first child has no weight (replaced, e.g. by torch.ao.quantization.fuse_modules)."""
    if not isinstance(weight, torch.Tensor):
        return "the part's conv was replaced by a module without a weight tensor"
    if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        return f"input dtype {x.dtype} differs from the weights' {weight.dtype}"
    if x.numel() == 0:
        return "empty input"
    return None


def explain_fusion(model: nn.Module) -> list[dict]:
    """Per fastregnet block and conv-norm-act part of `model`: {"module": name, "type": class name,
    "path": "fused" or "modules", "reason": why not fused (None when fused)}. Input-dependent conditions (device,
    dtype, size, empty batch, the backend: on a CPU under "auto" a "fused" part runs the modules' ops directly,
    fastregnet.cpu_direct) are not known here; the structural and hook rules are. A module with no fastregnet part
    (one fastregnet did not build) is a ValueError rather than an empty report."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"explain_fusion expects an nn.Module, got {type(model).__name__}")
    report = []
    for name, m in model.named_modules():
        rule = getattr(m, "fusion_reason", None)
        if callable(rule):
            reason = rule()
            report.append({"module": name, "type": type(m).__name__, "path": "fused" if reason is None else "modules",
                           "reason": reason})
    if not report:
        raise ValueError(f"{type(model).__name__} contains no fastregnet RegNet blocks: nothing to fuse; build it "
                         f"with fastregnet (or fastregnet.from_torchvision)")
    return report
