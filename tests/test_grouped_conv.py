"""The fused grouped 3x3 conv + BN + ReLU kernels against the PyTorch reference, through the interpreter on CPU
(or on the GPU when there is one): every zoo group width, odd shapes, eval and train, forward and backward."""

import pytest
import torch
import torch.nn.functional as F

import fastregnet
from conftest import DEVICE, HAS_GPU, assert_close, rel_err
from fastregnet import ops
from fastregnet.design import MODEL_CONFIGS
from fastregnet.layers import ConvNormActivation

pytestmark = pytest.mark.usefixtures("triton_backend", "poisoned_kernel_buffers")

ZOO_GROUP_WIDTHS = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})


def _inputs(n, c, h, w, gw, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    weight = torch.randn(c, gw, 3, 3, generator=g) * (2.0 / (9 * gw)) ** 0.5
    gamma = torch.rand(c, generator=g) + 0.5
    beta = torch.randn(c, generator=g) * 0.5
    bias = torch.randn(c, generator=g) * 0.5
    return [t.to(DEVICE) for t in (x, weight, gamma, beta, bias)]


def _relu(z, mask):
    """ReLU, or with `mask` the ReLU whose on/off pattern is `mask` (see _check_all on half precision)."""
    return F.relu(z) if mask is None else z * mask.to(z.dtype)


def _reference_train(x, weight, gamma, beta, stride, groups, go, dtype, mask=None):
    """Train-mode conv+BN+ReLU and its grads with autograd, in `dtype` (float64 = the oracle)."""
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight, gamma, beta)]
    y = F.conv2d(leaves[0], leaves[1], None, stride, 1, 1, groups)
    out = _relu(F.batch_norm(y, None, None, leaves[2], leaves[3], True, 0.0, 1e-5), mask)
    out.backward(go.to(dtype))
    var, mean = torch.var_mean(y.detach(), dim=(0, 2, 3), correction=0)
    return out.detach(), mean, var, [t.grad for t in leaves]


def _reference_eval(x, weight, bias, stride, groups, go, dtype, mask=None):
    leaves = [t.detach().to(dtype).requires_grad_() for t in (x, weight, bias)]
    out = _relu(F.conv2d(leaves[0], leaves[1], leaves[2], stride, 1, 1, groups), mask)
    out.backward(go.to(dtype))
    return out.detach(), [t.grad for t in leaves]


def _run_train(x, weight, gamma, beta, stride, groups, go):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, gamma, beta)]
    rm, rv = torch.zeros_like(gamma), torch.ones_like(gamma)
    out = ops.grouped_conv_bn_act_train(leaves[0], leaves[1], leaves[2], leaves[3], rm, rv, 0.0, 1e-5, stride,
                                        groups, True)
    out.backward(go)
    return out.detach(), [t.grad for t in leaves]


def _run_eval(x, weight, bias, stride, groups, go):
    leaves = [t.detach().clone().requires_grad_() for t in (x, weight, bias)]
    out = ops.grouped_conv_bias_act(leaves[0], leaves[1], leaves[2], stride, groups, True)
    out.backward(go)
    return out.detach(), [t.grad for t in leaves]


def _check_all(n, c, h, w, gw, stride, dtype=torch.float32, tol=1e-5):
    groups = c // gw
    x, weight, gamma, beta, bias = _inputs(n, c, h, w, gw)
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    go = torch.randn(n, c, ho, wo, generator=torch.Generator().manual_seed(5)).to(DEVICE)
    xs, ws = x.to(dtype), weight.to(dtype)

    # In half precision an output within rounding of 0 may land on either side of the ReLU, and one flip moves a
    # gradient by a whole grad_out element. So there the float64 oracle uses the tested path's own ReLU pattern,
    # leaving only rounding to compare; in fp32 it is the plain ReLU.
    half = dtype != torch.float32
    out, grads = _run_train(xs, ws, gamma, beta, stride, groups, go.to(dtype))
    ref_out, _, _, ref_grads = _reference_train(xs, ws, gamma, beta, stride, groups, go.to(dtype), torch.float64,
                                                mask=out > 0 if half else None)
    errs = {"train out": (out, ref_out)} | {f"train grad {k}": (a, b) for k, a, b in
                                            zip(("x", "weight", "gamma", "beta"), grads, ref_grads)}
    out, grads = _run_eval(xs, ws, bias, stride, groups, go.to(dtype))
    ref_out, ref_grads = _reference_eval(xs, ws, bias, stride, groups, go.to(dtype), torch.float64,
                                         mask=out > 0 if half else None)
    errs |= {"eval out": (out, ref_out)} | {f"eval grad {k}": (a, b) for k, a, b in
                                            zip(("x", "weight", "bias"), grads, ref_grads)}
    if dtype == torch.float32:
        for name, (a, b) in errs.items():
            assert not torch.isnan(a).any(), f"{name}: NaN (unwritten output)"
            assert rel_err(a, b) < tol, f"{name}: rel err {rel_err(a, b):.2e} (gw={gw}, stride={stride})"
        return
    # half precision: the kernel's error against float64 must stay within a small multiple of PyTorch's own
    # error when it runs the same computation in that dtype.
    torch_errs = _torch_half_errors(xs, ws, gamma, beta, bias, stride, groups, go.to(dtype), dtype)
    for name, (a, b) in errs.items():
        assert not torch.isnan(a).any(), f"{name}: NaN (unwritten output)"
        bound = 4 * torch_errs[name] + 2e-3
        assert rel_err(a, b) <= bound, f"{name}: rel err {rel_err(a, b):.2e} > bound {bound:.2e} ({dtype})"


def _torch_half_errors(x, weight, gamma, beta, bias, stride, groups, go, dtype):
    """PyTorch's own error per output when it runs the op in `dtype`, against float64 with its ReLU pattern."""
    tr_out, _, _, tr_grads = _reference_train(x, weight, gamma, beta, stride, groups, go, dtype)
    ev_out, ev_grads = _reference_eval(x, weight, bias, stride, groups, go, dtype)
    tr_ref, _, _, tr_ref_grads = _reference_train(x, weight, gamma, beta, stride, groups, go, torch.float64,
                                                  mask=tr_out > 0)
    ev_ref, ev_ref_grads = _reference_eval(x, weight, bias, stride, groups, go, torch.float64, mask=ev_out > 0)
    errs = {"train out": rel_err(tr_out, tr_ref), "eval out": rel_err(ev_out, ev_ref)}
    errs |= {f"train grad {k}": rel_err(a, b) for k, a, b in zip(("x", "weight", "gamma", "beta"), tr_grads,
                                                                 tr_ref_grads)}
    errs |= {f"eval grad {k}": rel_err(a, b) for k, a, b in zip(("x", "weight", "bias"), ev_grads, ev_ref_grads)}
    return errs


# the widths of 112 and more take 20-100 s each under the interpreter: the second-version CI job (-m "not big")
# leaves them to the main suite
@pytest.mark.parametrize("gw", [pytest.param(g, marks=pytest.mark.big) if g >= 112 else g for g in ZOO_GROUP_WIDTHS])
def test_every_zoo_group_width_fp32(gw):
    # two groups, so the group-aligned tiles' group offsets and the padded last N chunk and K step are exercised;
    # one for the widths of 112 and more (the smaller widths cover the offsets, the big ones their long K loops)
    _check_all(2, (1 if gw >= 112 else 2) * gw, 5, 4, gw, stride=1)


@pytest.mark.parametrize("n,c,h,w,gw,stride", [
    (1, 48, 9, 7, 8, 2),     # batch 1, odd H/W with stride 2, 6 groups of 8 (N padded to 16)
    (3, 72, 7, 5, 24, 2),    # batch 3, non-power-of-two group width across tile boundaries
    (2, 112, 11, 3, 56, 1),  # tall thin map; 56 channels in a 64-wide N tile
    (3, 40, 3, 3, 40, 2),    # a single group (groups=1), as the capped first stage of regnet_x_8gf
    (2, 96, 13, 12, 48, 1),  # more pixels than one 64-row block: exercises the cross-block statistics merge
    (2, 12, 5, 4, 3, 1),     # odd group width: VEC 1, runs of one channel
    (2, 24, 6, 5, 6, 2),     # group width 6: VEC 2, runs of two channels that straddle taps' 4-aligned offsets
])
def test_odd_shapes_fp32(n, c, h, w, gw, stride):
    _check_all(n, c, h, w, gw, stride)


@pytest.mark.parametrize("gw,stride", [(8, 1), (24, 2), (64, 1), (232, 2)])
def test_fp16_within_torch_error(gw, stride):
    _check_all(2, 2 * gw, 6, 5, gw, stride, dtype=torch.float16)


def test_weight_grad_row_splits_sum_to_the_single_split_result(monkeypatch):
    # On a GPU the weight grad splits its row reduction across programs; under the interpreter it uses one split,
    # so force several here to cover the split indexing and the partial-sum buffer.
    import fastregnet.kernels.grouped_conv as gc

    n, c, h, w, gw, stride = 2, 48, 11, 9, 24, 1
    x, weight, gamma, beta, _ = _inputs(n, c, h, w, gw)
    out, y, mean, var, invstd = gc.grouped_conv_train_fwd(x, weight, gamma, beta, 1e-5, stride, c // gw, True)
    go = torch.randn_like(out)
    args = (go, x, weight, y, mean, invstd, gamma, beta, stride, c // gw, True, True)
    single = gc.grouped_conv_bwd(*args)
    monkeypatch.setattr(gc, "_weight_grad_split", lambda m, programs, on_gpu, row_bytes: 4)
    split = gc.grouped_conv_bwd(*args)
    assert gc.triton.cdiv(n * h * w, gc.BLOCK_M_CONV) == 4  # 198 rows: four splits of one 64-row block each
    assert_close(split[1], single[1], rtol=1e-5, atol=1e-6, name="grad_weight with 4 row splits")
    assert torch.equal(split[0], single[0])


@pytest.mark.parametrize("gw", [8, 24, 56])
def test_nan_in_one_group_stays_in_that_group(gw):
    # Tiles never span groups, so a NaN input reaches exactly the outputs PyTorch's grouped conv makes NaN (a tile
    # that masked across groups would compute 0 * NaN into its neighbours).
    from fastregnet.kernels.grouped_conv import grouped_conv_fwd

    torch.manual_seed(0)
    c = 3 * gw
    x = torch.randn(2, c, 6, 5)
    x[0, gw + 1, 2, 3] = float("nan")  # group 1
    x[1, 2 * gw, 0, 0] = float("inf")  # group 2
    w = torch.randn(c, gw, 3, 3) * 0.1
    bn = [torch.rand(c) + 0.5, torch.randn(c), torch.randn(c), torch.rand(c) + 0.5]
    ours = grouped_conv_fwd(x, w, None, 1, 3, False, bn=bn, eps=1e-5)
    ref = F.batch_norm(F.conv2d(x, w, padding=1, groups=3), bn[2], bn[3], bn[0], bn[1], False, 0.0, 1e-5)
    assert torch.equal(torch.isnan(ours), torch.isnan(ref))
    assert torch.isnan(ours[0, gw:2 * gw]).any() and not torch.isnan(ours[0, :gw]).any()
    finite = torch.isfinite(ref)
    assert_close(ours[finite], ref[finite], rtol=1e-4, atol=1e-5, name="finite outputs")


def test_group_aligned_tiles_do_mostly_useful_mma_work():
    # The bound: >= 70% of the issued MMA work is useful for every zoo group width >= 16 (tl.dot's N
    # minimum of 16 caps width 8 at 50%; the folded K pads it to 45%).
    from fastregnet.kernels.grouped_conv import grouped_conv_tiles, useful_mma_fraction

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for gw in ZOO_GROUP_WIDTHS:
            bn, bk, warps = grouped_conv_tiles(gw, dtype)
            frac = useful_mma_fraction(gw, bn, bk)
            assert frac >= (0.7 if gw >= 16 else 0.45), (gw, dtype, bn, bk, frac)
            assert min(bn, bk) >= 16 and warps in (4, 8)


def test_bf16_is_refused_under_the_interpreter():
    if HAS_GPU:
        pytest.skip("bf16 runs for real on a GPU")
    x = torch.randn(1, 16, 4, 4, dtype=torch.bfloat16)
    w = torch.randn(16, 8, 3, 3, dtype=torch.bfloat16)
    with pytest.raises(fastregnet.backend.BackendError, match="bf16 tl.dot is wrong under the Triton interpreter"):
        ops.grouped_conv_bias_act(x, w, torch.zeros(16), 1, 2, True)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_match_batchnorm_over_steps(momentum):
    torch.manual_seed(0)
    c, gw, stride = 48, 16, 2
    ours = ConvNormActivation(c, c, 3, stride=stride, groups=c // gw).to(DEVICE)
    ref = torch.nn.Sequential(torch.nn.Conv2d(c, c, 3, stride, 1, groups=c // gw, bias=False),
                              torch.nn.BatchNorm2d(c), torch.nn.ReLU()).to(DEVICE)
    ref.load_state_dict(ours.state_dict())
    ours[1].momentum = ref[1].momentum = momentum
    for step in range(3):
        x = torch.randn(2, c, 7, 6, device=DEVICE) * (step + 1) + step
        with fastregnet.count_kernel_launches() as launches:
            out = ours.train()(x)
        assert launches["_grouped_conv_fwd_kernel"] == 1
        assert_close(out, ref.train()(x), rtol=1e-5, atol=1e-5, name=f"step {step} output")
    for key, value in ref.state_dict().items():
        assert_close(ours.state_dict()[key].float(), value.float(), rtol=1e-5, atol=1e-6, name=key)
    x = torch.randn(2, c, 7, 6, device=DEVICE)
    assert_close(ours.eval()(x), ref.eval()(x), rtol=1e-5, atol=1e-5, name="eval after training")


def test_training_with_one_value_per_channel_is_refused():
    x = torch.randn(1, 16, 1, 1, device=DEVICE)
    w = torch.randn(16, 8, 3, 3, device=DEVICE)
    with pytest.raises(ValueError, match="more than one value per channel"):
        ops.grouped_conv_bn_act_train(x, w, torch.ones(16), torch.zeros(16), None, None, 0.0, 1e-5, 1, 2, True)


def test_opcheck_every_custom_op():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 5, 4, generator=g).to(DEVICE)
    w = torch.randn(32, 16, 3, 3, generator=g).to(DEVICE) * 0.2
    gamma, beta, bias = torch.rand(32).to(DEVICE) + 0.5, torch.randn(32).to(DEVICE), torch.randn(32).to(DEVICE)
    x, w = x.contiguous(memory_format=torch.channels_last), w.requires_grad_()
    torch.library.opcheck(torch.ops.fastregnet.grouped_conv_bias_act, (x.requires_grad_(), w, bias.requires_grad_(),
                                                                       2, 2, True))
    torch.library.opcheck(torch.ops.fastregnet.grouped_conv_bn_act_train,
                          (x, w, gamma.requires_grad_(), beta.requires_grad_(), 1e-5, 1, 2, True))
    out, y, mean, var, invstd = torch.ops.fastregnet.grouped_conv_bn_act_train(x.detach(), w.detach(), gamma.detach(),
                                                                               beta.detach(), 1e-5, 1, 2, True)
    torch.library.opcheck(torch.ops.fastregnet.grouped_conv_bwd,
                          (torch.randn_like(out), x.detach(), w.detach(), y, mean, invstd, gamma.detach(),
                           beta.detach(), 1, 2, True, True))


def test_every_tuning_candidate_computes_the_same_conv():
    # The tuning space's configurations differ only in tiling: each must give the conv (forward, train forward and
    # backward) within rounding of the heuristic's, so a tuned table or autotuning can never change the math.
    from fastregnet.kernels import tuning
    from fastregnet.kernels.grouped_conv import (grouped_conv_bwd, grouped_conv_candidates, grouped_conv_fwd,
                                                 grouped_conv_train_fwd)

    n, c, h, w, gw, stride = 2, 48, 5, 4, 24, 2
    x, weight, gamma, beta, _ = _inputs(n, c, h, w, gw)
    bn = [gamma, beta, torch.randn(c), torch.rand(c) + 0.5]
    results = []
    candidates = grouped_conv_candidates(gw, torch.float32)
    assert len(candidates) >= 2
    for config in candidates:
        with tuning.force(config, "grouped_conv"):  # the BatchNorm passes keep their own configuration
            ev = grouped_conv_fwd(x, weight, None, stride, c // gw, True, bn=bn, eps=1e-5)
            out, y, mean, _, invstd = grouped_conv_train_fwd(x, weight, gamma, beta, 1e-5, stride, c // gw, True)
            grads = grouped_conv_bwd(torch.ones_like(out), x, weight, y, mean, invstd, gamma, beta, stride, c // gw,
                                     True, True)
        results.append((ev, out, *grads[:2]))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_close(b, a, rtol=1e-5, atol=1e-5, name="candidate vs heuristic")
    with pytest.raises(ValueError, match="not a candidate"), tuning.force((16, 64, 4)):
        grouped_conv_fwd(x, weight, None, stride, c // gw, True, bn=bn, eps=1e-5)


def test_tile_selection_order(monkeypatch, tmp_path):
    # Off CUDA (and so under the interpreter) the heuristic always serves; the shipped table parses; the autotune
    # cache is read from FASTREGNET_AUTOTUNE_CACHE.
    from fastregnet.kernels import tuning
    from fastregnet.kernels.grouped_conv import grouped_conv_tiles, select_tiles

    x = torch.zeros(1, 48, 4, 4)
    monkeypatch.setenv("FASTREGNET_AUTOTUNE", "1")
    assert select_tiles(24, x) == grouped_conv_tiles(24, torch.float32)
    assert isinstance(tuning.load_table(), dict)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": 2}')
    with pytest.raises(ValueError, match="not a fastregnet tuned-config table"):
        tuning.load_table(str(bad))


@pytest.mark.parametrize("h,w,stride,dtype", [(1, 1, 1, torch.float32), (3, 3, 1, torch.float16),
                                              (7, 7, 1, torch.float32), (14, 13, 2, torch.float16),
                                              (12, 12, 1, torch.float16)])
def test_squeeze_sums_straddle_images_and_pool_to_each_image_mean(h, w, stride, dtype):
    # The eval forward writes the SE squeeze per (row block, image slot): 64-row (fp32) and 128-row (16-bit) blocks
    # over the flattened images, several images per block at small maps (1 x 1: 16-row blocks with 16 slots; 3 x 3:
    # 16 slots of 9 pixels; 7 x 7: 3 slots), and the pool must give each image's mean over its own pixels.
    from fastregnet.kernels.grouped_conv import eval_squeeze_layout, grouped_conv_fwd
    from fastregnet.kernels.squeeze_excite import se_excite

    n, c, gw = 37, 32, 16
    x, weight, gamma, beta, _ = _inputs(n, c, h, w, gw)
    bn = [gamma, beta, torch.randn(c, device=DEVICE) * 0.1, torch.rand(c, device=DEVICE) + 0.5]
    x, weight = x.to(dtype), weight.to(dtype)
    y, sq_part, rows = grouped_conv_fwd(x, weight, None, stride, c // gw, True, squeeze=True, bn=bn, eps=1e-5)
    ho, wo = y.shape[-2:]
    assert (rows, sq_part.shape[0]) == (eval_squeeze_layout(ho, wo, dtype)[0],
                                        -(-n * ho * wo // rows) * eval_squeeze_layout(ho, wo, dtype)[1])
    assert_close(y, grouped_conv_fwd(x, weight, None, stride, c // gw, True, bn=bn, eps=1e-5), rtol=0, atol=0,
                 name="squeeze changes nothing in y")
    fc = [torch.zeros(8, c, 1, 1), torch.zeros(8), torch.zeros(c, 8, 1, 1), torch.zeros(c)]
    _, pooled, _ = se_excite(sq_part, n, ho * wo, rows, *[t.to(DEVICE) for t in fc], saved=True)
    # the sums are taken from the fp32 accumulator, before y is rounded to 16 bits
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert_close(pooled, y.float().mean((2, 3)), rtol=tol, atol=tol, name="pooled")
