"""Drop-in fidelity: whatever a user swaps into or hooks onto the model, fastregnet computes what torchvision
computes with the same weights and the same change; nothing is cached, NaN propagates, and unchanged models still
take the fused paths (`fastregnet.fusion` holds the rule).

Every comparison is against a torchvision twin built from the same BlockParams, holding the same state_dict and
the same swap, on the default path and on the Triton path (interpreter on CPU), with tiny models.
"""

import copy

import pytest
import torch
from torch import nn

import fastregnet
from conftest import DEVICE, randomize_bn, rel_err, torchvision_twins

BACKENDS = ["auto", "triton"]
_twins = torchvision_twins


def _blocks(model):
    return [m for name, m in model.named_modules() if name.count(".") == 2 and name.startswith("trunk_output.")]


class ScaledBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d subclass with its own forward."""

    def forward(self, x):
        return super().forward(x) * 1.5 + 0.25


class LoRAConv(nn.Module):
    """A conv wrapped with a low-rank branch (whose weights must get gradients)."""

    def __init__(self, conv: nn.Conv2d, rank: int = 2):
        super().__init__()
        self.conv = conv
        self.down = nn.Conv2d(conv.in_channels, rank, 1, stride=conv.stride, bias=False)
        self.up = nn.Conv2d(rank, conv.out_channels, 1, bias=False)
        nn.init.normal_(self.up.weight, std=0.1)

    def forward(self, x):
        return self.conv(x) + self.up(self.down(x))


def _swap_bn_subclass(block):
    old = block.f.b[1]
    new = ScaledBatchNorm(old.num_features)
    new.load_state_dict(old.state_dict())
    block.f.b[1] = new


def _swap_silu(block):
    block.f.a[2] = nn.SiLU()
    block.activation = nn.SiLU()


def _swap_identity(block):
    block.f.b[1] = nn.Identity()


def _swap_group_norm(block):
    c = block.f.a[1].num_features
    gn = nn.GroupNorm(2, c)
    nn.init.normal_(gn.weight, 1.0, 0.2)
    nn.init.normal_(gn.bias, 0.0, 0.2)
    block.f.a[1] = gn


def _swap_lora(block):
    block.f.c[0] = LoRAConv(block.f.c[0])


def _swap_affine_false(block):
    old = block.f.c[1]
    new = nn.BatchNorm2d(old.num_features, affine=False)
    new.running_mean.copy_(old.running_mean)
    new.running_var.copy_(old.running_var)
    block.f.c[1] = new


SWAPS = {"bn_subclass": _swap_bn_subclass, "silu": _swap_silu, "identity": _swap_identity,
         "group_norm": _swap_group_norm, "lora_conv": _swap_lora, "bn_affine_false": _swap_affine_false}


def _swapped_twins(swap):
    """Apply the swap to torchvision's model (seeded), then give fastregnet the same modules and weights."""
    tv, ours = _twins()
    torch.manual_seed(1)
    for block in _blocks(tv):
        SWAPS[swap](block)
    for block in _blocks(ours):
        SWAPS[swap](block)
    ours.load_state_dict(tv.state_dict())
    return tv.to(DEVICE), ours.to(DEVICE)


def _grads(model, x):
    x = x.clone().requires_grad_(True)
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), device=out.device).reshape(out.shape)).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def _assert_same_step(tv, ours, x, tol=1e-5):
    out_t, gx_t, g_t = _grads(tv, x)
    out_o, gx_o, g_o = _grads(ours, x)
    assert rel_err(out_o, out_t) < tol
    assert rel_err(gx_o, gx_t) < tol
    assert set(g_o) == set(g_t), "the same parameters must receive gradients"
    for name in g_t:
        assert rel_err(g_o[name], g_t[name]) < tol, name
    for (name, b_o), (_, b_t) in zip(ours.named_buffers(), tv.named_buffers()):
        assert torch.equal(b_o, b_t) if b_t.dtype == torch.long else rel_err(b_o, b_t) < tol, name


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("swap", list(SWAPS))
def test_swapped_modules_compute_as_in_torchvision(swap, backend):
    tv, ours = _swapped_twins(swap)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    assert all(r["path"] == "modules" for r in fastregnet.explain_fusion(ours)
               if r["type"] == "ResBottleneckBlock"), "a swapped block must run its modules"
    with fastregnet.use_backend(backend):
        tv.eval(), ours.eval()
        with torch.no_grad():
            assert rel_err(ours(x), tv(x)) < 1e-5
        _assert_same_step(tv, ours, x)   # eval with gradients on
        tv.train(), ours.train()
        _assert_same_step(tv, ours, x)   # training: batch statistics, running stats updated


def test_explain_fusion_names_the_reason():
    _, ours = _swapped_twins("lora_conv")
    report = {r["module"]: r for r in fastregnet.explain_fusion(ours)}
    block = report["trunk_output.block1.block1-0"]
    assert block["path"] == "modules" and "f.c: conv is LoRAConv, not torch.nn.modules.conv.Conv2d" in block["reason"]
    assert report["trunk_output.block1.block1-0.f.a"] == {"module": "trunk_output.block1.block1-0.f.a",
                                                          "type": "ConvNormActivation", "path": "fused",
                                                          "reason": None}
    _, ours = _twins()
    ours.trunk_output.block2[1].f.se.fc1.register_forward_hook(lambda *a: None)
    report = {r["module"]: r for r in fastregnet.explain_fusion(ours)}
    assert report["trunk_output.block2.block2-1"]["reason"] == "se.fc1 has hooks or an instance forward"
    assert report["trunk_output.block2.block2-0"]["path"] == "fused"


@pytest.mark.parametrize("backend", BACKENDS)
def test_sync_batch_norm_fuses_when_there_is_nothing_to_synchronize(backend):
    # Without torch.distributed (or with one rank) nn.SyncBatchNorm is BatchNorm2d's computation, so its parts
    # fuse; across ranks they run fastregnet.sync_batch_norm (tests/test_sync_batch_norm.py).
    tv, ours = _twins()
    tv, ours = nn.SyncBatchNorm.convert_sync_batchnorm(tv), nn.SyncBatchNorm.convert_sync_batchnorm(ours)
    assert all(r["path"] == "fused" for r in fastregnet.explain_fusion(ours))
    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    with fastregnet.use_backend(backend):
        for mode in ("train", "eval"):
            tv.train(mode == "train"), ours.train(mode == "train")
            assert rel_err(ours(x), tv(x)) < 1e-5, mode
    for (name, a), b in zip(ours.named_buffers(), tv.buffers()):
        assert rel_err(a.float(), b.float()) < 1e-5, name


def _count_calls(model):
    counts = {}
    for name, m in model.named_modules():
        m.register_forward_hook(lambda m, i, o, name=name: counts.__setitem__(name, counts.get(name, 0) + 1))
    return counts


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["eval", "eval_no_grad", "train"])
def test_forward_hooks_fire_as_in_torchvision(mode, backend):
    tv, ours = _twins()
    counts_tv, counts_ours = _count_calls(tv), _count_calls(ours)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    for model in (tv, ours):
        model.train(mode == "train")
        with fastregnet.use_backend(backend), torch.set_grad_enabled(mode != "eval_no_grad"):
            model(x)
    assert counts_ours == counts_tv
    assert sum(counts_ours.values()) == len(list(ours.modules()))


def test_hooks_on_full_size_model_count_as_torchvision():
    """The issue's figure: 203 Conv2d/BatchNorm2d/ReLU calls on regnet_y_400mf, where the fused paths hid all."""
    import torchvision

    for model in (torchvision.models.regnet_y_400mf(), fastregnet.regnet_y_400mf()):
        calls = []
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU)):
                m.register_forward_hook(lambda *a: calls.append(1))
        with torch.no_grad():
            model.eval()(torch.randn(1, 3, 32, 32))
        assert len(calls) == 203


def test_global_hook_and_instance_forward_take_the_module_path():
    tv, ours = _twins()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    seen = {"tv": 0, "ours": 0}
    for key, model in (("tv", tv), ("ours", ours)):
        handle = nn.modules.module.register_module_forward_hook(
            lambda m, i, o, key=key: seen.__setitem__(key, seen[key] + 1))
        try:
            with torch.no_grad():
                model.eval()(x)
        finally:
            handle.remove()
    assert seen["ours"] == seen["tv"] == len(list(tv.modules()))
    relu = ours.trunk_output.block1[0].f.b[2]
    relu.forward = lambda t: torch.nn.functional.relu(t) * 2
    tv.trunk_output.block1[0].f.b[2].forward = relu.forward
    with torch.no_grad():
        assert rel_err(ours(x), tv(x)) < 1e-5


@pytest.mark.usefixtures("triton_backend")
def test_unchanged_model_still_takes_the_fused_paths():
    """Eval, no grad: 5 launches per Y block; a hook on one block sends only that block to its modules."""
    _, ours = _twins()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    ours.eval()
    with torch.no_grad(), fastregnet.count_kernel_launches() as launches:
        ours(x)
    assert launches == {"_pointwise_conv_kernel": 6, "_grouped_conv_fwd_kernel": 3, "_se_pool_kernel": 3,
                        "_se_hidden_kernel": 3, "_se_gate_kernel": 3}
    ours.trunk_output.block2[1].register_forward_pre_hook(lambda *a: None)
    ours.trunk_output.block2[1].f.c[1].register_forward_hook(lambda *a: None)
    with torch.no_grad(), fastregnet.count_kernel_launches() as launches:
        ours(x)
    # block2-1 runs its parts: f.b fused on its own (the grouped kernel; f.a's 1x1 eval conv is PyTorch's), SE and
    # c as modules
    assert launches == {"_pointwise_conv_kernel": 4, "_grouped_conv_fwd_kernel": 3, "_se_pool_kernel": 2,
                        "_se_hidden_kernel": 2, "_se_gate_kernel": 2}


# ----------------------------------------------------------------------------------------------------------------
# nothing stale: eval derives folded BN from the live tensors on every call
# ----------------------------------------------------------------------------------------------------------------

def _edit_data_mul(model):
    for p in model.parameters():
        p.data.mul_(0.9)


def _edit_precise_bn(model):
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(5)).to(DEVICE))
    model.eval()


def _edit_numpy(model):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            if DEVICE.type == "cpu":
                m.running_var.numpy()[:] *= 2.0  # shares memory: the tensor's version counter does not move
            else:
                m.running_var.mul_(2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("edit", [_edit_data_mul, _edit_precise_bn, _edit_numpy], ids=["data_mul", "precise_bn",
                                                                                    "numpy"])
def test_eval_after_in_place_edits_matches_torchvision(edit, backend):
    tv, ours = _twins()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with fastregnet.use_backend(backend), torch.no_grad():
        tv.eval(), ours.eval()
        ours(x)  # a first eval call (the old cache would keep this state)
        edit(tv), edit(ours)
        assert rel_err(ours(x), tv(x)) < 1e-5


def test_whole_model_save_is_torchvision_sized(tmp_path):
    tv, ours = _twins()
    with torch.no_grad():
        ours.eval()(torch.randn(1, 3, 32, 32, device=DEVICE))
    torch.save(tv, tmp_path / "tv.pt")
    torch.save(ours, tmp_path / "ours.pt")
    tv_size, ours_size = (tmp_path / "tv.pt").stat().st_size, (tmp_path / "ours.pt").stat().st_size
    assert ours_size < 1.1 * tv_size, (ours_size, tv_size)


def test_jit_trace_checks_and_follows_load_state_dict():
    tv, ours = _twins()
    ours.eval()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        ours(x)
        traced = torch.jit.trace(ours, x)  # check_trace=True: re-traces and compares
        other, _ = _twins(seed=3)
        ours.load_state_dict(other.state_dict())
        assert rel_err(traced(x), other.eval()(x)) < 1e-5


# ----------------------------------------------------------------------------------------------------------------
# NaN and Inf propagate as in PyTorch
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_nan_in_one_image_stays_in_that_image_in_eval(backend):
    _, ours = _twins()
    ours.eval()
    x = torch.randn(3, 3, 16, 16, device=DEVICE)
    bad = x.clone()
    bad[1, :, 5, 7] = float("nan")
    with fastregnet.use_backend(backend), torch.no_grad():
        clean, out = ours(x), ours(bad)
    assert torch.isnan(out[1]).all()
    assert torch.equal(out[[0, 2]], clean[[0, 2]])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_training_step_matches_torchvision(backend, value):
    tv, ours = _twins()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    x[0, 1, 4, 4] = value
    with fastregnet.use_backend(backend):
        tv.train(), ours.train()
        out_t, gx_t, g_t = _grads(tv, x)
        out_o, gx_o, g_o = _grads(ours, x)
    pairs = [("out", out_o, out_t), ("grad_x", gx_o, gx_t)] + [(n, g_o[n], g_t[n]) for n in g_t]
    pairs += [(n, b, dict(tv.named_buffers())[n]) for n, b in ours.named_buffers() if b.is_floating_point()]
    for name, a, e in pairs:
        assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{name}: NaN pattern differs"
        assert torch.equal(torch.isinf(a), torch.isinf(e)), f"{name}: Inf pattern differs"
        finite = torch.isfinite(e)
        if finite.any():
            assert rel_err(a[finite], e[finite]) < 1e-5, name


# ----------------------------------------------------------------------------------------------------------------
# empty batches and tiny images run as in torchvision
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", [(0, 3, 32, 32), (2, 3, 1, 1), (2, 3, 5, 7), (1, 3, 17, 17)])
def test_empty_batch_and_small_images_as_torchvision(backend, shape):
    tv, ours = _twins()
    x = torch.randn(*shape, device=DEVICE)
    with fastregnet.use_backend(backend):
        tv.eval(), ours.eval()
        with torch.no_grad():
            out = ours(x)
            assert out.shape == (shape[0], 10)
            if shape[0]:
                assert rel_err(out, tv(x)) < 1e-5
        if shape[0] > 1:
            tv.train(), ours.train()
            assert rel_err(ours(x), tv(x)) < 1e-5
    if shape[0] == 0:
        tv_out = tv.train()(x)
        assert ours.train()(x).shape == tv_out.shape


def test_copy_and_deepcopy_keep_fidelity():
    tv, ours = _twins()
    clone = copy.deepcopy(ours).eval()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        clone(x)
        clone.stem[1].running_mean.add_(1.0)
        tv.stem[1].running_mean.add_(1.0)
        assert rel_err(clone(x), tv.eval()(x)) < 1e-5
