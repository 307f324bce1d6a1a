"""Microbenchmarks: a whole RegNet block on the fused inference path (4 launches: conv a, grouped conv b + SE
squeeze, SE excite, conv c + shortcut + ReLU) against the torchvision block (cuDNN), eval, no grad, channels_last,
fp16/bf16, on each stage's first block of RegNetY-400MF, 1.6GF and 16GF at batch 64/128. GPU only.

Run on a GPU:  pytest bench/ --benchmark-only
"""

import statistics

import pytest
import torch

import fastregnet
from fastregnet.layers import ResBottleneckBlock
from fastregnet.roofline import measure
from shapes import block_shapes

if not torch.cuda.is_available():
    pytest.skip("block microbenchmarks need a CUDA GPU (none here)", allow_module_level=True)

CASES = [dict(s, batch=b) for m in ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf") for s in block_shapes(m)
         for b in (64, 128)]
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.parametrize("provider", ["fastregnet", "torchvision"])
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("case", CASES, ids=[f"{c['model']}-s{c['stage']}-b{c['batch']}" for c in CASES])
def test_block_inference(benchmark, case, dtype, provider):
    from torchvision.models.regnet import ResBottleneckBlock as TVBlock

    args = (case["width_in"], case["width_out"], case["stride"])
    if provider == "fastregnet":
        block = ResBottleneckBlock(*args, case["group_width"], 1.0, case["se_ratio"])
    else:
        block = TVBlock(*args, torch.nn.BatchNorm2d, torch.nn.ReLU, case["group_width"], 1.0, case["se_ratio"])
    block = block.to("cuda", DTYPES[dtype], memory_format=torch.channels_last).eval()
    x = torch.randn(case["batch"], case["width_in"], case["hw"], case["hw"], device="cuda", dtype=DTYPES[dtype])
    x = x.contiguous(memory_format=torch.channels_last)

    def run():
        with torch.no_grad(), fastregnet.use_backend("triton" if provider == "fastregnet" else "torch"):
            return block(x)

    device = torch.device("cuda")
    ms = benchmark.pedantic(lambda: statistics.median(measure(run, device, 10, 50)) * 1e3, rounds=1, iterations=1)
    benchmark.extra_info.update(case | {"dtype": dtype, "provider": provider, "ms": ms,
                                        "gpu": torch.cuda.get_device_name()})
