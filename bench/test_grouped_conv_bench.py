"""Microbenchmarks: the fused grouped 3x3 conv + BN + ReLU against cuDNN conv + BN + ReLU, on the f.b shapes of
RegNetY-400MF, 1.6GF, 4.0GF and 16GF, batch 64/128, fp16/bf16, channels_last: forward eval, forward train, backward.

Run on a GPU:  pytest bench/ --benchmark-only   (kept out of the default test run: testpaths is tests/).
Device time comes from fastregnet.roofline.measure (CUDA events; the same timer as `fastregnet bench`) inside
benchmark.pedantic; each record carries time, achieved GB/s and the fraction of the bandwidth floor (bytes each
tensor must move once / copy bandwidth measured by fastregnet.roofline.measure_device). Without a GPU every case is
skipped, saying so.
"""

import statistics

import pytest
import torch
import torch.nn.functional as F

import fastregnet
from fastregnet import ops
from fastregnet.roofline import measure, measure_device
from fastregnet.shapes import grouped_conv_shapes

if not torch.cuda.is_available():
    pytest.skip("grouped-conv microbenchmarks need a CUDA GPU (none here)", allow_module_level=True)

MODELS = ["regnet_y_400mf", "regnet_y_1_6gf", "RegNetY-4.0GF", "regnet_y_16gf"]
CASES = [dict(s, batch=b) for m in MODELS for s in grouped_conv_shapes(m) for b in (64, 128)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.fixture(scope="session")
def copy_bandwidth():
    """Measured device-to-device copy bandwidth (bytes/s, read + write)."""
    return measure_device(torch.device("cuda"), torch.float16)["copy_bandwidth_bytes_per_s"]


def _floor_bytes(case, es, mode):
    n, c, hw, s = case["batch"], case["channels"], case["hw"], case["stride"]
    ho = (hw - 1) // s + 1
    x, y, w = n * hw * hw * c * es, n * ho * ho * c * es, c * case["group_width"] * 9 * es
    if mode == "fwd_eval":
        return x + y + w
    if mode == "fwd_train":
        return x + 2 * y + w  # y once for the statistics in-register, out written; y saved for backward
    return 2 * y + 2 * x + w  # backward: grad_out, saved y, x read; grad_x written


def _setup(case, dtype, provider, mode):
    n, c, hw, g, s = case["batch"], case["channels"], case["hw"], case["groups"], case["stride"]
    x = torch.randn(n, c, hw, hw, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(c, c // g, 3, 3, device="cuda") * 0.1).to(dtype)
    gamma, beta = torch.ones(c, device="cuda"), torch.zeros(c, device="cuda")
    bias = torch.zeros(c, device="cuda")
    backend = "triton" if provider == "fastregnet" else "torch"

    def fwd_eval():
        with fastregnet.use_backend(backend), torch.no_grad():
            return ops.grouped_conv_bias_act(x, w, bias, s, g, True)

    def fwd_train():
        with fastregnet.use_backend(backend), torch.no_grad():
            if provider == "fastregnet":
                return ops.grouped_conv_bn_act_train(x, w, gamma, beta, None, None, 0.0, 1e-5, s, g, True)
            y = F.conv2d(x, w, None, s, 1, 1, g)
            return F.relu(F.batch_norm(y, None, None, gamma.to(dtype), beta.to(dtype), True, 0.0, 1e-5))

    if mode != "bwd":
        return fwd_eval if mode == "fwd_eval" else fwd_train
    xr, wr, gr, br = x.requires_grad_(), w.requires_grad_(), gamma.requires_grad_(), beta.requires_grad_()
    with fastregnet.use_backend(backend):
        if provider == "fastregnet":
            out = ops.grouped_conv_bn_act_train(xr, wr, gr, br, None, None, 0.0, 1e-5, s, g, True)
        else:
            out = F.relu(F.batch_norm(F.conv2d(xr, wr, None, s, 1, 1, g), None, None, gr, br, True, 0.0, 1e-5))
    go = torch.randn_like(out)
    return lambda: torch.autograd.grad(out, (xr, wr, gr, br), go, retain_graph=True)


@pytest.mark.parametrize("mode", ["fwd_eval", "fwd_train", "bwd"])
@pytest.mark.parametrize("provider", ["fastregnet", "cudnn"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-s{c['stage']}-st{c['stride']}-b{c['batch']}"
                                             for c in CASES])
def test_grouped_conv(benchmark, copy_bandwidth, case, dtype, provider, mode):
    fn = _setup(case, DTYPES[dtype], provider, mode)
    device = torch.device("cuda")
    ms = benchmark.pedantic(lambda: statistics.median(measure(fn, device, 10, 50)) * 1e3, rounds=1, iterations=1)
    nbytes = _floor_bytes(case, 2, mode)
    benchmark.extra_info.update(case | {"dtype": dtype, "provider": provider, "mode": mode, "ms": ms,
                                        "gb_per_s": nbytes / (ms * 1e-3) / 1e9,
                                        "fraction_of_bandwidth_floor": nbytes / copy_bandwidth / (ms * 1e-3),
                                        "gpu": torch.cuda.get_device_name()})
