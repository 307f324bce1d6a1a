"""Whole models on the Triton backend against torchvision: eval outputs with the fused inference path,
torch.compile, and auto mode's choice on CPU (a training step: test_models_triton_training.py)."""

import copy

import pytest
import torch

import fastregnet
from conftest import DEVICE, HAS_GPU, randomize_bn, rel_err, torchvision_model

pytestmark = pytest.mark.usefixtures("triton_backend", "poisoned_kernel_buffers")


def _tv_and_ours(name, seed):
    torch.manual_seed(seed)
    tv = torchvision_model(name).to(DEVICE)
    randomize_bn(tv, seed)
    return tv, fastregnet.from_torchvision(tv)


@pytest.mark.parametrize("name", ["regnet_y_400mf", "regnet_x_400mf"])
def test_whole_model_eval_on_triton_backend_matches_torchvision(name):
    tv, ours = _tv_and_ours(name, 0)
    n_blocks = sum(len(s) for s in tv.trunk_output)
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with torch.no_grad(), fastregnet.count_kernel_launches() as launches:
        out = ours.eval()(x)
    # the fused inference path: conv a, grouped conv b (+ SE squeeze), [SE excite], conv c (+ shortcut)
    se = {"_se_pool_kernel": n_blocks, "_se_hidden_kernel": n_blocks, "_se_gate_kernel": n_blocks} \
        if name.startswith("regnet_y") else {}
    assert launches == {"_pointwise_conv_kernel": 2 * n_blocks, "_grouped_conv_fwd_kernel": n_blocks} | se, launches
    with torch.no_grad():
        assert rel_err(out, tv.eval()(x)) < 1e-5


def test_auto_backend_on_cpu_runs_the_modules_without_kernels():
    if HAS_GPU:
        pytest.skip("on a GPU, auto picks the kernels")
    tv, ours = _tv_and_ours("regnet_y_400mf", 1)
    x = torch.randn(1, 3, 32, 32)
    with fastregnet.use_backend("auto"), torch.no_grad(), fastregnet.count_kernel_launches() as launches:
        out = ours.eval()(x)
    assert sum(launches.values()) == 0
    with torch.no_grad():
        assert rel_err(out, tv.eval()(x)) < 1e-5


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_torch_compile_fullgraph_eval_and_train(backend):
    torch.manual_seed(0)
    model = fastregnet.RegNet(depths=[1, 1], widths=[16, 32], group_widths=8, se_ratio=0.25, num_classes=10)
    model = model.to(DEVICE)
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with fastregnet.use_backend(backend):
        with torch.no_grad():
            eager = model.eval()(x)
            with fastregnet.count_kernel_launches() as launches:
                compiled = torch.compile(model, fullgraph=True)(x)
        assert rel_err(compiled, eager) < 1e-5
        assert launches["_grouped_conv_fwd_kernel"] == (2 if backend == "triton" else 0)
        assert launches["_pointwise_conv_kernel"] == (4 if backend == "triton" else 0)
        torch._dynamo.reset()
        twin = copy.deepcopy(model)
        torch.compile(model.train(), fullgraph=True)(x).sum().backward()
        twin.train()(x).sum().backward()
        for (name, p), q in zip(model.named_parameters(), twin.parameters()):
            assert rel_err(p.grad, q.grad) < 1e-4, name
        for (name, b), c in zip(model.named_buffers(), twin.buffers()):  # running stats, updated in place
            assert rel_err(b, c) < 1e-5, name
    torch._dynamo.reset()
