"""timm's training options: stochastic depth (drop_path_rate) and per-block gradient checkpointing, on the default
path and the Triton path (interpreter on CPU)."""

import copy

import pytest
import torch
from torch import nn

import fastregnet
from fastregnet.stochastic_depth import drop_path, drop_path_rates, keep_scale
from conftest import DEVICE, TINY_SPEC, randomize_bn, rel_err

BACKENDS = ["auto", "triton"]


def _model(**kwargs):
    torch.manual_seed(0)
    model = fastregnet.RegNet(**dict(TINY_SPEC, **kwargs))
    randomize_bn(model, 0)
    return model.to(DEVICE)


def test_drop_path_rates_follow_timm_s_linear_rule():
    model = _model(depths=[1, 2, 3], widths=[16, 24, 32], drop_path_rate=0.3)
    rates = [block.drop_path_rate for stage in model.trunk_output for block in stage]
    assert rates == pytest.approx(torch.linspace(0, 0.3, 6).tolist())
    assert drop_path_rates(0.3, (1, 2, 3)) == [rates[:1], rates[1:3], rates[3:]]
    assert "drop_path" not in dict(model.trunk_output.block1.named_children())["block1-0"]._modules  # rate 0
    assert set(model.state_dict()) == set(_model(depths=[1, 2, 3], widths=[16, 24, 32]).state_dict())


def test_drop_path_drops_the_expected_fraction_and_scales_the_rest():
    torch.manual_seed(1)
    x = torch.randn(4000, 3)
    y = drop_path(x, 0.25, training=True)
    dropped = (y == 0).all(1)
    assert abs(dropped.float().mean().item() - 0.25) < 0.03
    assert torch.allclose(y[~dropped], x[~dropped] / 0.75)
    assert drop_path(x, 0.25, training=False) is x


@pytest.mark.parametrize("backend", BACKENDS)
def test_drop_path_in_a_block_drops_whole_samples(backend):
    model = _model(drop_path_rate=0.6).train()
    block = model.trunk_output.block2[1]  # identity shortcut, rate 0.6
    x = torch.randn(6, 24, 4, 4, device=DEVICE).relu()
    torch.manual_seed(7)
    with fastregnet.use_backend(backend):
        out = block(x)
        torch.manual_seed(7)
        scale = keep_scale(6, block.drop_path_rate, x).view(-1, 1, 1, 1)
        branch = block.f(x)
    assert rel_err(out, torch.relu(x + branch * scale)) < 1e-5
    assert 0 < int((scale == 0).sum()) < 6  # this seed drops some samples and keeps others


def test_drop_path_is_the_identity_in_eval():
    with_drop, without = _model(drop_path_rate=0.5).eval(), _model().eval()
    without.load_state_dict(with_drop.state_dict())
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        assert torch.equal(with_drop(x), without(x))


def _bn_state(model):
    return {n: b.clone() for n, b in model.named_buffers()}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("drop_path_rate", [0.0, 0.3])
def test_grad_checkpointing_matches_and_updates_running_stats_once(backend, drop_path_rate):
    plain = _model(drop_path_rate=drop_path_rate).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.set_grad_checkpointing(True)
    x = torch.randn(4, 3, 16, 16, device=DEVICE)
    results = []
    for model in (plain, checkpointed):
        torch.manual_seed(3)  # the same drop-path masks; checkpoint replays the RNG in its recomputation
        with fastregnet.use_backend(backend):
            out = model(x)
            out.square().mean().backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}, _bn_state(model)))
    (out_a, grads_a, bufs_a), (out_b, grads_b, bufs_b) = results
    assert rel_err(out_b, out_a) < 1e-6
    for name in grads_a:
        assert rel_err(grads_b[name], grads_a[name]) < 1e-5, name
    for name in bufs_a:
        assert torch.equal(bufs_b[name], bufs_a[name]), name  # updated exactly once: same count, same values
    tracked = {int(m.num_batches_tracked) for m in checkpointed.modules() if isinstance(m, nn.BatchNorm2d)}
    assert tracked == {1}


def test_grad_checkpointing_is_off_without_grad_and_under_no_grad():
    model = _model().train()
    model.set_grad_checkpointing(True)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        model(x)
    tracked = {int(m.num_batches_tracked) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert tracked == {1}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("se_ratio", [0.25, None])
def test_fused_drop_path_equals_the_module_path_for_the_same_mask(backend, se_ratio):
    fused_model = _model(drop_path_rate=0.6, se_ratio=se_ratio).train()
    modules_model = copy.deepcopy(fused_model)
    block_f, block_m = fused_model.trunk_output.block2[1], modules_model.trunk_output.block2[1]
    assert fastregnet.fusion.block_tail_reason(block_f) is None
    x = torch.randn(6, 24, 4, 4, device=DEVICE).relu()
    results = []
    for block, run in ((block_f, block_f.forward), (block_m, block_m.forward_modules)):
        xi = x.clone().requires_grad_()
        torch.manual_seed(7)  # the same draw: this seed drops some of the 6 samples and keeps others
        with fastregnet.use_backend(backend), fastregnet.count_kernel_launches() as launches:
            out = run(xi)
            out.square().mean().backward()
        results.append((out, xi.grad, {n: p.grad for n, p in block.named_parameters()}, _bn_state(block), launches))
    (out_f, gx_f, grads_f, bufs_f, launches_f), (out_m, gx_m, grads_m, bufs_m, _) = results
    assert rel_err(out_f, out_m) < 1e-5 and rel_err(gx_f, gx_m) < 1e-5
    for name in grads_m:
        assert rel_err(grads_f[name], grads_m[name]) < 1e-4, name
    for name in bufs_m:
        assert rel_err(bufs_f[name].float(), bufs_m[name].float()) < 1e-6, name
    if backend == "triton":
        # the factors ride in the tail's existing kernels: the same launches as a block without drop path
        plain = _model(se_ratio=se_ratio).train().trunk_output.block2[1]
        with fastregnet.use_backend(backend), fastregnet.count_kernel_launches() as plain_launches:
            plain(x.clone().requires_grad_()).square().mean().backward()
        assert launches_f == plain_launches, (launches_f, plain_launches)


def test_a_hooked_drop_path_sends_the_tail_to_the_modules():
    model = _model(drop_path_rate=0.5).train()
    block = model.trunk_output.block2[1]
    calls = []
    block.drop_path.register_forward_hook(lambda m, i, o: calls.append(1))
    assert "drop_path has hooks" in fastregnet.fusion.block_tail_reason(block)
    block(torch.randn(2, 24, 4, 4, device=DEVICE))
    assert calls == [1]


def test_drop_path_compiles_fullgraph():
    # timm's recipes compile models with stochastic depth. With inductor's eager RNG (fallback_random) the compiled
    # step draws the same masks as eager, so outputs and grads must match.
    import torch._inductor.config as inductor_config

    eager = _model(drop_path_rate=0.5).train()
    compiled = copy.deepcopy(eager)
    x = torch.randn(4, 3, 16, 16, device=DEVICE)
    torch._dynamo.reset()
    try:
        with inductor_config.patch(fallback_random=True):
            torch.manual_seed(3)
            out = torch.compile(compiled, fullgraph=True)(x)
            out.square().mean().backward()
        torch.manual_seed(3)
        ref = eager(x)
        ref.square().mean().backward()
        assert rel_err(out, ref) < 1e-5
        for (name, p), q in zip(compiled.named_parameters(), eager.parameters()):
            assert rel_err(p.grad, q.grad) < 1e-4, name
    finally:
        torch._dynamo.reset()
