"""CUDA-graph inference (fastregnet/graphs.py) as far as a CPU can take it: the wrapper's refusals, and the property
a capture needs from the Triton path, that its host code never reads a tensor's values (a `.item()` or an
`if tensor:` forces a device sync, which a CUDA-graph capture rejects, and makes the launches depend on data a replay
would not re-read). The capture and replay themselves run in tests/test_cuda_graphs.py and in the GPU campaign."""

import contextlib
import unittest.mock

import pytest
import torch

import fastregnet
from conftest import HAS_GPU, TINY_SPEC


def test_refuses_a_model_off_cuda():
    model = fastregnet.RegNet(**TINY_SPEC).eval()
    with pytest.raises(ValueError, match="must be on one CUDA device.*cpu"):
        fastregnet.cuda_graph_inference(model)
    with pytest.raises(TypeError, match="expected an nn.Module, got function"):
        fastregnet.cuda_graph_inference(lambda x: x)


class _ValueRead(AssertionError):
    pass


@contextlib.contextmanager
def _host_never_reads_tensor_values():
    """Every Python-level way to pull a tensor's value to the host raises, and kernel launches are no-ops (the
    interpreter would read their tensors; a GPU launch does not)."""
    from triton.runtime import interpreter

    def refuse(name):
        def read(self, *args, **kwargs):
            raise _ValueRead(f"host code read a tensor's value through Tensor.{name}")
        return read

    def no_op_run(self, *args, grid, warmup, **kwargs):
        if callable(grid):
            grid(kwargs)

    reads = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu")
    with contextlib.ExitStack() as stack:
        for name in reads:
            stack.enter_context(unittest.mock.patch.object(torch.Tensor, name, refuse(name)))
        stack.enter_context(unittest.mock.patch.object(interpreter.InterpretedFunction, "run", no_op_run))
        yield


@pytest.mark.skipif(HAS_GPU, reason="stubs the interpreter's launches; on a GPU test_cuda_graphs.py captures")
@pytest.mark.parametrize("se_ratio", [0.25, 0.0])
def test_triton_inference_path_never_reads_tensor_values(se_ratio):
    model = fastregnet.RegNet(**dict(TINY_SPEC, se_ratio=se_ratio)).eval()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as launches:
        with _host_never_reads_tensor_values():
            model(x)
    assert sum(launches.values()) > 0  # the Triton path ran (its launches stubbed), not the PyTorch fallback


@pytest.mark.skipif(HAS_GPU, reason="stubs the interpreter's launches; on a GPU test_cuda_graphs.py captures")
def test_triton_training_step_never_reads_tensor_values():
    # what torch.cuda.make_graphed_callables needs of a training step (tests/test_cuda_graphs.py runs it on a GPU)
    model = fastregnet.RegNet(**TINY_SPEC).train()
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as launches:
        with _host_never_reads_tensor_values():
            model(x).sum().backward()
    assert launches["_grouped_conv_bwd_weight_kernel"] > 0


def test_value_reads_are_caught():
    # the check above can fail: a host read of a value raises inside it
    with _host_never_reads_tensor_values(), pytest.raises(_ValueRead, match="Tensor.item"):
        torch.ones(1).item()
