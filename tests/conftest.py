"""Test setup: without a GPU, Triton kernels run through the interpreter on CPU tensors.

TRITON_INTERPRET must be set before any @triton.jit kernel is defined, so this runs before fastregnet.kernels is
imported (fastregnet imports its kernels lazily).
"""

import os

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

from fastregnet.bench import randomize_bn  # noqa: E402,F401  (re-exported for the tests)

DEVICE = torch.device("cuda" if HAS_GPU else "cpu")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float = 0.0, name: str = ""):
    """allclose that says what broke: worst element, its index, and the fraction of elements out of tolerance."""
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert not torch.isnan(a).any(), f"{name}: {int(torch.isnan(a).sum())} NaNs (unwritten or invalid output)"
    err = (a - e).abs()
    bound = atol + rtol * e.abs()
    bad = err > bound
    if bad.any():
        idx = tuple(int(i) for i in torch.nonzero(bad)[0])
        worst = tuple(int(i) for i in torch.unravel_index(torch.argmax(err - bound), err.shape))
        raise AssertionError(
            f"{name}: {int(bad.sum())}/{err.numel()} ({100 * bad.float().mean():.2f}%) elements out of tolerance "
            f"(rtol={rtol}, atol={atol}); worst at {worst}: got {a[worst]:.6g}, expected {e[worst]:.6g}; "
            f"first at {idx}")


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| / max |expected|, in float64."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    return float((a - e).abs().max() / e.abs().max().clamp_min(1e-30))


class PoisonedTorch:
    """Stands in for `torch` inside a kernel module: fresh buffers from empty/empty_like come NaN-filled, so any
    element a kernel forgets to write fails the comparison."""

    def __getattr__(self, name):
        return getattr(torch, name)

    @staticmethod
    def empty(*args, **kwargs):
        t = torch.empty(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    @staticmethod
    def empty_like(*args, **kwargs):
        t = torch.empty_like(*args, **kwargs)
        return t.fill_(float("nan")) if t.is_floating_point() else t


def poison_kernel_buffers(monkeypatch) -> None:
    """NaN-fill every buffer the kernel launchers allocate, for the rest of the test."""
    import fastregnet.kernels.batch_norm as bn
    import fastregnet.kernels.grouped_conv as gc
    import fastregnet.kernels.pointwise_conv as pc
    import fastregnet.kernels.squeeze_excite as se

    for module in (bn, gc, pc, se):
        monkeypatch.setattr(module, "torch", PoisonedTorch())


@pytest.fixture(autouse=True)
def _no_tf32():
    """Compare against fp32 references with TF32 off."""
    prev = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev


def torchvision_model(name: str, init: bool = True, **kwargs) -> torch.nn.Module:
    """A torchvision RegNet by builder name; init=False skips the random init (for structure-only checks of the
    big models, where init dominates the time)."""
    import unittest.mock

    import torchvision

    builder = getattr(torchvision.models, name)
    if init:
        return builder(**kwargs)
    noop = lambda t, *a, **k: t  # noqa: E731
    with unittest.mock.patch.multiple(torch.nn.init, normal_=noop, ones_=noop, zeros_=noop):
        return builder(**kwargs)
