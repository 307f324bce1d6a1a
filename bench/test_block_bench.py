"""Microbenchmarks against torchvision (cuDNN), channels_last, fp16/bf16, on each stage's first block of
RegNetY-400MF, 1.6GF and 16GF at batch 64/128. GPU only.

- a whole block on the fused inference path (5 launches: conv a, grouped conv b + SE squeeze, SE fc1, SE fc2, conv c +
  shortcut + ReLU) against the torchvision block, eval, no grad;
- a whole block's training step (forward + backward, batch statistics) against the torchvision block under AMP;
- the SE path alone, from the grouped conv's output to conv c's: squeeze, excitation and the gated GEMM (eval,
  folded BN) against torchvision's SE module (pool, two 1x1 convs, sigmoid, scale) + conv c + BN.

Run on a GPU:  pytest bench/ --benchmark-only
"""

import statistics

import pytest
import torch

import fastregnet
from fastregnet.layers import ResBottleneckBlock
from fastregnet.roofline import measure
from fastregnet.shapes import block_shapes

if not torch.cuda.is_available():
    pytest.skip("block microbenchmarks need a CUDA GPU (none here)", allow_module_level=True)


def _blocks(case, dtype):
    """(fastregnet block, torchvision block) of a case, same weights, on the GPU in `dtype`, channels_last."""
    from torchvision.models.regnet import ResBottleneckBlock as TVBlock

    args = (case["width_in"], case["width_out"], case["stride"])
    ours = ResBottleneckBlock(*args, case["group_width"], 1.0, case["se_ratio"])
    theirs = TVBlock(*args, torch.nn.BatchNorm2d, torch.nn.ReLU, case["group_width"], 1.0, case["se_ratio"])
    theirs.load_state_dict(ours.state_dict())
    return [b.to("cuda", dtype, memory_format=torch.channels_last) for b in (ours, theirs)]


def _input(case, dtype):
    x = torch.randn(case["batch"], case["width_in"], case["hw"], case["hw"], device="cuda", dtype=dtype)
    return x.contiguous(memory_format=torch.channels_last)


def _record(benchmark, fn, case, dtype, provider):
    ms = benchmark.pedantic(lambda: statistics.median(measure(fn, torch.device("cuda"), 10, 50)) * 1e3, rounds=1,
                            iterations=1)
    benchmark.extra_info.update(case | {"dtype": dtype, "provider": provider, "ms": ms,
                                        "gpu": torch.cuda.get_device_name()})


CASES = [dict(s, batch=b) for m in ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf") for s in block_shapes(m)
         for b in (64, 128)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("provider", ["fastregnet", "torchvision"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-s{c['stage']}-b{c['batch']}" for c in CASES])
def test_block_inference(benchmark, case, dtype, provider):
    ours, theirs = _blocks(case, DTYPES[dtype])
    block = (ours if provider == "fastregnet" else theirs).eval()
    x = _input(case, DTYPES[dtype])

    def run():
        with torch.no_grad(), fastregnet.use_backend("triton"):
            return block(x)

    _record(benchmark, run, case, dtype, provider)


@pytest.mark.parametrize("provider", ["fastregnet", "torchvision"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-s{c['stage']}-b{c['batch']}" for c in CASES])
def test_block_training_step(benchmark, case, dtype, provider):
    ours, theirs = _blocks(case, torch.float32)  # fp32 parameters, as AMP training keeps them
    block = (ours if provider == "fastregnet" else theirs).train()
    x = _input(case, torch.float32).requires_grad_()

    def run():
        with fastregnet.use_backend("triton"), torch.autocast("cuda", DTYPES[dtype]):
            out = block(x)
        out.float().sum().backward()

    _record(benchmark, run, case, dtype, provider)


@pytest.mark.parametrize("provider", ["fastregnet", "torchvision"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-s{c['stage']}-b{c['batch']}" for c in CASES])
def test_se_path(benchmark, case, dtype, provider):
    from fastregnet.kernels.pointwise_conv import pointwise_conv_fwd
    from fastregnet.kernels.squeeze_excite import se_excite, se_squeeze

    ours, theirs = _blocks(case, DTYPES[dtype])
    ours.eval(), theirs.eval()
    w_b = ours.f.b[0].weight.shape[0]
    hw = (case["hw"] - 1) // case["stride"] + 1
    y = torch.rand(case["batch"], w_b, hw, hw, device="cuda", dtype=DTYPES[dtype])
    y = y.contiguous(memory_format=torch.channels_last)  # stands for conv b's output
    se = ours.f.se
    wc, bn_c, eps_c = ours.f.c.eval_bn()

    def run():
        with torch.no_grad():
            if provider == "torchvision":
                return theirs.f.c(theirs.f.se(y))
            sq_part, rows_per_block = se_squeeze(y)
            gate = se_excite(sq_part, y.shape[0], hw * hw, rows_per_block, *se.params())
            return pointwise_conv_fwd(y, wc, bn_c, eps_c, False, gate)

    _record(benchmark, run, case, dtype, provider)
