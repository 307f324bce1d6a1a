"""What a RegNet (or its features_only body) checks of an image batch before the stem, and the layout it runs in."""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["prepare_images", "last_stage_hw"]


def last_stage_hw(h: int, w: int, strides: Sequence[int]) -> tuple[int, int]:
    """The last stage's map size for an h x w input (the stem's stride 2, then each stage's)."""
    for s in (2, *strides):
        h, w = (h - 1) // s + 1, (w - 1) // s + 1
    return h, w


def prepare_images(x, model: torch.nn.Module):
    """x checked for `model` (a RegNet or its features_only body: a 4-D floating NCHW batch of model.in_channels
    on the stem weight's device and dtype, or autocast), in the layout the body runs in: channels_last on CUDA,
    where the Triton kernels and cuDNN's fast grouped convs want it. An fx Proxy (symbolic tracing) passes through
    untouched, before any parameter is read, so the traced graph is torchvision's."""
    if isinstance(x, torch.fx.Proxy):
        return x
    # the stem conv's weight: its first parameter (fuse_modules wraps the conv; a quantized stem has none)
    in_channels, weight = model.in_channels, next(model.stem.parameters(), None)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"expected a 4-D input (N, {in_channels}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_channels:
        raise ValueError(f"expected {in_channels} input channels, got {x.shape[1]} (shape {tuple(x.shape)}); "
                         f"images must be NCHW")
    if not x.is_floating_point():
        raise TypeError(f"expected a floating-point input, got {x.dtype}; convert images with x.float() / 255 "
                        f"and normalize them")
    if min(x.shape[-2:]) < 1:
        raise ValueError(f"input has an empty spatial size {tuple(x.shape[-2:])}")
    if weight is not None and x.device != weight.device:
        raise ValueError(f"input is on {x.device} but the model is on {weight.device}; move one with .to()")
    if weight is not None and x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
        raise TypeError(f"input dtype {x.dtype} does not match the model's {weight.dtype}; cast one of them "
                        f"or run under torch.autocast")
    last_hw = last_stage_hw(*x.shape[-2:], model.block_params.strides)
    if model.training and x.shape[0] == 1 and math.prod(last_hw) == 1:
        raise ValueError("training with batch size 1 and a 1x1 last stage: BatchNorm needs more than one value "
                         "per channel; use a larger batch or image")
    if x.is_cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x
