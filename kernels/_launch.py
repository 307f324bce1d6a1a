"""What every launcher shares: counting Triton launches by kernel name for whoever is listening, the small
host-side conversions (NHWC storage, tl.dot precision, pointer types for ahead-of-time signatures), and the
grouped launch order the GEMM-like kernels use.

`fastregnet.count_kernel_launches()` pushes a Counter here; each launcher calls `record(kernel)` once per launch.
"""

from __future__ import annotations

from collections import Counter

import torch
import triton
import triton.language as tl

_listeners: list[Counter] = []

# The rows a weight-grad split reduces over are read once per K block by that split's programs, which run together
# in launch order: keeping a split's rows (every tensor its programs read) within 16 MiB lets those re-reads hit L2
# (a third of H100's 50 MB, two fifths of A100's 40 MB) instead of going back to DRAM.
WGRAD_SLAB_BYTES = 16 * 2**20


def cdiv(a: int, b: int) -> int:
    """Ceiling division for host code: triton.cdiv is a constexpr function whose every host call goes through
    Triton's JIT wrapper (~5 us), and launchers make dozens per launch."""
    return -(-a // b)


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


def wide_offsets(block_m: int, rows_per_image: int, image_elements: int, halo_images: int = 0) -> bool:
    """WIDE_OFFSETS for a kernel that addresses its input as 32-bit offsets from its tile's first row: whether
    BLOCK_M output rows, which span at most cdiv(BLOCK_M, rows_per_image) + 1 images (+ `halo_images` where taps
    reach past them), can reach 2^31 elements of the input."""
    return (cdiv(block_m, rows_per_image) + 1 + halo_images) * image_elements >= 2**31


def device_arch(device: torch.device) -> int:
    """sm_XY of a CUDA device as XY (80 elsewhere: the interpreter ignores tiles' registers)."""
    if device.type != "cuda":
        return 80
    major, minor = torch.cuda.get_device_capability(device)
    return 10 * major + minor


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input precision. fp32 storage follows PyTorch's policy for convolutions, read at every launch:
    TF32 tensor cores while torch.backends.cudnn.allow_tf32 is on (PyTorch's default, what cuDNN then does), exact
    IEEE FMA when it is off. For fp16/bf16 the value is ignored."""
    if dtype == torch.float32:
        return "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"
    return "tf32"


def pointer_type(dtype: torch.dtype) -> str:
    """The Triton signature type of a pointer to `dtype` storage, for ahead-of-time compilation."""
    return {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]


@triton.jit
def grouped_launch_order(GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of this program of a 2-D grid, with the row blocks taken GROUP_M at a time across all N blocks
    (the Triton matmul tutorial's L2 grouping): programs that run together share their A rows and B columns, so a
    large activation is read from DRAM about once instead of once per N block."""
    num_m = tl.num_programs(0)
    num_n = tl.num_programs(1)
    lin = tl.program_id(1) * num_m + tl.program_id(0)  # launch order: axis 0 fastest
    per_group = GROUP_M * num_n
    first_m = (lin // per_group) * GROUP_M
    rows = tl.minimum(num_m - first_m, GROUP_M)
    return first_m + (lin % per_group) % rows, (lin % per_group) // rows
