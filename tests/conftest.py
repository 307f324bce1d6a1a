"""Test setup: without a GPU, Triton kernels run through the interpreter on CPU tensors.

TRITON_INTERPRET must be set before any @triton.jit kernel is defined, so this runs before fastregnet.kernels is
imported (fastregnet imports its kernels lazily).
"""

import os
import subprocess
import sys

import torch

HAS_GPU = torch.cuda.is_available()
if not HAS_GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
if "PYTEST_XDIST_WORKER" in os.environ and not HAS_GPU:
    # one intra-op thread per xdist worker: the workers (and the AOT compile beside them) already fill the cores, and
    # PyTorch's OpenMP threads, spinning while they wait for a core, only slow the suite down
    torch.set_num_threads(1)

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


TINY_SPEC = dict(depths=[1, 2], widths=[16, 24], group_widths=8, se_ratio=0.25, stem_width=8, num_classes=10)


def torchvision_twins(se_ratio=0.25, seed=0):
    """(torchvision model, fastregnet model): a tiny RegNet (TINY_SPEC) with identical weights and randomized BN
    statistics, on DEVICE."""
    from torchvision.models.regnet import BlockParams
    from torchvision.models.regnet import RegNet as TorchvisionRegNet

    import fastregnet

    spec = dict(TINY_SPEC, se_ratio=se_ratio)
    n = len(spec["depths"])
    params = BlockParams(spec["depths"], spec["widths"], [spec["group_widths"]] * n, [1.0] * n, [2] * n, se_ratio)
    torch.manual_seed(seed)
    tv = TorchvisionRegNet(params, num_classes=spec["num_classes"], stem_width=spec["stem_width"])
    randomize_bn(tv, seed)
    ours = fastregnet.RegNet(**spec)
    ours.load_state_dict(tv.state_dict())
    return tv.to(DEVICE), ours.to(DEVICE)


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


# (width_in, width_out, stride, group_width, se_ratio): the zoo's first-stage block shapes and their variants
BLOCKS = [
    (32, 48, 2, 8, 0.25),   # regnet_y_400mf block1-0: projection, stride 2, SE
    (48, 48, 1, 8, 0.25),   # identity shortcut, SE
    (32, 56, 2, 8, None),   # RegNetX-200MF-like: projection, no SE
    (24, 24, 1, 24, None),  # identity, no SE, one group
    (48, 104, 2, 8, 0.25),  # stage 2 of regnet_y_400mf: 13 groups, C not a multiple of the 64-wide tiles
    (32, 48, 1, 16, 0.25),  # projection at stride 1 (width change only)
]


def make_block(cin, cout, stride, gw, se, seed=0):
    """A ResBottleneckBlock with seeded weights and randomized BN statistics/affine parameters."""
    from fastregnet.layers import ResBottleneckBlock

    torch.manual_seed(seed)
    blk = ResBottleneckBlock(cin, cout, stride, gw, 1.0, se)
    randomize_bn(blk, seed)
    return blk.to(DEVICE)


def train_step_launches(proj: bool, se: bool) -> dict:
    """Triton launches of one training step (forward + backward) of a block on the kernels: per BN'd conv a
    GEMM (or grouped conv), a statistics merge, a running-statistics update, a normalize pass and a backward
    reduction; data- and weight-grad kernels per conv; the SE's squeeze, excitation and excitation backward."""
    pointwise = 3 if proj else 2  # a, c, projection
    launches = {"_pointwise_conv_kernel": pointwise, "_pointwise_conv_bwd_data_kernel": pointwise,
                "_pointwise_conv_bwd_weight_kernel": pointwise, "_grouped_conv_fwd_kernel": 1,
                "_grouped_conv_bwd_data_kernel": 1, "_grouped_conv_bwd_weight_kernel": 1,
                "_bn_stats_finalize_kernel": pointwise + 1, "_bn_act_apply_kernel": pointwise + 1,
                "_bn_act_bwd_reduce_kernel": pointwise + 1, "_running_stats_update_kernel": pointwise + 1}
    if se:
        # the excitation's fc launches run forward and backward
        launches |= {"_se_squeeze_kernel": 1, "_se_pool_kernel": 1, "_se_hidden_kernel": 2, "_se_gate_kernel": 2}
    return launches


def poison_kernel_buffers(monkeypatch) -> None:
    """NaN-fill every buffer the kernel launchers allocate, for the rest of the test."""
    import fastregnet.kernels.batch_norm as bn
    import fastregnet.kernels.grouped_conv as gc
    import fastregnet.kernels.pointwise_conv as pc
    import fastregnet.kernels.squeeze_excite as se

    for module in (bn, gc, pc, se):
        monkeypatch.setattr(module, "torch", PoisonedTorch())


@pytest.fixture
def poisoned_kernel_buffers(monkeypatch):
    """NaN-filled launcher buffers for the test (use with pytest.mark.usefixtures)."""
    poison_kernel_buffers(monkeypatch)


@pytest.fixture
def triton_backend():
    """FASTREGNET_BACKEND=triton for the test (use with pytest.mark.usefixtures)."""
    import fastregnet

    with fastregnet.use_backend("triton"):
        yield


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


# ----------------------------------------------------------------------------------------------------------------
# ahead-of-time compilation (test_aot_compile.py): minutes of compiling that should run beside the other tests.
# In one process (plain `pytest`): started in the background when the suite is collected, and those tests moved
# to the end, where they wait for it. Under pytest-xdist (the README's `-n 2 --dist loadfile`): each file runs on
# one worker, so the worker that takes test_aot_compile.py (first: the file sorts first) starts the compile and
# waits for it while the other worker runs the rest. (Not `--dist loadgroup`: pytest 9.2 derives node ids from a
# structured id, so xdist 3.8's way of tagging a group, rewriting item._nodeid, no longer takes effect and the
# groups were silently spread over both workers, each compiling everything.)
# ----------------------------------------------------------------------------------------------------------------

_aot: dict = {}


def _under_xdist() -> bool:
    return "PYTEST_XDIST_WORKER" in os.environ


def _start_aot_compile() -> None:
    if "proc" in _aot:
        return
    from fastregnet.design import MODEL_CONFIGS

    widths = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    _aot["proc"] = subprocess.Popen([sys.executable, "-m", "fastregnet.kernels.aot", "90,80",
                                     ",".join(map(str, widths)), "90"], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=env)


def aot_compile_result() -> tuple[int, str, str]:
    """(returncode, stdout JSON rows, stderr) of the AOT compile for sm_90 and sm_80."""
    _start_aot_compile()
    if "result" not in _aot:
        stdout, stderr = _aot["proc"].communicate()
        _aot["result"] = (_aot["proc"].returncode, stdout, stderr)
    return _aot["result"]


def pytest_collection_modifyitems(session, config, items):
    aot = [item for item in items if item.nodeid.startswith("tests/test_aot_compile.py")
           or item.nodeid.startswith("test_aot_compile.py")]
    if aot and not _under_xdist():
        items[:] = [item for item in items if item not in aot] + aot
        _start_aot_compile()
