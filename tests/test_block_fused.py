"""The block's fused inference path (eval, gradients off): conv a, grouped conv b with the SE squeeze, the
excitation, and conv c with gate, shortcut or projection and ReLU, against the PyTorch block."""

import pytest
import torch
import torch.nn.functional as F

import fastregnet
from conftest import BLOCKS, DEVICE, make_block, rel_err

pytestmark = pytest.mark.usefixtures("poisoned_kernel_buffers")


def _block(cin, cout, stride, gw, se, seed=0):
    return make_block(cin, cout, stride, gw, se, seed).eval()


@pytest.mark.parametrize("cin,cout,stride,gw,se", BLOCKS)
def test_fused_block_matches_pytorch_block(cin, cout, stride, gw, se):
    blk = _block(cin, cout, stride, gw, se)
    x = torch.randn(3, cin, 9, 7, device=DEVICE)  # batch 3, odd H/W
    with torch.no_grad():
        with fastregnet.use_backend("torch"):
            ref = blk(x)
        with fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as launches:
            out = blk(x)
    assert not torch.isnan(out).any()
    assert rel_err(out, ref) < 1e-5
    se_launches = {"_se_pool_kernel": 1, "_se_hidden_kernel": 1, "_se_gate_kernel": 1} if se else {}
    expected = {"_pointwise_conv_kernel": 2, "_grouped_conv_fwd_kernel": 1} | se_launches
    assert launches == expected and sum(launches.values()) <= 6


# 16-bit eval 1x1 convs wider than 64 channels run 128 x 128 tiles (kernels/pointwise_conv.eval_tiles): 104 is
# one masked tile, 208 two of them
@pytest.mark.parametrize("cin,cout,stride,gw,se", BLOCKS[:3] + [BLOCKS[4], (104, 208, 2, 8, 0.25)])
def test_fused_block_fp16_within_torch_error(cin, cout, stride, gw, se):
    blk = _block(cin, cout, stride, gw, se)
    x = torch.randn(2, cin, 8, 8, device=DEVICE)
    with torch.no_grad(), fastregnet.use_backend("torch"):
        ref64 = blk.double()(x.double())
        torch_half = blk.half()(x.half())
    with torch.no_grad(), fastregnet.use_backend("triton"):
        ours = blk.half()(x.half())
    assert rel_err(ours, ref64) <= 4 * rel_err(torch_half, ref64) + 2e-3


def test_eval_with_gradients_on_keeps_the_differentiable_path():
    blk = _block(32, 48, 2, 8, 0.25)
    x = torch.randn(2, 32, 8, 8, device=DEVICE, requires_grad=True)
    with fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as launches:
        out = blk(x)
    out.sum().backward()
    assert "_pointwise_conv_kernel" not in launches and x.grad is not None


def test_opcheck_block_ops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 6, 5, generator=g).to(DEVICE).contiguous(memory_format=torch.channels_last)
    w = torch.randn(16, 8, 3, 3, generator=g).to(DEVICE) * 0.2
    def bn(c):
        return [torch.randn(c, generator=g).to(DEVICE), torch.randn(c, generator=g).to(DEVICE),
                torch.randn(c, generator=g).to(DEVICE), torch.rand(c, generator=g).to(DEVICE) + 0.5]

    for squeeze in (False, True):
        torch.library.opcheck(torch.ops.fastregnet.grouped_conv_bn_eval, (x, w, bn(16), 1e-5, 2, 2, squeeze))
    y, sq = torch.ops.fastregnet.grouped_conv_bn_eval(x, w, bn(16), 1e-5, 1, 2, True)
    fc = [torch.randn(4, 16, 1, 1), torch.randn(4), torch.randn(16, 4, 1, 1), torch.randn(16)]
    rows = fastregnet.ops._squeeze_rows(6, 5, x.dtype)  # x: (2, 16, 6, 5), stride 1
    torch.library.opcheck(torch.ops.fastregnet.se_excite, (sq, 2, 30, rows, *[t.to(DEVICE) for t in fc]))
    gate = torch.rand(2, 16, device=DEVICE)
    wc, wp = torch.randn(24, 16, 1, 1).to(DEVICE), torch.randn(24, 16, 1, 1).to(DEVICE)
    torch.library.opcheck(torch.ops.fastregnet.pointwise_conv,
                          (y, wc, bn(24), 1e-5, True, gate, None, x, wp, bn(24), 1e-3, 1))


def _eval_1x1_reference(x, w, bn, eps, x2=None, w2=None, bn2=None, stride2=1, shortcut=None, gate=None):
    """The eval 1x1 op in float64 with PyTorch: relu(bn(conv(x * gate)) [+ bn2(conv(x2, stride2))] [+ shortcut])."""
    def norm(y, v, e):
        g, b, m, var = (t.double()[None, :, None, None] for t in v)
        return (y - m) / torch.sqrt(var + e) * g + b

    xin = x.double() * gate.double()[:, :, None, None] if gate is not None else x.double()
    y = norm(F.conv2d(xin, w.double()), bn, eps)
    if x2 is not None:
        y = y + norm(F.conv2d(x2.double(), w2.double(), stride=stride2), bn2, eps)
    if shortcut is not None:
        y = y + shortcut.double()
    return y.relu()


@pytest.mark.parametrize("k,n,proj,gate", [(16, 24, True, False), (24, 40, False, True), (13, 21, True, True)])
def test_every_eval_1x1_candidate_computes_the_same_gemm(k, n, proj, gate, monkeypatch):
    # The eval 1x1 GEMM's tuning space (64/128-row and -column tiles) in fp16, the dtype the interpreter runs of the
    # 16-bit ones: every configuration gives the op within fp16 rounding of a float64 reference, on channel counts
    # that are multiples of 8 (16-byte aligned loads, CHANNEL_ALIGN=8) or not (13, 21), and with the 64-bit
    # local-offset path forced on. A non-candidate is refused.
    from fastregnet.kernels import pointwise_conv as pc
    from fastregnet.kernels import tuning

    g = torch.Generator().manual_seed(0)

    def t(*size, scale=1.0):
        return (torch.randn(*size, generator=g) * scale).to(DEVICE)

    def bn(c):
        return [t(c).abs() + 0.5, t(c), t(c), t(c).abs() + 0.5]

    cl = dict(memory_format=torch.channels_last)
    x, w = t(3, k, 7, 6).half().contiguous(**cl), t(n, k, 1, 1, scale=k ** -0.5).half()
    bn1 = bn(n)
    extra = dict(x2=t(3, 8, 13, 11).half().contiguous(**cl), weight2=t(n, 8, 1, 1, scale=0.3).half(), bn2=bn(n),
                 eps2=1e-3, stride2=2) if proj else dict(shortcut=t(3, n, 7, 6).half().contiguous(**cl))
    gate_t = torch.rand(3, k, generator=g).to(DEVICE) if gate else None
    ref = _eval_1x1_reference(x, w, bn1, 1e-5, extra.get("x2"), extra.get("weight2"), extra.get("bn2"),
                              extra.get("stride2", 1), extra.get("shortcut"), gate_t)
    candidates = pc.eval_candidates(n, torch.float16, proj)
    assert len(candidates) >= 3 and pc.eval_tiles(n, torch.float16, proj) in candidates
    for wide in (False, True):
        if wide:
            monkeypatch.setattr(pc, "wide_offsets", lambda *a, **k: True)
        for config in candidates:
            with tuning.force(config, "pointwise_eval"):
                out = pc.pointwise_conv_fwd(x, w, bn1, 1e-5, True, gate=gate_t, **extra)
            assert rel_err(out, ref) < 2e-3, (config, wide)
    with pytest.raises(ValueError, match="not a candidate"), tuning.force((32, 64, 32, 8)):
        pc.pointwise_conv_fwd(x, w, bn1, 1e-5, True, gate=gate_t, **extra)


def test_eval_1x1_nan_in_a_bn_channel_reaches_exactly_that_channel():
    # The epilogue loads each BN vector as a (rows, C) tile, reads row 0 and sums over rows (_channel_vector): a NaN
    # in one channel's gamma (bn) or running mean (the projection's bn2) must reach every output of that channel and
    # no other, as in PyTorch.
    from fastregnet.kernels import pointwise_conv as pc

    g = torch.Generator().manual_seed(1)

    def t(*size):
        return torch.randn(*size, generator=g).to(DEVICE)

    cl = dict(memory_format=torch.channels_last)
    x, w = t(2, 16, 5, 6).half().contiguous(**cl), (t(24, 16, 1, 1) * 0.25).half()
    x2, w2 = t(2, 8, 10, 11).half().contiguous(**cl), (t(24, 8, 1, 1) * 0.3).half()
    bn1 = [t(24).abs() + 0.5, t(24), t(24), t(24).abs() + 0.5]
    bn2 = [t(24).abs() + 0.5, t(24), t(24), t(24).abs() + 0.5]
    bn1[0][3] = float("nan")
    bn2[2][17] = float("nan")
    out = pc.pointwise_conv_fwd(x, w, bn1, 1e-5, True, x2=x2, weight2=w2, bn2=bn2, eps2=1e-5, stride2=2)
    ref = _eval_1x1_reference(x, w, bn1, 1e-5, x2, w2, bn2, 2)
    assert torch.equal(torch.isnan(out), torch.isnan(ref))
    assert torch.isnan(out[:, [3, 17]]).all() and torch.isnan(out).sum() == 2 * 2 * 5 * 6
    keep = [c for c in range(24) if c not in (3, 17)]
    assert rel_err(out[:, keep], ref[:, keep]) < 2e-3
