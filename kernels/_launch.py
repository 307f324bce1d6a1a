"""What every launcher shares: counting Triton launches by kernel name for whoever is listening, and the small
host-side conversions (NHWC storage, tl.dot precision, pointer types for ahead-of-time signatures).

`fastregnet.count_kernel_launches()` pushes a Counter here; each launcher calls `record(kernel)` once per launch.
"""

from __future__ import annotations

from collections import Counter

import torch

_listeners: list[Counter] = []


def record(kernel, n: int = 1) -> None:
    """Note `n` launches of `kernel` (a @triton.jit function) in every active counter."""
    if _listeners:
        name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", str(kernel))
        for counter in _listeners:
            counter[name] += n


def push(counter: Counter) -> None:
    _listeners.append(counter)


def pop(counter: Counter) -> None:
    _listeners.remove(counter)


def nhwc(t: torch.Tensor) -> torch.Tensor:
    """The same tensor (NCHW shape) with channels_last strides, copying only when it isn't already."""
    return t.contiguous(memory_format=torch.channels_last)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision: exact ("ieee") for fp32 storage; for fp16/bf16 the value is ignored."""
    return "ieee" if dtype == torch.float32 else "tf32"


def pointer_type(dtype: torch.dtype) -> str:
    """The Triton signature type of a pointer to `dtype` storage, for ahead-of-time compilation."""
    return {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]
