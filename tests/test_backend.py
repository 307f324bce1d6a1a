"""Backend selection: use_backend() is per thread (a ContextVar), nested and overlapping contexts restore
correctly, and TRITON_INTERPRET set too late or spelled as Triton allows gets a clear answer."""

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import fastregnet
from fastregnet.backend import BackendError


def test_context_in_one_thread_does_not_leak_into_another():
    default = fastregnet.get_backend()
    entered, release, seen = threading.Event(), threading.Event(), {}

    def worker():
        with fastregnet.use_backend("torch" if default != "torch" else "triton"):
            seen["worker"] = fastregnet.get_backend()
            entered.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    assert entered.wait(10)
    seen["main"] = fastregnet.get_backend()
    release.set()
    thread.join()
    assert seen["main"] == default and seen["worker"] != default

    with fastregnet.use_backend("torch"):
        other = {}
        t = threading.Thread(target=lambda: other.__setitem__("b", fastregnet.get_backend()))
        t.start()
        t.join()
        assert other["b"] == default and fastregnet.get_backend() == "torch"


def test_nested_and_overlapping_contexts_restore():
    default = fastregnet.get_backend()
    with fastregnet.use_backend("torch"):
        with fastregnet.use_backend("triton"):
            assert fastregnet.get_backend() == "triton"
        assert fastregnet.get_backend() == "torch"
    assert fastregnet.get_backend() == default
    a, b = fastregnet.use_backend("torch"), fastregnet.use_backend("triton")
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)  # the outer one exits first
    assert fastregnet.get_backend() == "triton"
    b.__exit__(None, None, None)
    assert fastregnet.get_backend() == default


def test_set_backend_sets_the_default_under_a_context():
    default = fastregnet.get_backend()
    try:
        with fastregnet.use_backend("triton"):
            fastregnet.set_backend("torch")
            assert fastregnet.get_backend() == "triton"
        assert fastregnet.get_backend() == "torch"
    finally:
        fastregnet.set_backend(default)


def _run(code: str, env_value: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if env_value is not None:
        env["TRITON_INTERPRET"] = env_value
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True,
                          timeout=300)


_FUSED_OP = """
    import torch, fastregnet
    from fastregnet import ops
    x = torch.randn(1, 8, 5, 5)
    w = torch.randn(8, 4, 3, 3)
    with fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as n:
        y = ops.grouped_conv_bias_act(x, w, torch.zeros(8), 1, 2, True)
    print("launches", sum(n.values()))
"""


# A grouped conv on CPU tensors with the backend forced to Triton; prints the BackendError if it cannot run.
_TRIED_ON_TRITON = """
    import torch, fastregnet
    from fastregnet.backend import BackendError
    try:
        with fastregnet.use_backend("triton"):
            fastregnet.ops.grouped_conv_bias_act(torch.randn(1, 8, 5, 5), torch.randn(8, 4, 3, 3), torch.zeros(8),
                                                 1, 2, True)
    except BackendError as e:
        print("BackendError:", e)
"""


@pytest.mark.skipif(fastregnet.backend._triton_import_error() is not None, reason="triton does not import")
def test_triton_interpret_set_after_the_kernels_were_defined():
    defined_compiled = textwrap.dedent("""
        import os
        import fastregnet.kernels.batch_norm  # kernels defined compiled (no TRITON_INTERPRET yet)
        os.environ["TRITON_INTERPRET"] = "1"
    """)
    result = _run(defined_compiled + textwrap.dedent(_TRIED_ON_TRITON), None)
    assert "BackendError:" in result.stdout, result.stderr[-2000:]
    assert "TRITON_INTERPRET is set now, but it was not set when fastregnet's kernels were defined" in result.stdout


@pytest.mark.skipif(fastregnet.backend._triton_import_error() is not None, reason="triton does not import")
@pytest.mark.parametrize("value", ["true", "1"])
def test_triton_interpret_spelled_as_triton_accepts(value):
    result = _run(_FUSED_OP, value)
    assert "launches 1" in result.stdout, result.stderr[-2000:]


def test_triton_mode_without_interpreter_says_how_on_cpu():
    result = _run(_TRIED_ON_TRITON, None)
    if "launches" in result.stdout or "cuda" in result.stdout.lower():  # pragma: no cover - a GPU machine
        pytest.skip("a GPU is present")
    assert "CPU tensors need TRITON_INTERPRET=1 set before fastregnet (or triton) is imported" in result.stdout, \
        result.stderr[-2000:]


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="unknown fastregnet backend 'gpu'"):
        with fastregnet.use_backend("gpu"):
            pass
    assert issubclass(BackendError, RuntimeError)


def test_every_custom_op_launches_on_its_inputs_device(monkeypatch):
    """Triton launches on the current CUDA device; each fastregnet custom op makes its first tensor's device current
    (a model on cuda:1 without set_device). Checked without a GPU: the guard wraps every op, and enters
    torch.cuda.device(t.device) for a CUDA-like first argument."""
    import contextlib

    import torch

    from fastregnet import ops

    op_defs = [v for v in vars(ops).values() if isinstance(v, torch._library.custom_ops.CustomOpDef)]
    assert len(op_defs) == 9
    for op_def in op_defs:
        assert op_def._init_fn.__code__.co_name == "on_device", f"{op_def._name} launches without the device guard"

    entered = []
    monkeypatch.setattr(torch.cuda, "device", lambda d: entered.append(d) or contextlib.nullcontext())

    class CudaLike:
        is_cuda = True
        device = torch.device("cuda", 1)

    assert ops._on_input_device(lambda t, k: k * 2)(CudaLike(), 21) == 42
    assert entered == [torch.device("cuda", 1)]


def test_fp32_dot_precision_follows_pytorchs_tf32_policy():
    # fp32 follows torch.backends.cudnn.allow_tf32 (PyTorch's default: on), read at every launch; 16-bit ignores it
    from fastregnet.bench import device_info
    from fastregnet.kernels._launch import dot_precision

    prev = torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = True
        assert dot_precision(torch.float32) == "tf32"
        assert device_info(torch.device("cpu"))["fp32_conv_precision"] == "tf32"
        torch.backends.cudnn.allow_tf32 = False
        assert dot_precision(torch.float32) == "ieee"
        assert device_info(torch.device("cpu"))["fp32_conv_precision"] == "ieee"
        assert dot_precision(torch.bfloat16) == dot_precision(torch.float16) == "tf32"
    finally:
        torch.backends.cudnn.allow_tf32 = prev
