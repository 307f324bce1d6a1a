"""Double backward (create_graph=True: gradient penalties): the module and PyTorch paths give torchvision's
answer; the Triton ops, whose backward is not differentiable, refuse with an error that says what to do."""

import pytest
import torch

import fastregnet
from fastregnet.layers import ConvNormActivation


def _gradient_penalty(model, x):
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(x).square().sum(), x, create_graph=True)
    penalty = g.square().sum()
    penalty.backward()
    return penalty, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["auto", "torch"])  # on the CPU: the modules, and the reference ops
def test_gradient_penalty_equals_torchvision(backend):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.regnet_y_400mf(num_classes=10).train()
    ours = fastregnet.from_torchvision(tv).train()
    x = torch.randn(2, 3, 64, 64)
    p_tv, g_tv = _gradient_penalty(tv, x)
    with fastregnet.use_backend(backend):
        p_ours, g_ours = _gradient_penalty(ours, x)
    torch.testing.assert_close(p_ours, p_tv, rtol=1e-4, atol=0)
    for name, g in g_tv.items():
        torch.testing.assert_close(g_ours[name], g, rtol=1e-3, atol=1e-6, msg=name)


@pytest.mark.parametrize("kernel,groups,train", [(3, 2, True), (3, 2, False), (1, 1, True)],
                         ids=["grouped-train", "grouped-eval", "pointwise-train"])
def test_triton_ops_refuse_double_backward_and_say_what_to_do(kernel, groups, train):
    torch.manual_seed(0)
    part = ConvNormActivation(8, 8, kernel, groups=groups).train(train)
    x = torch.randn(2, 8, 5, 5)
    with fastregnet.use_backend("triton"):
        with fastregnet.count_kernel_launches() as launches:
            out = part(x.clone().requires_grad_(True))
        assert sum(launches.values()) > 0  # the fused op ran
        with pytest.raises(RuntimeError, match=r"create_graph=True.*use_backend\('torch'\)"):
            torch.autograd.grad(out.square().sum(), part[0].weight, create_graph=True)
    # a plain backward through the same op still works, and the PyTorch path does the double backward
    with fastregnet.use_backend("triton"):
        part(x).sum().backward()
    with fastregnet.use_backend("torch"):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(part(xg).square().sum(), xg, create_graph=True)
        g.square().sum().backward()
    assert part[0].weight.grad is not None
