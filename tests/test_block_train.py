"""The block's training path on the kernels: conv a and the projection (1x1 GEMM + batch-statistics BN), grouped
conv b, and SE + conv c + BN + residual + ReLU as one op, forward and backward, against the PyTorch block in
float64; running statistics; fp16; opcheck of the new ops; launch counts per training step."""

import copy

import pytest
import torch

import fastregnet
from conftest import BLOCKS, DEVICE, assert_close, make_block, rel_err, train_step_launches

pytestmark = pytest.mark.usefixtures("poisoned_kernel_buffers")


def _train_step(blk, x, backend):
    """One train-mode forward + backward (loss = sum(out * probe)); returns (out, grad_x, {param: grad})."""
    x = x.detach().clone().requires_grad_()
    with fastregnet.use_backend(backend):
        out = blk.train()(x)
        probe = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(out)
        (out * probe).sum().backward()
    return out, x.grad, {k: p.grad for k, p in blk.named_parameters()}


# and channel counts that are not multiples of 8 (the 1x1 kernels' CHANNEL_ALIGN 1) with group width 4 (the grouped
# kernels' VEC 4): the unaligned paths of every backward kernel
@pytest.mark.parametrize("cin,cout,stride,gw,se", BLOCKS + [(12, 20, 2, 4, 0.25)])
def test_block_training_step_matches_float64_reference(cin, cout, stride, gw, se):
    blk = make_block(cin, cout, stride, gw, se)
    ref = copy.deepcopy(blk).double()
    x = torch.randn(3, cin, 9, 7, device=DEVICE)  # batch 3, odd H/W
    with fastregnet.count_kernel_launches() as launches:
        out, gx, grads = _train_step(blk, x, "triton")
    out64, gx64, grads64 = _train_step(ref, x.double(), "torch")

    assert launches == train_step_launches(proj=blk.proj is not None, se=bool(se)), launches
    assert rel_err(out, out64) < 1e-5
    assert rel_err(gx, gx64) < 1e-4
    for name, g in grads.items():
        assert g is not None and not torch.isnan(g).any(), name
        assert rel_err(g, grads64[name]) < 1e-4, f"grad of {name}: {rel_err(g, grads64[name]):.2e}"
    buffers64 = dict(ref.named_buffers())
    for name, b in blk.named_buffers():
        if b.is_floating_point():
            assert rel_err(b, buffers64[name]) < 1e-6, name
        else:
            assert torch.equal(b.cpu(), buffers64[name].cpu()), name


def test_block_running_stats_with_cumulative_momentum_over_steps():
    blk = make_block(32, 48, 2, 8, 0.25)
    for m in blk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative moving average, as nn.BatchNorm2d
    ref = copy.deepcopy(blk)
    for step in range(3):
        x = torch.randn(2, 32, 6, 6, device=DEVICE)
        with torch.no_grad():
            with fastregnet.use_backend("triton"):
                blk.train()(x)
            with fastregnet.use_backend("torch"):
                ref.train()(x)
    theirs = dict(ref.named_buffers())
    for name, b in blk.named_buffers():
        assert rel_err(b, theirs[name]) < 1e-5, name


def _all_relus_on(blk):
    """Shift every BN's beta and SE's fc1 bias up by 6 so no ReLU input lies near 0. In fp16, ~0.1% of ReLU inputs
    round across 0 (for torch too), and a flipped ReLU moves a gradient by a whole element: that measures luck,
    not precision. The masking paths themselves are checked in fp32 above."""
    with torch.no_grad():
        for m in blk.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.add_(6.0)
        if hasattr(blk.f, "se"):
            blk.f.se.fc1.bias.add_(6.0)
    return blk


@pytest.mark.parametrize("cin,cout,stride,gw,se", [BLOCKS[0], BLOCKS[1]])
def test_block_training_fp16_within_torch_error(cin, cout, stride, gw, se):
    blk = _all_relus_on(make_block(cin, cout, stride, gw, se))
    x = torch.randn(2, cin, 8, 8, device=DEVICE)
    out64, gx64, grads64 = _train_step(copy.deepcopy(blk).double(), x.double(), "torch")
    out_t, gx_t, grads_t = _train_step(copy.deepcopy(blk).half(), x.half(), "torch")
    out, gx, grads = _train_step(copy.deepcopy(blk).half(), x.half(), "triton")
    # measured: within 1.2x of torch's own fp16 error everywhere, below it for most parameters
    assert rel_err(out, out64) <= 2 * rel_err(out_t, out64) + 1e-4
    assert rel_err(gx, gx64) <= 2 * rel_err(gx_t, gx64) + 1e-4
    for name, g in grads.items():
        assert rel_err(g, grads64[name]) <= 2 * rel_err(grads_t[name], grads64[name]) + 1e-4, name


def _nhwc(*shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("stride,shortcut,se,drop", [(1, False, False, False), (2, False, False, False),
                                                     (1, True, True, False), (1, True, True, True)])
def test_opcheck_pointwise_train_ops(stride, shortcut, se, drop):
    g = torch.Generator().manual_seed(0)
    x = _nhwc(2, 16, 5, 6, seed=1)
    w = (torch.randn(24, 16, 1, 1, generator=g) * 0.3).to(DEVICE)
    gamma, beta = (torch.rand(24, generator=g) + 0.5).to(DEVICE), torch.randn(24, generator=g).to(DEVICE)
    ho, wo = (5 - 1) // stride + 1, (6 - 1) // stride + 1
    sc = _nhwc(2, 24, ho, wo, seed=2) if shortcut else None
    fc = [t.to(DEVICE) for t in (torch.randn(4, 16, 1, 1, generator=g), torch.randn(4, generator=g),
                                 torch.randn(16, 4, 1, 1, generator=g), torch.randn(16, generator=g))] if se else \
        [None] * 4
    scale = torch.tensor([0.0, 1.25], device=DEVICE) if drop else None  # stochastic depth: one dropped, one kept
    args = (x, w, gamma, beta, 1e-5, stride, shortcut, sc, *fc, scale)
    torch.library.opcheck(torch.ops.fastregnet.pointwise_conv_bn_train, args)
    leaves = [t.clone().requires_grad_() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
              for t in args]
    torch.library.opcheck(torch.ops.fastregnet.pointwise_conv_bn_train, leaves)  # with autograd
    out, y, mean, var, invstd, gate, pooled, hidden = torch.ops.fastregnet.pointwise_conv_bn_train(*args)
    se_saved = (gate, pooled, hidden, fc[0], fc[2]) if se else (None,) * 5
    torch.library.opcheck(torch.ops.fastregnet.pointwise_conv_bn_bwd,
                          (torch.randn_like(out), x, w, y, out if shortcut else None, mean, invstd, gamma, beta,
                           stride, shortcut, *se_saved, scale))


@pytest.mark.parametrize("stride,se", [(2, False), (1, True)])
def test_every_training_1x1_candidate_computes_the_same_op(stride, se):
    # The training 1x1 kernels' tuning spaces (forward GEMM with statistics, data grad, weight grad) in fp16, the
    # dtype the interpreter runs of the 16-bit ones: every configuration of one role, the others on their
    # heuristic, gives the op's outputs and grads within fp16 rounding of the heuristic's; with the SE gate (whose
    # weight grad also folds the gate's grad) and at stride 2.
    from fastregnet.kernels import pointwise_conv as pc
    from fastregnet.kernels import tuning
    from fastregnet.kernels.squeeze_excite import se_excite, se_squeeze

    x = _nhwc(2, 16, 7, 6, seed=0).abs().half()
    w = (torch.randn(72, 16, 1, 1, generator=torch.Generator().manual_seed(1)) * 0.3).to(DEVICE).half()
    gamma, beta = torch.rand(72, device=DEVICE) + 0.5, torch.randn(72, device=DEVICE)
    gate = saved = shortcut = None
    if se:
        fc = [torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), torch.randn(16)]
        sq, rows = se_squeeze(x)
        gate, pooled, hidden = se_excite(sq, 2, 42, rows, *[t.to(DEVICE) for t in fc], saved=True)
        saved = (pooled, hidden, fc[0].to(DEVICE), fc[2].to(DEVICE))
        shortcut = _nhwc(2, 72, 7, 6, seed=3).half()
    probe = _nhwc(*((2, 72) + ((7, 6) if stride == 1 else (4, 3))), seed=4).half()

    def run():
        out, y, mean, var, invstd = pc.pointwise_conv_train_fwd(x, w, gamma, beta, 1e-5, stride, True, gate,
                                                                shortcut)
        grads = pc.pointwise_conv_bwd(probe, x, w, y, out if se else None, mean, invstd, gamma, beta, stride, True,
                                      gate, saved)
        return [out, mean, var, *grads[:4]] + (list(grads[5]) if se else [])

    expected = run()
    for role, family in pc.TRAIN_FAMILIES.items():
        candidates = pc.train_candidates(role, 72, torch.float16, se, stride, pc.device_arch(DEVICE))
        assert len(candidates) >= 2
        for config in candidates:
            with tuning.force(config, family):
                got = run()
            for a, e in zip(got, expected):
                assert rel_err(a.float(), e.float()) < 3e-3, (role, config)


@pytest.mark.parametrize("bad_weight", [False, True])
def test_stride2_data_grad_is_exactly_zero_off_the_stride_grid(bad_weight):
    # The stride-2 1x1 data grad walks the output rows and writes zeros to the input pixels its conv never read, as
    # PyTorch's conv backward leaves them, even when a weight is Inf (0 * Inf through the GEMM would make them NaN);
    # on the grid it matches PyTorch in float64. Odd height, even width.
    from fastregnet.kernels import pointwise_conv as pc

    x = _nhwc(2, 16, 7, 6, seed=5)
    w = (torch.randn(24, 16, 1, 1, generator=torch.Generator().manual_seed(6)) * 0.3).to(DEVICE)
    if bad_weight:
        w[3, 5] = float("inf")
    gamma, beta = torch.rand(24, device=DEVICE) + 0.5, torch.randn(24, device=DEVICE)
    out, y, mean, var, invstd = pc.pointwise_conv_train_fwd(x, w, gamma, beta, 1e-5, 2, False)
    probe = _nhwc(2, 24, 4, 3, seed=7)
    grad_x = pc.pointwise_conv_bwd(probe, x, w, y, None, mean, invstd, gamma, beta, 2, False)[0]
    off_grid = torch.ones(7, 6, dtype=torch.bool, device=DEVICE)
    off_grid[::2, ::2] = False
    assert torch.equal(grad_x[:, :, off_grid], torch.zeros_like(grad_x[:, :, off_grid]))
    leaves = [t.double().requires_grad_() for t in (x, w, gamma, beta)]
    ref = torch.nn.functional.batch_norm(torch.nn.functional.conv2d(leaves[0], leaves[1], stride=2), None, None,
                                         leaves[2], leaves[3], training=True, eps=1e-5)
    (ref_gx,) = torch.autograd.grad((ref * probe.double()).sum(), leaves[0])
    assert torch.equal(ref_gx[:, :, off_grid], torch.zeros_like(ref_gx[:, :, off_grid]))
    on_grid = grad_x[:, :, ::2, ::2]
    if bad_weight:
        assert torch.equal(torch.isnan(on_grid), torch.isnan(ref_gx[:, :, ::2, ::2]))
    else:
        assert rel_err(on_grid, ref_gx[:, :, ::2, ::2]) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_every_bn_elementwise_candidate_computes_the_same_pass(dtype):
    # The normalize pass and the backward reduction's tuning space: every configuration gives the normalize pass's
    # output bit for bit (it is elementwise) and the reduction's sums within fp32 rounding (its partial rows follow
    # the tile), with a shortcut and stochastic depth; 150 channels (a partial 64- and 128-channel block).
    from fastregnet.kernels import batch_norm as bn
    from fastregnet.kernels import tuning

    y, sc, go = (_nhwc(3, 150, 9, 11, seed=s).to(dtype) for s in (1, 2, 3))
    g = torch.Generator().manual_seed(4)
    mean, invstd, gamma, beta = (torch.randn(150, generator=g).to(DEVICE) for _ in range(4))
    invstd, scale = invstd.abs() + 0.5, torch.tensor([0.0, 1.5, 2.0], device=DEVICE)

    def run():
        out = bn.bn_act_apply(y, mean, invstd, gamma, beta, True, sc, scale)
        return out, bn.bn_act_bwd_reduce(go, y, mean, invstd, gamma, beta, True, True, out, scale)

    out0, (dbeta0, dgamma0, gsc0) = run()
    apply_configs, reduce_configs = bn.elementwise_candidates("bn_apply"), bn.elementwise_candidates("bn_bwd_reduce")
    assert bn.ELEMENTWISE_TILES in apply_configs and bn.ELEMENTWISE_TILES in reduce_configs
    assert len(apply_configs) == len(reduce_configs) >= 3
    for apply_config, reduce_config in zip(apply_configs, reduce_configs):
        config = (apply_config, reduce_config)
        with tuning.force(apply_config, "bn_apply"), tuning.force(reduce_config, "bn_bwd_reduce"):
            out, (dbeta, dgamma, gsc) = run()
        assert torch.equal(out, out0) and torch.equal(gsc, gsc0), config
        assert_close(dbeta, dbeta0, rtol=1e-5, atol=1e-4, name=f"dbeta {config}")
        assert_close(dgamma, dgamma0, rtol=1e-5, atol=1e-4, name=f"dgamma {config}")


def test_bad_gate_and_shortcut_shapes_are_reported():
    from fastregnet.kernels.pointwise_conv import pointwise_conv_train_fwd

    x = _nhwc(2, 16, 4, 4, seed=0)
    w, v = torch.randn(8, 16, 1, 1, device=DEVICE), torch.ones(8, device=DEVICE)
    with pytest.raises(ValueError, match="gate"):
        pointwise_conv_train_fwd(x, w, v, v, 1e-5, 1, True, gate=torch.ones(2, 8, device=DEVICE))
    with pytest.raises(ValueError, match="shortcut"):
        pointwise_conv_train_fwd(x, w, v, v, 1e-5, 1, True, shortcut=_nhwc(2, 8, 2, 2, seed=1))
    with pytest.raises(ValueError, match="more than one value"):
        pointwise_conv_train_fwd(x[:1, :, :1, :1], w, v, v, 1e-5, 1, True)


def test_block_training_under_autocast_within_torch_error():
    # AMP: fp32 parameters and input, fp16 compute; our ops cast as autocast would for a conv
    blk = _all_relus_on(make_block(32, 48, 2, 8, 0.25))
    x = torch.randn(2, 32, 8, 8, device=DEVICE)
    out64, gx64, grads64 = _train_step(copy.deepcopy(blk).double(), x.double(), "torch")
    with torch.autocast(DEVICE.type, dtype=torch.float16):
        out_t, gx_t, grads_t = _train_step(copy.deepcopy(blk), x, "torch")
        out, gx, grads = _train_step(copy.deepcopy(blk), x, "triton")
    assert out.dtype == torch.float16 and gx.dtype == torch.float32
    assert rel_err(out, out64) <= 2 * rel_err(out_t, out64) + 1e-4
    assert rel_err(gx, gx64) <= 2 * rel_err(gx_t, gx64) + 1e-4
    for name, g in grads.items():
        assert g.dtype == torch.float32, name
        assert rel_err(g, grads64[name]) <= 2 * rel_err(grads_t[name], grads64[name]) + 1e-4, name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_batch_statistics_are_those_of_the_stored_conv_output(dtype):
    # With every ReLU on and loss = sum(out), every gradient except the last BN's beta vanishes exactly (a BN
    # removes any per-channel shift or scale of what follows the previous one). It only does in floating point if
    # each BN's mean/var are those of the y that backward reads back: statistics of the fp32 accumulator, with y
    # stored rounded to fp16, left gradients of 2.4e-4 of dbeta here; fp32 rounding alone leaves ~1e-6 (torch too).
    blk = _all_relus_on(make_block(48, 48, 1, 8, None)).to(dtype).train()
    # a non-negative input, drawn in fp32 from its own generator: the final ReLU sees conv c's BN output + 6 + x,
    # which a N(0, 1) shortcut could still push below 0 (torch 2.11's fp16 randn stream did, here)
    x = torch.rand(2, 48, 8, 8, generator=torch.Generator().manual_seed(0)).to(DEVICE, dtype)
    with fastregnet.use_backend("triton"):
        blk(x).float().sum().backward()
    scale = blk.f.c[1].bias.grad.abs().max()
    for name, p in blk.named_parameters():
        if name != "f.c.1.bias":
            assert p.grad.abs().max() <= 1e-5 * scale, f"{name}: {p.grad.abs().max():.2e} vs dbeta {scale:.2e}"


@pytest.mark.parametrize("stride,se", [(2, False), (1, True)])
def test_weight_grad_row_splits_sum_to_the_single_split_result(stride, se, monkeypatch):
    # On a GPU the 1x1 weight grad splits its row reduction across programs (whole images when it also folds the
    # SE gate's grad); under the interpreter it uses one split, so force several here.
    import fastregnet.kernels.pointwise_conv as pc
    from fastregnet.kernels.squeeze_excite import se_excite, se_squeeze

    x = _nhwc(3, 16, 7, 6, seed=0).abs()
    w = torch.randn(24, 16, 1, 1, device=DEVICE) * 0.3
    gamma, beta = torch.rand(24, device=DEVICE) + 0.5, torch.randn(24, device=DEVICE)
    gate = saved = None
    fc = [torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), torch.randn(16)]
    if se:
        sq, rows = se_squeeze(x)
        gate, pooled, hidden = se_excite(sq, 3, 42, rows, *[t.to(DEVICE) for t in fc], saved=True)
        saved = (pooled, hidden, fc[0].to(DEVICE), fc[2].to(DEVICE))
    shortcut = _nhwc(3, 24, 7, 6, seed=3) if se else None
    out, y, mean, var, invstd = pc.pointwise_conv_train_fwd(x, w, gamma, beta, 1e-5, stride, True, gate, shortcut)
    args = (torch.randn_like(out), x, w, y, out if se else None, mean, invstd, gamma, beta, stride, True, gate, saved)
    single = pc.pointwise_conv_bwd(*args)
    rows_per_split = (lambda m, hw, programs, on_gpu, whole_images, row_bytes, block_m:
                      hw if whole_images else block_m)
    monkeypatch.setattr(pc, "_weight_grad_split", rows_per_split)
    split = pc.pointwise_conv_bwd(*args)
    assert_close(split[1], single[1], rtol=1e-5, atol=1e-6, name="grad_weight with row splits")
    assert torch.equal(split[0], single[0])
    if se:
        for a, b in zip(split[5], single[5]):
            assert_close(a, b, rtol=1e-5, atol=1e-6, name="SE grads with row splits")


def test_eval_without_running_stats_uses_batch_statistics_on_every_path():
    # nn.BatchNorm2d(track_running_stats=False) normalizes with batch statistics in eval too: the block must not
    # take the folded-BN inference path then.
    blk = make_block(32, 48, 2, 8, 0.25).eval()
    for m in blk.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    x = torch.randn(2, 32, 6, 6, device=DEVICE)
    with torch.no_grad():
        with fastregnet.use_backend("torch"):
            ref = blk(x)
        with fastregnet.use_backend("triton"):
            out = blk(x)
    assert rel_err(out, ref) < 1e-5


def test_opcheck_running_stats_update():
    g = torch.Generator().manual_seed(0)
    running_mean, running_var = torch.randn(70, generator=g).to(DEVICE), (torch.rand(70, generator=g) + 0.5).to(DEVICE)
    mean, var = torch.randn(70, generator=g).to(DEVICE), torch.rand(70, generator=g).to(DEVICE)
    expected_mean, expected_var = running_mean.clone(), running_var.clone()
    from fastregnet.reference import update_running_stats

    update_running_stats(expected_mean, expected_var, mean, var, 12, 0.1)
    torch.ops.fastregnet.bn_update_running_stats(running_mean, running_var, mean, var, 12, 0.1)
    assert rel_err(running_mean, expected_mean) < 1e-6 and rel_err(running_var, expected_var) < 1e-6
    torch.library.opcheck(torch.ops.fastregnet.bn_update_running_stats, (running_mean, running_var, mean, var, 12, 0.1))


def test_statistics_merge_in_two_passes_equals_batchnorm(monkeypatch):
    # Large batches merge the per-block partials in two passes (parts of at most MERGE_STEPS steps, then the parts),
    # so no program walks the whole batch; force it at a small size and compare with torch's batch statistics.
    import fastregnet.kernels.batch_norm as bn

    torch.manual_seed(0)
    m, c, rows = 1000, 70, 8
    y = torch.randn(m, c, dtype=torch.float64).mul(3).add(5).float()
    blocks = y.split(rows)
    mean_part = torch.stack([b.mean(0) for b in blocks])
    m2_part = torch.stack([((b - b.mean(0)) ** 2).sum(0) for b in blocks])
    monkeypatch.setattr(bn, "MERGE_STEPS", 1)
    plan = bn.stats_merge_plan(len(blocks), c)
    assert len(plan) == 2 and plan[0][0] == (2, 4) and all(steps == 1 for *_, steps in plan)  # 125 blocks: 4 parts
    mean, var, invstd = bn.bn_batch_stats(mean_part, m2_part, m, rows, 1e-5)
    ref_var, ref_mean = torch.var_mean(y.double(), dim=0, unbiased=False)
    assert_close(mean, ref_mean, rtol=1e-5, atol=1e-5, name="mean")
    assert_close(var, ref_var, rtol=1e-5, name="var")
    assert_close(invstd, (ref_var + 1e-5).rsqrt(), rtol=1e-5, name="invstd")
    monkeypatch.undo()
    assert len(bn.stats_merge_plan(len(blocks), c)) == 1  # at the default, 125 blocks take one pass


@pytest.mark.parametrize("c,s", [(150, 40), (520, 70)])
def test_se_excitation_over_several_image_s_and_c_blocks(c, s):
    # 20 images (two 16-image blocks) and 64-row squeeze blocks straddling the 90-pixel images (2 image slots each);
    # C = 150: two one-step fc1 splits, three 64-channel fc2 blocks, S = 40: two 32-wide fc1 blocks; C = 520: three
    # two-step fc1 splits (padded to 4 in fc2's sum), S = 70: two 64-deep fc2 steps. Every split of the excitation
    # launches, against PyTorch's SE math in float64.
    from fastregnet.kernels.squeeze_excite import fc1_splits, se_excite, se_squeeze

    assert fc1_splits(150) == (2, 128) and fc1_splits(520) == (3, 256)
    x = _nhwc(20, c, 9, 10, seed=4)  # 90 pixels: each image's rows lie in 2 or 3 of the 64-row blocks
    g = torch.Generator().manual_seed(5)
    fc = [torch.randn(s, c, 1, 1, generator=g) * 0.2, torch.randn(s, generator=g),
          torch.randn(c, s, 1, 1, generator=g) * 0.2, torch.randn(c, generator=g)]
    sq, rows = se_squeeze(x)
    assert rows == 64 and sq.shape == (-(-20 * 90 // 64) * 2, c)  # slots: cdiv(63, 90) + 1 = 2
    gate, pooled, hidden = se_excite(sq, 20, 90, rows, *[t.to(DEVICE) for t in fc], saved=True)
    xd = x.double().cpu()
    ref_pooled = xd.mean((2, 3))
    ref_hidden = torch.relu(ref_pooled @ fc[0].double().reshape(s, c).t() + fc[1].double())
    ref_gate = torch.sigmoid(ref_hidden @ fc[2].double().reshape(c, s).t() + fc[3].double())
    assert_close(pooled, ref_pooled, rtol=1e-5, atol=1e-6, name="pooled")
    assert_close(hidden, ref_hidden, rtol=1e-5, atol=1e-5, name="hidden")
    assert_close(gate, ref_gate, rtol=1e-5, atol=1e-6, name="gate")
    # the backward runs the same two fc kernels the other way round, over the same splits and blocks, from gate
    # grads given as 3 partial parts (as conv c's weight grad writes them, one per N block)
    from fastregnet.kernels.squeeze_excite import se_excite_bwd

    g_part = torch.randn(3, 20, c, generator=g).to(DEVICE)
    g_pooled, g_w1, g_b1, g_w2, g_b2 = se_excite_bwd(g_part, gate, pooled, hidden, fc[0].to(DEVICE), fc[2].to(DEVICE))
    leaves = [t.double().requires_grad_() for t in (ref_pooled, *fc)]
    h = torch.relu(leaves[0] @ leaves[1].reshape(s, c).t() + leaves[2])
    out = torch.sigmoid(h @ leaves[3].reshape(c, s).t() + leaves[4])
    refs = torch.autograd.grad((out * g_part.double().cpu().sum(0)).sum(), leaves)
    for name, got, ref in zip(("g_pooled", "g_fc1_w", "g_fc1_b", "g_fc2_w", "g_fc2_b"),
                              (g_pooled, g_w1, g_b1, g_w2, g_b2), refs):
        assert_close(got, ref.reshape(got.shape), rtol=1e-5, atol=1e-5, name=name)
