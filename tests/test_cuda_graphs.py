"""CUDA-graph capture of a model on the Triton path: inference replayed from a captured graph, and a training step
through torch.cuda.make_graphed_callables, both against eager. Needs a GPU; CI has none, so this runs only when a
GPU session runs the suite."""

import copy

import pytest
import torch

import fastregnet
from conftest import HAS_GPU, rel_err

if not HAS_GPU:
    pytest.skip("CUDA-graph capture needs a CUDA GPU (none here)", allow_module_level=True)


def _model():
    torch.manual_seed(0)
    model = fastregnet.RegNet(depths=[1, 2], widths=[32, 64], group_widths=8, se_ratio=0.25, num_classes=10)
    return model.cuda().to(memory_format=torch.channels_last)


def _warm_up(fn, *args):
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn(*args)
    torch.cuda.current_stream().wait_stream(side)


def test_inference_survives_cuda_graph_capture():
    model = _model().eval()
    x = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), fastregnet.use_backend("triton"):
        eager = model(x)
        _warm_up(model, x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model(x)
        x.copy_(torch.randn_like(x))
        graph.replay()
        assert rel_err(static_out, model(x)) < 1e-5
        assert not torch.equal(static_out, eager)  # the replay saw the new input
        for m in model.modules():  # weights and BN statistics edited in place after capture
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.mul_(1.5)
                m.weight.mul_(0.9)
        graph.replay()
        assert rel_err(static_out, model(x)) < 1e-5  # the graph folds BN from the live tensors


def test_training_step_survives_cuda_graph_capture():
    model = _model().train()
    twin = copy.deepcopy(model)
    x = torch.randn(4, 3, 64, 64, device="cuda", requires_grad=True)
    with fastregnet.use_backend("triton"):
        graphed = torch.cuda.make_graphed_callables(model, (x,))
        for m in (model, twin):
            m.zero_grad(set_to_none=False)
        graphed(x).sum().backward()
        twin(x).sum().backward()
    for (name, p), q in zip(model.named_parameters(), twin.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-4, name


def test_cuda_graph_inference_wrapper_replays_eager():
    model = _model().eval()
    graphed = fastregnet.cuda_graph_inference(model)
    x = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), fastregnet.use_backend("triton"):
        first = graphed(x)  # captures
        y = torch.randn_like(x)
        assert rel_err(graphed(y), model(y)) < 1e-5  # replays on new data
        assert rel_err(first, model(x)) < 1e-5  # earlier outputs are copies, not overwritten by later replays
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.add_(0.1)
        assert rel_err(graphed(y), model(y)) < 1e-5  # live BN statistics
        assert rel_err(graphed(y[:2]), model(y[:2])) < 1e-5  # another shape: its own graph
        model.fc.weight = torch.nn.Parameter(torch.randn_like(model.fc.weight))  # replaced, not edited in place
        assert rel_err(graphed(y), model(y)) < 1e-5  # recaptured: the old graph would read freed storage
        with fastregnet.use_backend("torch"):  # the backend is baked into a capture: its own graph
            assert rel_err(graphed(y), model(y)) < 1e-4
    with pytest.raises(RuntimeError, match="no_grad"):
        graphed(x)
    model.train()
    with torch.no_grad(), pytest.raises(RuntimeError, match="training mode"):
        graphed(x)
