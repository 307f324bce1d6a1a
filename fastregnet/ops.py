"""The ops the RegNet blocks call. Each dispatches, per `fastregnet.backend`, to a Triton-backed custom op or to
its PyTorch reference in `fastregnet.reference`.

The blocks never call a kernel directly: adding a kernel changes this file, not the model code.

What runs on Triton:
- training (BN with batch statistics), forward and backward: every conv of the body. Conv a and the projection
  are `pointwise_conv_bn_train`; f.b is `grouped_conv_bn_act_train`; SE, conv c, the residual add and the final
  ReLU are one `pointwise_conv_bn_train` with the SE weights and the shortcut. The stem and head run PyTorch.
- eval with gradients off: the whole block as 6 launches (`residual_block_eval`), each applying its eval BatchNorm
  in the epilogue from the live tensors (no folded weights exist on this path).
- eval with gradients on (rare: e.g. input-gradient saliency): f.b's differentiable eval kernel; the 1x1 convs and
  SE run the reference.

The Triton path is a set of `torch.library.custom_op`s with fake (meta) implementations and registered autograd,
so torch.compile traces them as opaque nodes and `torch.library.opcheck` can check them.

`fastregnet.kernels`, imported below, is the repository's top-level `kernels/` folder, reached through the link
`fastregnet/kernels -> ../kernels` (so it imports the same way from a source checkout, editable and installed;
a wheel holds the files themselves): one module per fused op family (grouped_conv, pointwise_conv, batch_norm,
squeeze_excite), plus tile selection (tuning) and ahead-of-time compilation (aot).
"""

from __future__ import annotations

import functools
from typing import Optional

import torch
from torch import Tensor

from . import reference as ref
from .backend import on_tensor_device, refuse_double_backward, triton_interpreting, use_triton

__all__ = ["conv_bias_act", "conv_bn_act_train", "conv_sync_bn_act_train", "grouped_conv_bias_act",
           "grouped_conv_bn_act_train", "residual_block_eval", "se_conv_bn_add_relu_train", "grouped_conv_supported"]


# ----------------------------------------------------------------------------------------------------------------
# custom ops around the grouped conv kernels
# ----------------------------------------------------------------------------------------------------------------


def _on_input_device(fn):
    """Run a custom op's launches with its first tensor's CUDA device current (`backend.on_tensor_device`)."""

    @functools.wraps(fn)
    def on_device(*args, **kwargs):
        with on_tensor_device(args[0]):
            return fn(*args, **kwargs)

    return on_device


def _out_shape(x: Tensor, stride: int) -> tuple[int, int, int, int]:
    n, c, h, w = x.shape
    return n, c, (h - 1) // stride + 1, (w - 1) // stride + 1


def _absent(like: Tensor) -> Tensor:
    """The placeholder a custom op returns for an output that does not apply (ops cannot return None)."""
    return like.new_empty(0, dtype=torch.float32)


def _empty_nhwc(shape, like: Tensor) -> Tensor:
    return torch.empty(shape, device=like.device, dtype=like.dtype, memory_format=torch.channels_last)


@torch.library.custom_op("fastregnet::grouped_conv_bias_act", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _grouped_conv_bias_act_op(x: Tensor, weight: Tensor, bias: Tensor, stride: int, groups: int,
                              relu: bool) -> Tensor:
    from .kernels.grouped_conv import grouped_conv_fwd

    return grouped_conv_fwd(x, weight, bias, stride, groups, relu)


@_grouped_conv_bias_act_op.register_fake
def _(x, weight, bias, stride, groups, relu):
    return _empty_nhwc(_out_shape(x, stride), x)


@torch.library.custom_op("fastregnet::grouped_conv_bn_act_train", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _grouped_conv_bn_act_train_op(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, eps: float, stride: int,
                                  groups: int, relu: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, y, mean, var, invstd): y = pre-BN conv output, per-channel batch mean / biased var / invstd (fp32)."""
    from .kernels.grouped_conv import grouped_conv_train_fwd

    return grouped_conv_train_fwd(x, weight, gamma, beta, eps, stride, groups, relu)


@_grouped_conv_bn_act_train_op.register_fake
def _(x, weight, gamma, beta, eps, stride, groups, relu):
    shape = _out_shape(x, stride)
    vec = [x.new_empty(shape[1], dtype=torch.float32) for _ in range(3)]
    return _empty_nhwc(shape, x), _empty_nhwc(shape, x), *vec


@torch.library.custom_op("fastregnet::grouped_conv_bwd", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _grouped_conv_bwd_op(grad_out: Tensor, x: Tensor, weight: Tensor, saved: Tensor, mean: Optional[Tensor],
                         invstd: Optional[Tensor], gamma: Optional[Tensor], beta: Optional[Tensor], stride: int,
                         groups: int, relu: bool, train: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_gamma, grad_beta); in eval grad_beta is the folded bias's grad and grad_gamma
    is zeros."""
    from .kernels.grouped_conv import grouped_conv_bwd

    gx, gw, dgamma, dbeta = grouped_conv_bwd(grad_out, x, weight, saved, mean, invstd, gamma, beta, stride, groups,
                                             relu, train)
    return gx, gw, dgamma if dgamma is not None else torch.zeros_like(dbeta), dbeta


@_grouped_conv_bwd_op.register_fake
def _(grad_out, x, weight, saved, mean, invstd, gamma, beta, stride, groups, relu, train):
    c = x.shape[1]
    return (_empty_nhwc(x.shape, x), torch.empty_like(weight, memory_format=torch.contiguous_format),
            x.new_empty(c, dtype=torch.float32), x.new_empty(c, dtype=torch.float32))


def _eval_setup(ctx, inputs, output):
    x, weight, bias, stride, groups, relu = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.conf = (stride, groups, relu, bias.dtype)


def _eval_backward(ctx, grad_out):
    refuse_double_backward("grouped_conv_bias_act")
    x, weight, out = ctx.saved_tensors
    stride, groups, relu, bias_dtype = ctx.conf
    gx, gw, _, gb = torch.ops.fastregnet.grouped_conv_bwd(grad_out, x, weight, out, None, None, None, None, stride,
                                                          groups, relu, False)
    return gx, gw, gb.to(bias_dtype), None, None, None


_grouped_conv_bias_act_op.register_autograd(_eval_backward, setup_context=_eval_setup)


def _train_setup(ctx, inputs, output):
    x, weight, gamma, beta, eps, stride, groups, relu = inputs
    out, y, mean, var, invstd = output
    ctx.mark_non_differentiable(y, mean, var, invstd)
    ctx.save_for_backward(x, weight, y, mean, invstd, gamma, beta)
    ctx.conf = (stride, groups, relu)


def _train_backward(ctx, grad_out, _gy, _gmean, _gvar, _ginvstd):
    refuse_double_backward("grouped_conv_bn_act_train")
    x, weight, y, mean, invstd, gamma, beta = ctx.saved_tensors
    stride, groups, relu = ctx.conf
    gx, gw, dgamma, dbeta = torch.ops.fastregnet.grouped_conv_bwd(grad_out, x, weight, y, mean, invstd, gamma, beta,
                                                                  stride, groups, relu, True)
    return gx, gw, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None, None, None


_grouped_conv_bn_act_train_op.register_autograd(_train_backward, setup_context=_train_setup)


# ----------------------------------------------------------------------------------------------------------------
# custom ops of the block's inference path (eval, no autograd: the block only takes it with gradients off)
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastregnet::grouped_conv_bn_eval", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _grouped_conv_bn_eval_op(x: Tensor, weight: Tensor, bn: list[Tensor], eps: float, stride: int, groups: int,
                             squeeze: bool) -> tuple[Tensor, Tensor]:
    """(relu(bn(grouped conv)), per-(image, row block) channel sums for the SE squeeze, or empty without squeeze);
    bn = (gamma, beta, running_mean, running_var), applied in the kernel's epilogue."""
    from .kernels.grouped_conv import grouped_conv_fwd

    if squeeze:
        y, sq_part, _ = grouped_conv_fwd(x, weight, None, stride, groups, True, squeeze=True, bn=bn, eps=eps)
        return y, sq_part
    return grouped_conv_fwd(x, weight, None, stride, groups, True, bn=bn, eps=eps), _absent(x)


def _squeeze_rows(h: int, w: int, dtype: torch.dtype) -> int:
    """Rows per block of the SE squeeze sums the grouped conv's eval epilogue writes for h x w maps."""
    from .kernels.grouped_conv import eval_squeeze_layout

    return eval_squeeze_layout(h, w, dtype)[0]


@_grouped_conv_bn_eval_op.register_fake
def _(x, weight, bn, eps, stride, groups, squeeze):
    n, c, ho, wo = _out_shape(x, stride)
    if squeeze:
        from .kernels.squeeze_excite import squeeze_part_rows

        rows = squeeze_part_rows(n, ho * wo, _squeeze_rows(ho, wo, x.dtype))
        sq_part = x.new_empty((rows, c), dtype=torch.float32)
    else:
        sq_part = _absent(x)
    return _empty_nhwc((n, c, ho, wo), x), sq_part


@torch.library.custom_op("fastregnet::se_excite", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _se_excite_op(sq_part: Tensor, images: int, hw: int, rows_per_block: int, fc1_weight: Tensor,
                  fc1_bias: Tensor, fc2_weight: Tensor, fc2_bias: Tensor) -> Tensor:
    from .kernels.squeeze_excite import se_excite

    return se_excite(sq_part, images, hw, rows_per_block, fc1_weight, fc1_bias, fc2_weight, fc2_bias)


@_se_excite_op.register_fake
def _(sq_part, images, hw, rows_per_block, fc1_weight, fc1_bias, fc2_weight, fc2_bias):
    return sq_part.new_empty((images, sq_part.shape[1]))


@torch.library.custom_op("fastregnet::pointwise_conv", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _pointwise_conv_op(x: Tensor, weight: Tensor, bn: list[Tensor], eps: float, relu: bool, gate: Optional[Tensor],
                       shortcut: Optional[Tensor], x2: Optional[Tensor], weight2: Optional[Tensor],
                       bn2: list[Tensor], eps2: float, stride2: int) -> Tensor:
    """act(bn(conv1x1(x * gate)) + bn2(conv1x1(x2, stride2)) + shortcut), eval BatchNorms (gamma, beta,
    running_mean, running_var) applied in the epilogue; bn2 is empty without x2."""
    from .kernels.pointwise_conv import pointwise_conv_fwd

    return pointwise_conv_fwd(x, weight, bn, eps, relu, gate, shortcut, x2, weight2, bn2 or None, eps2, stride2)


@_pointwise_conv_op.register_fake
def _(x, weight, bn, eps, relu, gate, shortcut, x2, weight2, bn2, eps2, stride2):
    return _empty_nhwc((x.shape[0], weight.shape[0], x.shape[2], x.shape[3]), x)


# ----------------------------------------------------------------------------------------------------------------
# custom ops of the block's training path: a 1x1 conv + batch-statistics BN (conv a, the projection), and conv c
# with the SE in front of it and the residual add + ReLU behind it
# ----------------------------------------------------------------------------------------------------------------


@torch.library.custom_op("fastregnet::pointwise_conv_bn_train", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _pointwise_conv_bn_train_op(x: Tensor, weight: Tensor, gamma: Tensor, beta: Tensor, eps: float, stride: int,
                                relu: bool, shortcut: Optional[Tensor], fc1_weight: Optional[Tensor],
                                fc1_bias: Optional[Tensor], fc2_weight: Optional[Tensor],
                                fc2_bias: Optional[Tensor], sample_scale: Optional[Tensor] = None
                                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, y, mean, var, invstd, gate, pooled, hidden) of out = act(bn(conv1x1(x * gate, stride)) * s + shortcut),
    BN with batch statistics, s the per-image stochastic-depth factors (sample_scale, with a shortcut) or 1. gate =
    SE(x) when the fc weights are given (pooled and hidden are its saved intermediates), else the last three are
    empty."""
    from .kernels.pointwise_conv import pointwise_conv_train_fwd
    from .kernels.squeeze_excite import se_excite, se_squeeze

    gate = pooled = hidden = None
    if fc1_weight is not None:
        sq_part, rows_per_block = se_squeeze(x)
        gate, pooled, hidden = se_excite(sq_part, x.shape[0], x.shape[2] * x.shape[3], rows_per_block, fc1_weight,
                                         fc1_bias, fc2_weight, fc2_bias, saved=True)
    out, y, mean, var, invstd = pointwise_conv_train_fwd(x, weight, gamma, beta, eps, stride, relu, gate, shortcut,
                                                         sample_scale)
    return out, y, mean, var, invstd, *(t if t is not None else _absent(x) for t in (gate, pooled, hidden))


@_pointwise_conv_bn_train_op.register_fake
def _(x, weight, gamma, beta, eps, stride, relu, shortcut, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
      sample_scale=None):
    n, _, ho, wo = _out_shape(x, stride)
    c = weight.shape[0]
    vec = [x.new_empty(c, dtype=torch.float32) for _ in range(3)]
    if fc1_weight is None:
        se = [_absent(x) for _ in range(3)]
    else:
        k, s = x.shape[1], fc1_weight.shape[0]
        se = [x.new_empty((n, k), dtype=torch.float32), x.new_empty((n, k), dtype=torch.float32),
              x.new_empty((n, s), dtype=torch.float32)]
    return _empty_nhwc((n, c, ho, wo), x), _empty_nhwc((n, c, ho, wo), x), *vec, *se


@torch.library.custom_op("fastregnet::pointwise_conv_bn_bwd", mutates_args=(), device_types=("cuda", "cpu"))
@_on_input_device
def _pointwise_conv_bn_bwd_op(grad_out: Tensor, x: Tensor, weight: Tensor, y: Tensor, out: Optional[Tensor],
                              mean: Tensor, invstd: Tensor, gamma: Tensor, beta: Tensor, stride: int, relu: bool,
                              gate: Optional[Tensor], pooled: Optional[Tensor], hidden: Optional[Tensor],
                              fc1_weight: Optional[Tensor], fc2_weight: Optional[Tensor],
                              sample_scale: Optional[Tensor] = None
                              ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(grad_x, grad_weight, grad_gamma, grad_beta, grad_shortcut, grad fc1 weight, fc1 bias, fc2 weight, fc2 bias);
    `out` is given when the forward had a shortcut, the SE tensors when it had SE; absent grads are empty."""
    from .kernels.pointwise_conv import pointwise_conv_bwd

    se = (pooled, hidden, fc1_weight, fc2_weight) if gate is not None else None
    gx, gw, dgamma, dbeta, g_shortcut, se_grads = pointwise_conv_bwd(grad_out, x, weight, y, out, mean, invstd, gamma,
                                                                     beta, stride, relu, gate, se, sample_scale)
    se_grads = se_grads if se_grads is not None else [_absent(x) for _ in range(4)]
    return gx, gw, dgamma, dbeta, g_shortcut if g_shortcut is not None else _absent(x), *se_grads


@_pointwise_conv_bn_bwd_op.register_fake
def _(grad_out, x, weight, y, out, mean, invstd, gamma, beta, stride, relu, gate, pooled, hidden, fc1_weight,
      fc2_weight, sample_scale=None):
    c = weight.shape[0]
    f32 = dict(dtype=torch.float32)
    g_shortcut = _empty_nhwc(y.shape, y) if out is not None else _absent(x)
    if gate is None:
        se = [_absent(x) for _ in range(4)]
    else:
        se = [x.new_empty(fc1_weight.shape, **f32), x.new_empty(fc1_weight.shape[0], **f32),
              x.new_empty(fc2_weight.shape, **f32), x.new_empty(fc2_weight.shape[0], **f32)]
    return (_empty_nhwc(x.shape, x), torch.empty_like(weight, memory_format=torch.contiguous_format),
            x.new_empty(c, **f32), x.new_empty(c, **f32), g_shortcut, *se)


def _pointwise_train_setup(ctx, inputs, output):
    (x, weight, gamma, beta, eps, stride, relu, shortcut, fc1_weight, fc1_bias, fc2_weight, fc2_bias,
     sample_scale) = inputs
    out, y, mean, var, invstd, gate, pooled, hidden = output
    ctx.mark_non_differentiable(y, mean, var, invstd, gate, pooled, hidden)
    has_se = fc1_weight is not None
    # Saved: the input, weight, pre-BN y and per-channel statistics; the output only when a shortcut makes it the
    # ReLU mask (it is the next block's input, kept alive anyway); the SE's per-image vectors.
    ctx.save_for_backward(x, weight, y, out if shortcut is not None else None, mean, invstd, gamma, beta,
                          *((gate, pooled, hidden, fc1_weight, fc2_weight) if has_se else (None,) * 5), sample_scale)
    ctx.conf = (stride, relu, shortcut is not None, has_se,
                tuple(t.dtype for t in (fc1_weight, fc1_bias, fc2_weight, fc2_bias)) if has_se else None)


def _pointwise_train_backward(ctx, grad_out, *_unused):
    refuse_double_backward("pointwise_conv_bn_train")
    (x, weight, y, out, mean, invstd, gamma, beta, gate, pooled, hidden, fc1_weight, fc2_weight,
     sample_scale) = ctx.saved_tensors
    stride, relu, residual, has_se, se_dtypes = ctx.conf
    gx, gw, dgamma, dbeta, g_shortcut, *se_grads = torch.ops.fastregnet.pointwise_conv_bn_bwd(
        grad_out, x, weight, y, out, mean, invstd, gamma, beta, stride, relu, gate, pooled, hidden, fc1_weight,
        fc2_weight, sample_scale)
    se_grads = [g.to(dt) for g, dt in zip(se_grads, se_dtypes)] if has_se else [None] * 4
    return (gx, gw, dgamma.to(gamma.dtype), dbeta.to(beta.dtype), None, None, None,
            g_shortcut if residual else None, *se_grads, None)


_pointwise_conv_bn_train_op.register_autograd(_pointwise_train_backward, setup_context=_pointwise_train_setup)


@torch.library.custom_op("fastregnet::bn_update_running_stats", mutates_args=("running_mean", "running_var"),
                         device_types=("cuda", "cpu"))
@_on_input_device
def _bn_update_running_stats_op(running_mean: Tensor, running_var: Tensor, mean: Tensor, var: Tensor, count: int,
                                momentum: float) -> None:
    """In place: running = (1 - momentum) * running + momentum * batch (unbiased variance), one launch."""
    from .kernels.batch_norm import bn_update_running_stats

    bn_update_running_stats(running_mean, running_var, mean, var, count, momentum)


@_bn_update_running_stats_op.register_fake
def _(running_mean, running_var, mean, var, count, momentum):
    return None


# ----------------------------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------------------------

_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _dtype_supported(x: Tensor) -> tuple[bool, str]:
    if x.dim() != 4:
        return False, f"input must be 4-D, got shape {tuple(x.shape)}"
    if x.dtype not in _KERNEL_DTYPES:
        return False, f"dtype {x.dtype} (kernels cover fp32, fp16, bf16)"
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and triton_interpreting():
        return False, "bf16 tl.dot is wrong under the Triton interpreter; test bf16 on a GPU"
    return True, ""


def _grouped_weight_supported(weight: Tensor, stride: int, groups: int) -> tuple[bool, str]:
    c = weight.shape[0]
    if c % groups or tuple(weight.shape) != (c, c // groups, 3, 3):
        return False, f"needs a 3x3 conv with equal in/out channels, got weight {tuple(weight.shape)}"
    if stride not in (1, 2):
        return False, f"stride {stride} (kernels cover 1 and 2)"
    return True, ""


def grouped_conv_supported(x: Tensor, weight: Tensor, stride: int, groups: int) -> tuple[bool, str]:
    """Whether the grouped-conv kernels cover this call, and if not, why."""
    ok, why = _dtype_supported(x)
    if ok and x.shape[1] != weight.shape[0]:
        ok, why = False, f"weight {tuple(weight.shape)} does not fit {x.shape[1]} input channels"
    return (ok, why) if not ok else _grouped_weight_supported(weight, stride, groups)


def _autocast(x: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """Custom ops see no autocast: cast like autocast would for a conv (input and weight to the autocast dtype)."""
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.get_autocast_dtype(x.device.type)
        return x.to(dtype), weight.to(dtype)
    return x, weight.to(x.dtype)


def grouped_conv_bias_act(x: Tensor, weight: Tensor, bias: Tensor, stride: int, groups: int, relu: bool) -> Tensor:
    """Eval-mode grouped 3x3 conv with BN folded into (weight, bias), then ReLU if `relu`."""
    if use_triton(x, *grouped_conv_supported(x, weight, stride, groups)):
        x, weight = _autocast(x, weight)
        return torch.ops.fastregnet.grouped_conv_bias_act(x, weight, bias, stride, groups, relu)
    return ref.conv_bias_act_ref(x, weight, bias, stride, groups, relu)


def grouped_conv_bn_act_train(x: Tensor, weight: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                              running_mean: Optional[Tensor], running_var: Optional[Tensor], momentum: float,
                              eps: float, stride: int, groups: int, relu: bool) -> Tensor:
    """Train-mode grouped 3x3 conv + BN (batch statistics) + ReLU; updates running_mean/var in place."""
    if use_triton(x, *grouped_conv_supported(x, weight, stride, groups)):
        x, weight = _autocast(x, weight)
        out, _, mean, var, _ = torch.ops.fastregnet.grouped_conv_bn_act_train(x, weight, bn_weight, bn_bias, eps,
                                                                              stride, groups, relu)
        _update_running(running_mean, running_var, mean, var, out, momentum)
        return out
    return ref.conv_bn_act_train_ref(x, weight, bn_weight, bn_bias, running_mean, running_var, momentum, eps, stride,
                                     groups, relu)


def conv_bias_act(x: Tensor, weight: Tensor, bias: Tensor, stride: int, groups: int, relu: bool) -> Tensor:
    """Eval-mode conv (stem, 1x1 a/c/proj) with BN folded into (weight, bias), then ReLU if `relu`."""
    return ref.conv_bias_act_ref(x, weight, bias, stride, groups, relu)


def _pointwise_supported(x: Tensor, weight: Tensor, stride: int) -> tuple[bool, str]:
    ok, why = _dtype_supported(x)
    if ok and tuple(weight.shape[1:]) != (x.shape[1], 1, 1):
        ok, why = False, f"weight {tuple(weight.shape)} is not a 1x1 conv of {x.shape[1]} input channels"
    if ok and stride not in (1, 2):
        ok, why = False, f"stride {stride} (kernels cover 1 and 2)"
    return ok, why


def _update_running(running_mean, running_var, mean, var, out: Tensor, momentum: float) -> None:
    """The running-statistics update after a Triton training op (as nn.BatchNorm2d's, one launch)."""
    if running_mean is not None and momentum:
        n, _, h, w = out.shape
        torch.ops.fastregnet.bn_update_running_stats(running_mean, running_var, mean, var, n * h * w, momentum)


def conv_bn_act_train(x: Tensor, weight: Tensor, bn_weight: Tensor, bn_bias: Tensor, running_mean: Optional[Tensor],
                      running_var: Optional[Tensor], momentum: float, eps: float, stride: int, groups: int,
                      relu: bool) -> Tensor:
    """Train-mode conv + BatchNorm with batch statistics (+ ReLU); updates running_mean/var in place. 1x1 convs
    (the block's a and projection) run the Triton kernels; the stem runs the reference."""
    pointwise = weight.shape[-2:] == (1, 1) and groups == 1
    if pointwise and use_triton(x, *_pointwise_supported(x, weight, stride)):
        x, weight = _autocast(x, weight)
        out, _, mean, var, *_ = torch.ops.fastregnet.pointwise_conv_bn_train(x, weight, bn_weight, bn_bias, eps,
                                                                            stride, relu, None, None, None, None,
                                                                            None)
        _update_running(running_mean, running_var, mean, var, out, momentum)
        return out
    return ref.conv_bn_act_train_ref(x, weight, bn_weight, bn_bias, running_mean, running_var, momentum, eps, stride,
                                     groups, relu)


def se_conv_bn_add_relu_train(x: Tensor, se: tuple | None, weight: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                              running_mean: Optional[Tensor], running_var: Optional[Tensor], momentum: float,
                              eps: float, shortcut: Tensor, sample_scale: Optional[Tensor] = None) -> Tensor:
    """The tail of a residual block in training: relu(bn(conv1x1(SE(x))) * s + shortcut), BN with batch statistics
    (running stats updated in place), se = (fc1_w, fc1_b, fc2_w, fc2_b) or None, s the per-image stochastic-depth
    factors `sample_scale` (N,) or 1 (timm's DropPath on the branch; on Triton applied in the BN epilogue and its
    backward kernels, no extra pass).

    On the Triton path one op: SE squeeze and excitation, the GEMM with the gate applied to its input tiles and the
    statistics epilogue, and BN + residual + ReLU in one pass; its backward runs the SE backward between conv c's
    weight-grad and data-grad kernels, so the SE adds no pass over the activation."""
    if use_triton(x, *_pointwise_supported(x, weight, 1)):
        x, weight = _autocast(x, weight)
        out, _, mean, var, *_ = torch.ops.fastregnet.pointwise_conv_bn_train(
            x, weight, bn_weight, bn_bias, eps, 1, True, shortcut.to(x.dtype), *(se if se is not None else [None] * 4),
            sample_scale)
        _update_running(running_mean, running_var, mean, var, out, momentum)
        return out
    if se is not None:
        x = ref.squeeze_excite_ref(x, *se)
    y = ref.conv_bn_act_train_ref(x, weight, bn_weight, bn_bias, running_mean, running_var, momentum, eps, 1, 1, False)
    if sample_scale is not None:
        y = y * sample_scale.to(y.dtype).view(-1, 1, 1, 1)
    return ref.add_relu_ref(y, shortcut)


def conv_sync_bn_act_train(x: Tensor, weight: Tensor, bn_weight: Tensor, bn_bias: Tensor,
                           running_mean: Optional[Tensor], running_var: Optional[Tensor], momentum: float, eps: float,
                           stride: int, groups: int, relu: bool, process_group=None) -> Tensor:
    """Train-mode conv + BatchNorm synchronized across the ranks of process_group (nn.SyncBatchNorm's math, one
    all_gather forward and one all_reduce backward, `fastregnet.sync_batch_norm`) + optional ReLU. On Triton (1x1
    convs and the grouped 3x3) the exchange sits between the conv epilogue's statistics and the BN apply, and
    between the backward's reduction and its grads; otherwise PyTorch's conv, then the synchronized BN."""
    from .sync_batch_norm import TritonSyncConvBN, sync_batch_norm

    if weight.shape[-2:] == (1, 1) and groups == 1:
        supported = _pointwise_supported(x, weight, stride)
    elif weight.shape[-2:] == (3, 3) and x.shape[1] == weight.shape[0]:  # the block's f.b (not the stem)
        supported = grouped_conv_supported(x, weight, stride, groups)
    else:
        supported = None  # no kernel family: PyTorch's conv, as for the unsynchronized stem
    if supported is not None and use_triton(x, *supported):
        x, weight = _autocast(x, weight)
        return TritonSyncConvBN.apply(x, weight, bn_weight, bn_bias, running_mean, running_var, momentum, eps, stride,
                                      groups, relu, process_group)
    y = torch.nn.functional.conv2d(x, weight, None, stride, weight.shape[-1] // 2, 1, groups)
    y = sync_batch_norm(y, bn_weight, bn_bias, running_mean, running_var, momentum, eps, process_group)
    return torch.relu(y) if relu else y


def residual_block_eval(x: Tensor, a: tuple, b: tuple, se: tuple | None, c: tuple, proj: tuple | None) -> Tensor:
    """A whole residual bottleneck block in eval mode with gradients off. Each conv part is
    (weight, (gamma, beta, running_mean, running_var), eps) of its conv and eval BatchNorm; b is followed by
    (stride, groups); se = (fc1_w, fc1_b, fc2_w, fc2_b) or None; proj a part or None (a stride-b 1x1 conv).

    On the Triton path this is 6 launches (3 without SE), each applying its BatchNorm in the epilogue from the
    live tensors: conv a; grouped conv b with the SE squeeze in its epilogue; the excitation's pool, fc1 and fc2;
    conv c with the gate applied to its input tiles, the projection's bn2 held in registers (or the identity
    shortcut) added in the epilogue, and the final ReLU. The reference path (the "torch" backend, and shapes the
    kernels do not cover) folds each BatchNorm into its conv, afresh on every call."""
    (wa, bn_a, eps_a), (wb, bn_b, eps_b, stride, groups), (wc, bn_c, eps_c) = a, b, c
    supported, why = _dtype_supported(x)
    if supported:
        supported, why = _grouped_weight_supported(wb, stride, groups)
    if use_triton(x, supported, why):
        x, wa = _autocast(x, wa)
        wb, wc = wb.to(x.dtype), wc.to(x.dtype)
        y = torch.ops.fastregnet.pointwise_conv(x, wa, bn_a, eps_a, True, None, None, None, None, [], 0.0, 1)
        y, sq_part = torch.ops.fastregnet.grouped_conv_bn_eval(y, wb, bn_b, eps_b, stride, groups, se is not None)
        gate = None
        if se is not None:
            ho, wo = y.shape[-2:]
            gate = torch.ops.fastregnet.se_excite(sq_part, y.shape[0], ho * wo, _squeeze_rows(ho, wo, y.dtype), *se)
        if proj is None:
            return torch.ops.fastregnet.pointwise_conv(y, wc, bn_c, eps_c, True, gate, x, None, None, [], 0.0, 1)
        wp, bn_p, eps_p = proj
        return torch.ops.fastregnet.pointwise_conv(y, wc, bn_c, eps_c, True, gate, None, x, wp.to(x.dtype), bn_p,
                                                   eps_p, stride)
    y = ref.conv_bias_act_ref(x, *ref.fold_bn(wa, *bn_a, eps_a), 1, 1, True)
    y = ref.conv_bias_act_ref(y, *ref.fold_bn(wb, *bn_b, eps_b), stride, groups, True)
    if se is not None:
        y = ref.squeeze_excite_ref(y, *se)
    y = ref.conv_bias_act_ref(y, *ref.fold_bn(wc, *bn_c, eps_c), 1, 1, False)
    shortcut = x
    if proj is not None:
        wp, bn_p, eps_p = proj
        shortcut = ref.conv_bias_act_ref(x, *ref.fold_bn(wp, *bn_p, eps_p), stride, 1, False)
    return ref.add_relu_ref(y, shortcut)
