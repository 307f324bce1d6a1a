"""The block's fused inference path (eval, gradients off): conv a, grouped conv b with the SE squeeze, the
excitation, and conv c with gate, shortcut or projection and ReLU, against the PyTorch block."""

import pytest
import torch

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
    se_launches = {"_se_hidden_kernel": 1, "_se_gate_kernel": 1} if se else {}
    expected = {"_pointwise_conv_kernel": 2, "_grouped_conv_fwd_kernel": 1} | se_launches
    assert launches == expected and sum(launches.values()) <= 5


# 16-bit eval 1x1 convs wider than 64 channels run 64 x 128 tiles (kernels/pointwise_conv.eval_block_n): 104 is
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
    torch.library.opcheck(torch.ops.fastregnet.se_excite, (sq, 1, 30, *[t.to(DEVICE) for t in fc]))
    gate = torch.rand(2, 16, device=DEVICE)
    wc, wp = torch.randn(24, 16, 1, 1).to(DEVICE), torch.randn(24, 16, 1, 1).to(DEVICE)
    torch.library.opcheck(torch.ops.fastregnet.pointwise_conv,
                          (y, wc, bn(24), 1e-5, True, gate, None, x, wp, bn(24), 1e-3, 1))
