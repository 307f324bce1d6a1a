"""Model parity with torchvision: keys, shapes, outputs, gradients, running statistics; the timm-style API."""

import pytest
import torch

import fastregnet
from conftest import randomize_bn, rel_err, torchvision_model

TV_BUILDERS = fastregnet.list_models("regnet_*")


@pytest.mark.parametrize("name", TV_BUILDERS)
def test_state_dict_keys_and_shapes_equal_torchvision(name):
    tv = torchvision_model(name, init=False).state_dict()
    with torch.device("meta"):
        ours = getattr(fastregnet, name)().state_dict()
    assert list(ours) == list(tv)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in tv.items()}


@pytest.mark.parametrize("name", TV_BUILDERS)
def test_eval_outputs_match_torchvision(name):
    torch.manual_seed(0)
    tv = torchvision_model(name).eval()
    randomize_bn(tv)
    with torch.device("meta"):  # no second random init (seconds for the big models): tv's tensors are assigned
        model = getattr(fastregnet, name)().eval()
    model.load_state_dict(tv.state_dict(), assign=True)
    x = torch.randn(2, 3, 64, 48)  # non-square on purpose
    with torch.no_grad():
        err = rel_err(model(x), tv(x))
    assert err < 1e-5, f"{name}: max|out - out_tv| / max|out_tv| = {err:.2e}"


def _train_step_grads(model, x, target):
    model.train()
    loss = torch.nn.functional.cross_entropy(model(x), target)
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}, loss


@pytest.mark.parametrize("name", ["regnet_y_400mf", "regnet_x_400mf", "regnet_y_1_6gf", "regnet_x_800mf"])
def test_train_gradients_and_running_stats_match_torchvision(name):
    torch.manual_seed(1)
    tv = torchvision_model(name)
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv)
    x = torch.randn(3, 3, 64, 64)
    target = torch.randint(0, 1000, (3,))
    g_ours, loss_ours = _train_step_grads(model, x, target)
    g_tv, loss_tv = _train_step_grads(tv, x, target)
    assert abs(loss_ours.item() - loss_tv.item()) < 1e-5
    for n in g_tv:
        err = rel_err(g_ours[n], g_tv[n])
        assert err < 1e-4, f"{name}: grad of {n} differs, rel err {err:.2e}"
    for (n, b), (_, b_tv) in zip(model.named_buffers(), tv.named_buffers()):
        assert rel_err(b, b_tv) < 1e-5, f"{name}: buffer {n} differs after a training step"


def test_momentum_none_is_cumulative_average():
    torch.manual_seed(2)
    tv = torchvision_model("regnet_x_400mf")
    for m in tv.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    model = fastregnet.from_torchvision(tv)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    for step in range(3):
        x = torch.randn(2, 3, 32, 32)
        model.train()(x)
        tv.train()(x)
    for (n, b), (_, b_tv) in zip(model.named_buffers(), tv.named_buffers()):
        assert rel_err(b, b_tv) < 1e-5, n


def test_eval_follows_in_place_parameter_changes():
    torch.manual_seed(3)
    tv = torchvision_model("regnet_y_400mf").eval()
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        model(x)  # an earlier eval call (BN is folded afresh on every call; nothing is kept from this one)
        for src in (tv, model):  # an in-place change, as an optimizer step or load_state_dict makes
            src.trunk_output.block1[0].f.b[1].running_var.mul_(3.0)
            src.trunk_output.block2[0].f.a[0].weight.add_(0.05)
        assert rel_err(model(x), tv(x)) < 1e-5


def test_timm_style_api():
    torch.manual_seed(4)
    model = fastregnet.regnet_y_400mf().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, model.num_features, 2, 2) and model.num_features == 440
        pooled = model.forward_head(feats, pre_logits=True)
        assert pooled.shape == (2, 440)
        assert torch.allclose(model.forward_head(feats), model(x), atol=1e-6)
        final, inter = model.forward_intermediates(x)  # timm's five levels: the stem, then each stage
        assert [f.shape[1] for f in inter] == [32, 48, 104, 208, 440]
        assert [f.shape[-1] for f in inter] == [32, 16, 8, 4, 2]
        assert [i["num_chs"] for i in model.feature_info] == [32, 48, 104, 208, 440]
        assert [i["reduction"] for i in model.feature_info] == [2, 4, 8, 16, 32]
        assert torch.equal(final, feats)
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert [f.shape[1] for f in last2] == [208, 440]
    model.reset_classifier(10)
    assert model(x).shape == (2, 10) and model.get_classifier().out_features == 10
    model.reset_classifier(0)
    assert model(x).shape == (2, 440)


def test_create_model_names_and_classes():
    assert isinstance(fastregnet.create_model("regnet_y_400mf"), fastregnet.RegNetY)
    assert isinstance(fastregnet.create_model("RegNetX-200MF"), fastregnet.RegNetX)
    m = fastregnet.create_model("regnety_040", num_classes=7)
    assert m.fc.out_features == 7 and m.block_params.widths == (128, 192, 512, 1088)
    assert len(fastregnet.list_models()) == 39


def test_general_regnet_from_stage_lists():
    m = fastregnet.RegNet(depths=[1, 2], widths=[16, 32], group_widths=8, se_ratio=0.25, num_classes=5)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert m.trunk_output.block2[1].f.se.fc1.out_channels == 8  # round(0.25 * 32), from the block input width
    with pytest.raises(ValueError, match="not divisible by its group"):
        fastregnet.RegNet(depths=[1], widths=[20], group_widths=8)


def test_timm_training_options_drop_rate_zero_init_last_group_matcher():
    import timm
    import timm.optim

    torch.manual_seed(5)
    plain = fastregnet.create_model("regnety_004", num_classes=10)
    model = fastregnet.create_model("regnety_004", num_classes=10, drop_rate=0.5, zero_init_last=True)
    assert [n for n, _ in model.named_modules()] == [n for n, _ in plain.named_modules()]  # torchvision's tree
    last_bns = [blk.f.c[1].weight for stage in model.trunk_output for blk in stage]
    assert len(last_bns) == 16 and all(not w.any() for w in last_bns)
    assert all(torch.equal(blk.f.c[1].weight, torch.ones_like(blk.f.c[1].weight))
               for stage in plain.trunk_output for blk in stage)  # torchvision's init by default

    model.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), plain.eval()(x))  # dropout is training-only
        feats = model.forward_features(x)
        model.train()
        dropped = model.forward_head(feats, pre_logits=True)
        kept = plain.forward_head(feats, pre_logits=True)
    zeros = (dropped == 0) & (kept != 0)
    assert 0.3 < zeros.float().mean() < 0.7
    assert torch.allclose(dropped[~zeros], 2 * kept[~zeros])  # survivors scaled by 1 / (1 - p)
    for bad, err in ((1.0, ValueError), (-0.1, ValueError), (float("nan"), ValueError), ("0.1", TypeError)):
        with pytest.raises(err, match="drop_rate"):
            fastregnet.create_model("regnety_004", drop_rate=bad)

    # timm's layer-wise LR decay groups parameters through group_matcher: the same groups as timm's own model
    ours = timm.optim.create_optimizer_v2(plain, "sgd", lr=0.1, layer_decay=0.9, weight_decay=1e-4)
    theirs = timm.optim.create_optimizer_v2(timm.create_model("regnety_004"), "sgd", lr=0.1, layer_decay=0.9,
                                            weight_decay=1e-4)
    scales = lambda opt: sorted(round(g["lr_scale"], 6) for g in opt.param_groups)  # noqa: E731
    assert scales(ours) == scales(theirs)
    coarse = plain.group_matcher(coarse=True)
    assert {int(__import__("re").match(coarse["blocks"], n).group(1)) for n, _ in plain.named_parameters()
            if n.startswith("trunk_output.")} == {1, 2, 3, 4}


def _record_calls(monkeypatch, name, keep=lambda result: True):
    """Patch fastregnet.cpu_direct.<name> to record its first argument (a part or block) on every call whose result
    keep() accepts; returns the list it fills."""
    import fastregnet.cpu_direct as cpu_direct

    calls, real = [], getattr(cpu_direct, name)

    def spy(first, *args):
        result = real(first, *args)
        if keep(result):
            calls.append(first)
        return result

    monkeypatch.setattr(cpu_direct, name, spy)
    return calls


def test_cpu_direct_folds_bn_only_into_convs_with_large_outputs(monkeypatch):
    # on a CPU under "auto", eval folds a BN into its conv where the output is large (batch 8 at 224 px: the early
    # stages), and runs the modules elsewhere; either way the output is torchvision's, and export keeps the modules
    import fastregnet.layers as layers

    tv = torchvision_model("regnet_y_400mf").eval()
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv).eval()
    folded = []
    real_fold = layers.ConvNormActivation.folded
    monkeypatch.setattr(layers.ConvNormActivation, "folded", lambda self: folded.append(self) or real_fold(self))
    parts = [m for m in model.modules() if isinstance(m, layers.ConvNormActivation)]
    for batch, expect in ((8, lambda n: 0 < n < len(parts)), (1, lambda n: n < len(parts) // 4)):
        folded.clear()
        x = torch.randn(batch, 3, 224, 224)
        with torch.no_grad():
            err = rel_err(model(x), tv(x))
        assert err < 1e-5 and expect(len(folded)), (batch, len(folded), err)
    folded.clear()
    torch.export.export(model, (torch.randn(8, 3, 224, 224),))
    assert not folded


def test_cpu_direct_runs_small_pointwise_convs_as_gemms_in_inference_only(monkeypatch):
    # in inference, a stride-1 1x1 conv on a small channels_last map runs as F.linear (the output torchvision's up to
    # rounding, channels_last); with autograd on, in training and on an NCHW input the conv itself
    tv = torchvision_model("regnet_x_400mf").eval()
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv).eval()
    gemms = _record_calls(monkeypatch, "runs_as_gemm", keep=bool)
    x = torch.randn(1, 3, 128, 128).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out, expected = model(x), tv(x)
    pointwise = {m for m in model.modules() if isinstance(m, fastregnet.layers.ConvNormActivation)
                 and m[0].kernel_size == (1, 1) and m[0].stride == (1, 1)}
    assert gemms and set(gemms) <= pointwise and len(set(gemms)) < len(pointwise)  # the small maps only
    assert rel_err(out, expected) < 1e-5
    batch2 = x.expand(2, -1, -1, -1).contiguous(memory_format=torch.channels_last)
    for label, run in (("autograd", lambda: model(x)), ("batch statistics", lambda: model.train()(batch2)),
                       ("NCHW", lambda: model.eval()(x.contiguous()))):
        gemms.clear()
        with torch.inference_mode(label != "autograd"):
            run()
        assert not gemms, label


def test_cpu_direct_calls_the_modules_ops_directly_unless_observed(monkeypatch):
    # on a CPU under "auto", an eval block whose children fastregnet.fusion allows runs fastregnet.cpu_direct (the
    # modules' ops without their __call__; SE's fcs as GEMMs); a hook anywhere in a block sends that block to its
    # children (and the hook fires); the outputs are torchvision's up to rounding either way
    tv = torchvision_model("regnet_y_400mf").eval()
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv).eval()
    direct = _record_calls(monkeypatch, "residual_block")
    fired = []
    observed = model.trunk_output.block2[1]
    observed.f.se.fc1.register_forward_hook(lambda *a: fired.append(1))
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        err = rel_err(model(x), tv(x))
    blocks = [m for m in model.modules() if isinstance(m, fastregnet.layers.ResBottleneckBlock)]
    assert err < 1e-5 and fired == [1] and observed not in direct and len(direct) == len(blocks) - 1, err
    x.requires_grad_(True)  # with grad on: the same ops, differentiable
    (model(x).sum()).backward()
    grad_ours = x.grad.clone()
    x.grad = None
    tv(x).sum().backward()
    assert rel_err(grad_ours, x.grad) < 1e-5


def test_cpu_direct_trains_as_the_modules_do(monkeypatch):
    # training on a CPU under "auto": blocks run fastregnet.cpu_direct (batch statistics, running-statistics
    # updates, the batch counted) and match torchvision in loss, gradients and buffers, for every BN configuration
    # nn.BatchNorm2d accepts; a training SyncBatchNorm is left to its module
    direct = _record_calls(monkeypatch, "residual_block")
    configs = {"momentum None": dict(momentum=None), "not tracking": dict(track_running_stats=False),
               "tracking switched off": dict(switch_off=True), "counting without running buffers": dict(drop=True)}
    for label, config in configs.items():
        torch.manual_seed(5)
        tv = torchvision_model("regnet_y_400mf")
        randomize_bn(tv)
        model = fastregnet.from_torchvision(tv)
        for m in [*tv.modules(), *model.modules()]:  # (attributes a state_dict does not carry)
            if isinstance(m, torch.nn.BatchNorm2d):
                if "momentum" in config:
                    m.momentum = None
                if config.get("switch_off"):
                    m.track_running_stats = False  # buffers kept (and not updated); eval reads them
                if "track_running_stats" in config:
                    m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = (
                        False, None, None, None)
                if config.get("drop"):  # still tracking: torch counts the batches all the same
                    m.running_mean = m.running_var = None
        direct.clear()
        x, target = torch.randn(3, 3, 64, 64), torch.randint(0, 1000, (3,))
        for _ in range(2):
            g_ours, loss_ours = _train_step_grads(model, x, target)
            g_tv, loss_tv = _train_step_grads(tv, x, target)
        assert direct and torch.equal(loss_ours, loss_tv), label
        for n in g_tv:  # the modules' ops exactly: bit for bit
            assert torch.equal(g_ours[n], g_tv[n]), (label, n)
        for (n, b), (_, b_tv) in zip(model.named_buffers(), tv.named_buffers()):
            assert torch.equal(b, b_tv), (label, n)
        if "momentum" not in config:  # eval normalizing with batch statistics, as nn.BatchNorm2d without stats
            with torch.no_grad():
                assert rel_err(model.eval()(x), tv.eval()(x)) < 1e-5, label
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(fastregnet.regnet_y_400mf()).train()
    direct.clear()
    model(torch.randn(2, 3, 32, 32))
    assert not direct
    # a train-mode forward without autograd (BN recalibration) at a size inference would fold: batch statistics,
    # running statistics updated, exactly torchvision's
    tv = torchvision_model("regnet_y_400mf")
    randomize_bn(tv)
    model = fastregnet.from_torchvision(tv)
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model.train()(x), tv.train()(x))
    assert all(torch.equal(b, b_tv) for b, b_tv in zip(model.buffers(), tv.buffers()))


def test_cpu_direct_keeps_training_bit_exact_with_frozen_or_eval_norms_and_odd_buffers(monkeypatch):
    # with autograd on, BN is never folded (a frozen BN, or an eval BN inside a training model, at a size where
    # inference would fold it): gradients are torchvision's bit for bit; buffers nn.BatchNorm2d never builds by
    # itself (no num_batches_tracked, one of running_mean / running_var) send the part to its module
    from torchvision.ops import FrozenBatchNorm2d

    direct = _record_calls(monkeypatch, "conv_norm_act")
    x, target = torch.randn(2, 3, 128, 128), torch.randint(0, 1000, (2,))  # the stem's output (2**18) folds in inference

    def step(model):  # in the model's current modes
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        return loss, {n: p.grad for n, p in model.named_parameters()}, dict(model.named_buffers())

    def same(ours, theirs):
        (loss, grads, buffers), (loss_tv, grads_tv, buffers_tv) = step(ours), step(theirs)
        return (torch.equal(loss, loss_tv) and all(torch.equal(grads[n], grads_tv[n]) for n in grads_tv)
                and all(b is None and buffers_tv[n] is None or torch.equal(b, buffers_tv[n])
                        for n, b in buffers.items()))

    torch.manual_seed(6)
    tv_frozen = torchvision_model("regnet_y_400mf", norm_layer=FrozenBatchNorm2d).train()
    for m in tv_frozen.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    frozen = fastregnet.regnet_y_400mf(norm_layer=FrozenBatchNorm2d).train()
    frozen.load_state_dict(tv_frozen.state_dict())
    assert same(frozen, tv_frozen) and frozen.stem in direct

    tv = torchvision_model("regnet_y_400mf")
    randomize_bn(tv)
    partly_eval = fastregnet.from_torchvision(tv)
    for model in (tv, partly_eval):
        model.train().stem.eval()  # an eval BN in a training model
    direct.clear()
    assert same(partly_eval, tv) and partly_eval.stem in direct

    tv_odd, odd = fastregnet.from_torchvision(tv), fastregnet.from_torchvision(tv)
    tv_odd.stem = torchvision_model("regnet_y_400mf").stem  # torchvision's own stem: the reference for odd's
    tv_odd.stem.load_state_dict(odd.stem.state_dict())
    for model in (tv_odd, odd):
        model.train().stem[1].num_batches_tracked = None
    direct.clear()
    assert same(odd, tv_odd) and odd.stem not in direct
    for model in (tv_odd, odd):  # (counting again: only the missing running_var is odd now)
        model.stem[1].num_batches_tracked = torch.tensor(0)
        model.eval().stem[1].running_var = None
    with torch.no_grad():
        with pytest.raises(Exception) as theirs:
            tv_odd(x)
        with pytest.raises(type(theirs.value)):
            odd(x)
    assert odd.stem not in direct


def test_a_part_refuses_a_3d_input_as_torchvision():
    # conv2d takes an unbatched (C, H, W) input; BatchNorm2d refuses it: the direct eval path must too
    from torchvision.ops import Conv2dNormActivation

    part = fastregnet.layers.ConvNormActivation(8, 8, 3).eval()
    tv_part = Conv2dNormActivation(8, 8, 3).eval()
    x = torch.randn(8, 6, 6)
    for p in (tv_part, part):
        with pytest.raises(ValueError, match="expected 4D input"):
            p(x)
