"""Fused 1x1 convolution (a GEMM over NHWC rows) for the RegNet block's inference path, and the SE excitation.

`pointwise_conv_fwd` computes, for the M = N*H*W output pixels of an NHWC tensor,

    out[m, :] = act( (x[m, :] * gate[img(m), :]) @ W^T  +  x2[rows2(m), :] @ W2^T  +  bias  +  shortcut[m, :] )

with every term optional: the SE gate applied to the A tile as it is loaded (prologue), the projection shortcut as
extra K from a second input read at stride s (so conv c and proj are one GEMM and one output write), the identity
shortcut added in the epilogue, and ReLU. BN is folded into W / W2 / bias by the caller (eval only).

`se_excite` turns the per-(image, row block) channel sums written by the grouped conv's squeeze epilogue into the
gate: pooled = sums / HW, gate = sigmoid(fc2(relu(fc1(pooled)))), one program per image.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import record

__all__ = ["pointwise_conv_fwd", "se_excite", "pointwise_variants"]


@triton.jit
def _pointwise_conv_kernel(
    X,  # input rows, NHWC (M, K)
    Wt,  # weight (N, K), same dtype as X
    Gate,  # (images, K) fp32 per-image input-channel gate, read when HAS_GATE
    X2,  # second input NHWC (images, H2, W2, K2), read at stride STRIDE2 when HAS_X2 (projection shortcut)
    W2t,  # weight (N, K2) for X2
    Bias,  # (N,) fp32
    Shortcut,  # (M, N) identity shortcut, added when HAS_SHORTCUT
    Y,  # output (M, N)
    M, K, N,  # rows, input channels, output channels
    HW,  # output pixels per image (H * W), to find each row's image for the gate
    OW,  # output width, to map rows to X2 pixels
    H2, W2, K2,  # second input height, width, channels
    HAS_GATE: tl.constexpr,  # multiply A by the per-image gate on load
    HAS_X2: tl.constexpr,  # add the projection GEMM
    STRIDE2: tl.constexpr,  # stride of the projection (1 or 2)
    HAS_SHORTCUT: tl.constexpr,  # add the identity shortcut
    RELU: tl.constexpr,  # apply ReLU in the epilogue
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # K step
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    rows = offs_m.to(tl.int64)
    img = rows // HW
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        a = tl.load(X + rows[:, None] * K + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_GATE:
            g = tl.load(Gate + img[:, None] * K + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            a = (a.to(tl.float32) * g).to(X.dtype.element_ty)
        b = tl.load(Wt + offs_n[None, :] * K + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if HAS_X2:
        # row (img, oh, ow) of the output reads pixel (oh * STRIDE2, ow * STRIDE2) of X2
        pix = rows % HW
        rows2 = (img * H2 + (pix // OW) * STRIDE2) * W2 + (pix % OW) * STRIDE2
        for k0 in range(0, K2, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K2
            a = tl.load(X2 + rows2[:, None] * K2 + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(W2t + offs_n[None, :] * K2 + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
    acc += tl.load(Bias + offs_n, mask=n_ok, other=0.0)[None, :]
    out_off = rows[:, None] * N + offs_n[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_SHORTCUT:
        acc += tl.load(Shortcut + out_off, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        acc = tl.maximum(acc, 0.0)
    tl.store(Y + out_off, acc.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _matvec_rows(Wt, Bias, Vec, offs_r, R, K, BLOCK_K: tl.constexpr):
    """W[offs_r, :] @ vec + bias[offs_r] (fp32) for a row-major (R, K) matrix, K in BLOCK_K steps."""
    acc = tl.zeros(offs_r.shape, dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        v = tl.load(Vec + offs_k, mask=offs_k < K, other=0.0)
        w = tl.load(Wt + offs_r[:, None] * K + offs_k[None, :], mask=(offs_r[:, None] < R) & (offs_k[None, :] < K),
                    other=0.0)
        acc += tl.sum(w * v[None, :], axis=1)
    return acc + tl.load(Bias + offs_r, mask=offs_r < R, other=0.0)


@triton.jit
def _se_excite_kernel(
    SqPart,  # (images * blocks_per_image, C) fp32 channel sums of the grouped conv output, per row block
    W1, B1,  # fc1: (S, C) weight and (S,) bias, fp32
    W2, B2,  # fc2: (C, S) weight and (C,) bias, fp32
    Pooled,  # (images, C) fp32 scratch: the mean over H*W
    Hidden,  # (images, S) fp32 scratch: relu(fc1(pooled))
    Gate,  # (images, C) fp32 out: sigmoid(fc2(hidden))
    C, S,  # channels, squeeze channels
    blocks_per_image,  # row blocks per image in SqPart
    inv_hw,  # 1 / (H * W)
    BLOCK_C: tl.constexpr,  # channels per step
    BLOCK_S: tl.constexpr,  # squeeze channels per step
):
    img = tl.program_id(0)
    # 1: pooled = sum of this image's row-block sums / HW
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        total = tl.zeros((BLOCK_C,), dtype=tl.float32)
        for j in range(0, blocks_per_image):
            total += tl.load(SqPart + (img * blocks_per_image + j) * C + offs_c, mask=offs_c < C, other=0.0)
        tl.store(Pooled + img * C + offs_c, total * inv_hw, mask=offs_c < C)
    tl.debug_barrier()
    # 2: hidden = relu(W1 @ pooled + b1)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        acc = _matvec_rows(W1, B1, Pooled + img * C, offs_s, S, C, BLOCK_C)
        tl.store(Hidden + img * S + offs_s, tl.maximum(acc, 0.0), mask=offs_s < S)
    tl.debug_barrier()
    # 3: gate = sigmoid(W2 @ hidden + b2)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        acc = _matvec_rows(W2, B2, Hidden + img * S, offs_c, C, S, BLOCK_S)
        tl.store(Gate + img * C + offs_c, 1.0 / (1.0 + tl.exp(-acc)), mask=offs_c < C)


# 64x64 output tiles, K step 32. Not GPU-tuned (no GPU has been lent). From the AOT ptxas report: 16-bit storage
# is spill-free on 4 warps; fp32 (ieee dot) spills up to 324 B on 4 warps and none on 8.
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32


def _warps(dtype: torch.dtype) -> int:
    return 8 if dtype == torch.float32 else 4


def _rows(t: torch.Tensor) -> torch.Tensor:
    """An NCHW-shaped tensor as its NHWC (channels_last) storage."""
    return t.contiguous(memory_format=torch.channels_last)


def pointwise_conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, relu: bool,
                       gate: torch.Tensor | None = None, shortcut: torch.Tensor | None = None,
                       x2: torch.Tensor | None = None, weight2: torch.Tensor | None = None,
                       stride2: int = 1) -> torch.Tensor:
    """Eval 1x1 conv: act((x * gate) @ W^T + x2[::s, ::s] @ W2^T + bias + shortcut); NCHW-shaped channels_last
    tensors in and out, weights as (out, in, 1, 1) conv weights."""
    if x.dim() != 4 or tuple(weight.shape[1:]) != (x.shape[1], 1, 1):
        raise ValueError(f"pointwise_conv: weight {tuple(weight.shape)} does not fit input {tuple(x.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"pointwise_conv: input {x.dtype} and weight {weight.dtype} differ")
    n, k, h, w = x.shape
    out_c = weight.shape[0]
    x = _rows(x)
    y = torch.empty((n, out_c, h, w), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    unused = torch.empty(1, device=x.device, dtype=x.dtype)
    if x2 is not None:
        if x2.shape[0] != n or (x2.shape[2] - 1) // stride2 + 1 != h or (x2.shape[3] - 1) // stride2 + 1 != w \
                or tuple(weight2.shape) != (out_c, x2.shape[1], 1, 1):
            raise ValueError(f"pointwise_conv: projection input {tuple(x2.shape)} / weight "
                             f"{tuple(weight2.shape)} do not fit output {tuple(y.shape)} at stride {stride2}")
        x2 = _rows(x2)
    if shortcut is not None and tuple(shortcut.shape) != tuple(y.shape):
        raise ValueError(f"pointwise_conv: shortcut {tuple(shortcut.shape)} does not match output {tuple(y.shape)}")
    m = n * h * w
    grid = (triton.cdiv(m, BLOCK_M), triton.cdiv(out_c, BLOCK_N))
    _pointwise_conv_kernel[grid](
        x, weight.reshape(out_c, k).contiguous(), gate.float().contiguous() if gate is not None else unused,
        x2 if x2 is not None else x, weight2.reshape(out_c, -1).contiguous() if x2 is not None else weight,
        bias.float().contiguous(), _rows(shortcut) if shortcut is not None else unused, y,
        m, k, out_c, h * w, w, x2.shape[2] if x2 is not None else 1, x2.shape[3] if x2 is not None else 1,
        x2.shape[1] if x2 is not None else 1, HAS_GATE=gate is not None, HAS_X2=x2 is not None, STRIDE2=stride2,
        HAS_SHORTCUT=shortcut is not None, RELU=relu, PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, num_warps=_warps(x.dtype))
    record(_pointwise_conv_kernel)
    return y


def se_excite(sq_part: torch.Tensor, blocks_per_image: int, hw: int, fc1_weight: torch.Tensor,
              fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor) -> torch.Tensor:
    """(images, C) fp32 gate from per-(image, row block) channel sums of an H*W = `hw` map."""
    blocks, c = sq_part.shape
    images = blocks // blocks_per_image
    s = fc1_weight.shape[0]
    dev = sq_part.device
    f32 = dict(device=dev, dtype=torch.float32)
    pooled, hidden, gate = torch.empty((images, c), **f32), torch.empty((images, s), **f32), torch.empty((images, c),
                                                                                                        **f32)
    _se_excite_kernel[(images,)](sq_part, fc1_weight.reshape(s, c).float().contiguous(), fc1_bias.float().contiguous(),
                                 fc2_weight.reshape(c, s).float().contiguous(), fc2_bias.float().contiguous(), pooled,
                                 hidden, gate, c, s, blocks_per_image, 1.0 / hw, BLOCK_C=64, BLOCK_S=32, num_warps=4)
    record(_se_excite_kernel)
    return gate


def pointwise_variants(dtype: torch.dtype) -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of the variants the block's inference path launches."""
    ty = {torch.float32: "*fp32", torch.float16: "*fp16", torch.bfloat16: "*bf16"}[dtype]
    sig = {"X": ty, "Wt": ty, "Gate": "*fp32", "X2": ty, "W2t": ty, "Bias": "*fp32", "Shortcut": ty, "Y": ty,
           "M": "i32", "K": "i32", "N": "i32", "HW": "i32", "OW": "i32", "H2": "i32", "W2": "i32", "K2": "i32"}
    tiles = dict(PRECISION="ieee" if dtype == torch.float32 else "tf32", BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
                 BLOCK_K=BLOCK_K)
    out = [(_pointwise_conv_kernel, sig, dict(HAS_GATE=False, HAS_X2=False, STRIDE2=1, HAS_SHORTCUT=False, RELU=True,
                                              **tiles), _warps(dtype))]  # conv a
    for gate in (False, True):
        out.append((_pointwise_conv_kernel, sig, dict(HAS_GATE=gate, HAS_X2=False, STRIDE2=1, HAS_SHORTCUT=True,
                                                      RELU=True, **tiles), _warps(dtype)))  # conv c, identity shortcut
        for s in (1, 2):
            out.append((_pointwise_conv_kernel, sig, dict(HAS_GATE=gate, HAS_X2=True, STRIDE2=s, HAS_SHORTCUT=False,
                                                          RELU=True, **tiles), _warps(dtype)))  # conv c + projection
    se_sig = {"SqPart": "*fp32", "W1": "*fp32", "B1": "*fp32", "W2": "*fp32", "B2": "*fp32", "Pooled": "*fp32",
              "Hidden": "*fp32", "Gate": "*fp32", "C": "i32", "S": "i32", "blocks_per_image": "i32", "inv_hw": "fp32"}
    out.append((_se_excite_kernel, se_sig, dict(BLOCK_C=64, BLOCK_S=32), 4))
    return out
