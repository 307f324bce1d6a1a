"""The floor under a model's run time: the least work a forward (or training step) must do, and the device's
measured rates.

Work, from the design-space complexity counter (pycls' flops = multiply-adds, params, acts = conv outputs):
- forward FLOPs  = 2 * MACs * batch
- forward bytes  = element_size * (params + batch * (input + 2 * acts + classes)): weights and the input read
  once, every conv output written once and read once, logits written. A layer-by-layer floor: fusion across
  layers could go below it, nothing layer-wise can.
- training step  = 3x the forward FLOPs (forward, data grad, weight grad) and
  element_size * (2 * params + batch * (input + 5 * acts)) + 4 * 5 * params bytes: the forward's traffic, saved
  activations read back, activation grads written and read, weight grads written, and SGD with momentum reading
  weight, grad and momentum and writing weight and momentum in fp32.
Floor time = max(bytes / copy bandwidth, FLOPs / matmul rate), both measured on the device by `measure_device`.
These are models of the minimum, labelled as such wherever they are reported.
"""

from __future__ import annotations

import time

import torch

from .complexity import count_complexity
from .design import RegNetParams

__all__ = ["work", "floor_seconds", "measure_device", "measure"]


def work(params: RegNetParams, batch: int, resolution: int, element_size: int, mode: str,
         num_classes: int = 1000) -> dict:
    """{"flops", "bytes"} the layer-wise floor needs for one forward ("infer") or training step ("train")."""
    cx = count_complexity(params, resolution, num_classes)
    image = 3 * resolution * resolution
    fwd_flops = 2 * cx["flops"] * batch
    if mode == "infer":
        return {"flops": fwd_flops,
                "bytes": element_size * (cx["params"] + batch * (image + 2 * cx["acts"] + num_classes))}
    if mode == "train":
        return {"flops": 3 * fwd_flops,
                "bytes": element_size * (2 * cx["params"] + batch * (image + 5 * cx["acts"])) + 4 * 5 * cx["params"]}
    raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")


def floor_seconds(w: dict, bandwidth: float, matmul_rate: float) -> float:
    """The roofline floor for work `w` on a device with `bandwidth` bytes/s and `matmul_rate` FLOP/s."""
    return max(w["bytes"] / bandwidth, w["flops"] / matmul_rate)


def measure(fn, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of fn(): CUDA events on a GPU (device time), wall clock on a CPU."""
    for _ in range(warmup):
        fn()
    times = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def measure_device(device: torch.device, dtype: torch.dtype, small: bool = False) -> dict:
    """Measured copy bandwidth (bytes/s, read + write) and matmul rate (FLOP/s in `dtype`) of `device`.
    small=True: tiny sizes (a smoke run of the code, not a measurement worth quoting)."""
    gpu = device.type == "cuda"
    n = (1 << 28) if gpu else (1 << 24)  # 1 GiB of fp32 on a GPU, 64 MiB on a CPU
    n = (1 << 18) if small else n
    a = torch.empty(n, device=device, dtype=torch.float32)
    b = torch.empty_like(a)
    copy_s = min(measure(lambda: b.copy_(a), device, 3, 10))
    m = 8192 if gpu else 1024
    m = 128 if small else m
    mm_dtype = dtype if gpu or dtype == torch.float32 else torch.float32  # CPU half matmul is not a fair rate
    x = torch.randn(m, m, device=device, dtype=mm_dtype)
    y = torch.randn(m, m, device=device, dtype=mm_dtype)
    mm_s = min(measure(lambda: x @ y, device, 3, 10))
    return {"copy_bandwidth_bytes_per_s": 2 * n * 4 / copy_s, "matmul_flops_per_s": 2 * m**3 / mm_s,
            "matmul_dtype": str(mm_dtype).replace("torch.", ""), "measured_on": str(device)}
