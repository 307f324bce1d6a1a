"""Fused 1x1 convolutions (GEMMs over NHWC rows) for the RegNet block: a, c and the projection shortcut, forward
(eval and train) and backward.

`pointwise_conv_fwd` (eval) computes, for the M = N*H*W output pixels,

    out[m, :] = act( bn((x[m, :] * gate[img(m), :]) @ W^T)  +  bn2(x2[rows2(m), :] @ W2^T)  +  shortcut[m, :] )

with every term but the first optional: the SE gate applied to the A tile as it is loaded (prologue), the projection
shortcut as a first GEMM from an input read at stride s whose bn2, rounded to the output dtype, is held in registers
and added back in the epilogue (so conv c and proj share one accumulator and one kernel), the identity shortcut added
in the epilogue, and ReLU. bn and bn2 are the eval BatchNorms as scale and shift computed in the epilogue from the
modules' live tensors (nothing is folded ahead of the launch, so nothing can go stale).

`pointwise_conv_train_fwd` runs the same GEMM (input read at stride s for the projection, gate prologue for conv c)
with the batch-statistics epilogue, then BN (+ shortcut) + ReLU through batch_norm.py. Its backward,
`pointwise_conv_bwd`, recomputes gy (the grad of the pre-BN output) on load in both GEMMs, like the grouped conv:

    grad_x[m, k]  = (sum_n gy[m, n] W[n, k]) * gate[img, k] + g_pooled[img, k] / HW     (data grad)
    grad_W[n, k]  = sum_m gy[m, n] * x[m, k] * gate[img, k]                             (weight grad)
    grad_gate[img, k] = sum_n W[n, k] * P_img[n, k],   P_img[n, k] = sum_{m in img} gy[m, n] x[m, k]

With a gate the weight-grad kernel walks whole images, accumulates P_img, and folds it into both grad_W
(= sum_img gate[img] * P_img) and grad_gate, so the SE backward (squeeze_excite.py) has the gate's grad before the
data-grad kernel runs, and the data grad's epilogue adds the squeeze's grad g_pooled / HW: the whole SE backward
costs no pass over the activation of its own.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import (WGRAD_SLAB_BYTES, cdiv, device_arch, dot_precision, grouped_launch_order, nhwc, pointer_type,
                      record, wide_offsets)
from .batch_norm import _eval_bn_affine, _grad_y, _load_channel_vectors, _store_block_stats, bn_act_apply, \
    bn_act_bwd_reduce, bn_batch_stats, bn_grad_sums
from .relu import relu
from .squeeze_excite import se_excite_bwd
from .tuning import select

__all__ = ["pointwise_conv_fwd", "pointwise_conv_train_fwd", "pointwise_conv_bwd", "pointwise_variants", "eval_tiles",
           "eval_candidates", "eval_shape_key", "select_eval_tiles", "device_arch", "train_fwd_tiles",
           "data_grad_tiles", "weight_grad_tiles", "train_candidates", "train_shape_key", "select_train_tiles",
           "TRAIN_FAMILIES"]


@triton.jit
def _source_rows(rows, HW, OW, H_in, W_in, STRIDE: tl.constexpr):
    """Input rows a 1x1 conv of stride STRIDE reads for output rows: pixel (oh * STRIDE, ow * STRIDE)."""
    if STRIDE == 1:
        return rows
    img = rows // HW
    pix = rows % HW
    return (img * H_in + (pix // OW) * STRIDE) * W_in + (pix % OW) * STRIDE


@triton.jit
def _tile_rows(X, offs_m, row0, HW, OW, H_in, W_in, K, STRIDE: tl.constexpr, WIDE_OFFSETS: tl.constexpr):
    """(pointer to the tile's first source row, each row's offset from it) for the input rows a 1x1 conv of stride
    STRIDE reads for output rows offs_m, the tile starting at row0: a 64-bit base and 32-bit offsets (64-bit with
    WIDE_OFFSETS)."""
    src = _source_rows(offs_m, HW, OW, H_in, W_in, STRIDE)
    first = _source_rows(row0, HW, OW, H_in, W_in, STRIDE)
    if WIDE_OFFSETS:
        rows = (src - first).to(tl.int64) * K
    else:
        rows = (src - first) * K
    return X + first.to(tl.int64) * K, rows


@triton.jit
def _pointwise_conv_kernel(
    X,  # input NHWC (images, H_in, W_in, K), read at stride STRIDE
    Wt,  # weight (N, K), same dtype as X
    Gate,  # (images, K) fp32 per-image input-channel gate, read when HAS_GATE
    X2,  # second input NHWC (images, H2, W2, K2), read at stride STRIDE2 when HAS_X2 (projection shortcut)
    W2t,  # weight (N, K2) for X2
    Gamma, Beta, Mean, Var,  # (N,) eval BatchNorm of the main GEMM, applied when EVAL_BN
    Gamma2, Beta2, Mean2, Var2,  # (N,) eval BatchNorm of the X2 GEMM, applied when HAS_X2
    eps, eps2,  # the two BatchNorms' eps
    Shortcut,  # (M, N) identity shortcut, added when HAS_SHORTCUT
    Y,  # output (M, N): the activation, or the pre-BN conv output when STATS
    MeanPart, M2Part,  # (row blocks, N) fp32 per-block mean and M2 of the output, written when STATS
    M, K, N,  # output rows, input channels, output channels
    HW,  # output pixels per image (H * W), to find each row's image
    OW,  # output width, to map rows to input pixels
    H_in, W_in,  # input height and width
    H2, W2, K2,  # second input height, width, channels
    STRIDE: tl.constexpr,  # stride of X (1, or 2 for a strided projection)
    HAS_GATE: tl.constexpr,  # multiply A by the per-image gate on load
    HAS_X2: tl.constexpr,  # add the projection GEMM with its own BatchNorm (eval only)
    STRIDE2: tl.constexpr,  # stride of the projection (1 or 2)
    EVAL_BN: tl.constexpr,  # apply the eval BatchNorm in the epilogue
    HAS_SHORTCUT: tl.constexpr,  # add the identity shortcut
    RELU: tl.constexpr,  # apply ReLU in the epilogue
    STATS: tl.constexpr,  # write BN partial statistics (training)
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # K step
    GROUP_M: tl.constexpr,  # row blocks per launch-order group (L2 reuse)
    CHANNEL_ALIGN: tl.constexpr,  # K, N and K2 are multiples of this (8, or 1): 16-byte vector loads for 16-bit
    WIDE_OFFSETS: tl.constexpr,  # a tile's input rows span over 2**31 elements (giant maps): 64-bit local offsets
):
    # Triton's launcher specializes channel counts divisible by 16; the zoo's 104, 440, 1512... are multiples of 8
    # only, and without the hint their loads are not vectorized (and a 128 x 128 tile needs ~250 registers, not 170)
    K = K // CHANNEL_ALIGN * CHANNEL_ALIGN
    N = N // CHANNEL_ALIGN * CHANNEL_ALIGN
    K2 = K2 // CHANNEL_ALIGN * CHANNEL_ALIGN
    pid_m, pid_n = grouped_launch_order(GROUP_M)
    # Addresses are a 64-bit base per tile plus 32-bit offsets inside it: a tile's rows lie close together, so the
    # local offsets fit in int32, where (BLOCK_M x BLOCK_N) int64 offsets cost 2 registers per element (128 x 128
    # tiles spilled with them, AOT report). The launcher sets WIDE_OFFSETS where the local span does not fit.
    row0 = pid_m * BLOCK_M
    local_m = tl.arange(0, BLOCK_M)
    offs_m = row0 + local_m
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    img = offs_m // HW
    X_tile, a_rows = _tile_rows(X, offs_m, row0, HW, OW, H_in, W_in, K, STRIDE, WIDE_OFFSETS)
    tile_off = row0.to(tl.int64) * N
    out_off = local_m[:, None] * N + offs_n[None, :]
    mask = m_ok[:, None] & n_ok[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    if HAS_X2:
        # The projection first: bn2 of it, rounded to the output dtype as the module path rounds the shortcut
        # branch, is held in registers (16 bits per value in 16-bit dtypes) while the same accumulator runs conv c.
        # This fits once the BN vectors load in a compact layout (_channel_vector): before, two fp32 accumulators or
        # one beside the rounded values spilled 560-850 B on sm_90 at 128 x 128, and the result was parked in the
        # output tile instead, one more write and read of it from L2.
        X2_tile, a2_rows = _tile_rows(X2, offs_m, row0, HW, OW, H2, W2, K2, STRIDE2, WIDE_OFFSETS)
        for k0 in range(0, K2, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            k_ok = offs_k < K2
            a = tl.load(X2_tile + a2_rows[:, None] + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            b = tl.load(W2t + offs_n[None, :] * K2 + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        scale2, shift2 = _eval_bn_affine(Gamma2, Beta2, Mean2, Var2, eps2, offs_n, n_ok)
        projection = (acc * scale2[None, :] + shift2[None, :]).to(Y.dtype.element_ty)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        a = tl.load(X_tile + a_rows[:, None] + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
        if HAS_GATE:
            g = tl.load(Gate + img[:, None] * K + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            a = (a.to(tl.float32) * g).to(X.dtype.element_ty)
        b = tl.load(Wt + offs_n[None, :] * K + offs_k[:, None], mask=n_ok[None, :] & k_ok[:, None], other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
    if EVAL_BN:
        scale, shift = _eval_bn_affine(Gamma, Beta, Mean, Var, eps, offs_n, n_ok)
        if HAS_X2:
            acc = acc * scale[None, :] + (projection.to(tl.float32) + shift[None, :])
        else:
            acc = acc * scale[None, :] + shift[None, :]
    if STATS:
        _store_block_stats(acc, Y, m_ok, n_ok, offs_n, MeanPart, M2Part, pid_m, N)
    if HAS_SHORTCUT:
        acc += tl.load(Shortcut + tile_off + out_off, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        acc = relu(acc)
    tl.store(Y + tile_off + out_off, acc.to(Y.dtype.element_ty), mask=mask)


@triton.jit
def _pointwise_conv_bwd_data_kernel(
    GO,  # grad of the op's output (MO, N) rows
    S,  # saved pre-BN output y (MO, N)
    Out,  # the op's output (MO, N), the ReLU mask when RESIDUAL
    Wt,  # weight (N, K), dtype of the activations
    Gate,  # (images, K) fp32 gate, read when HAS_GATE
    GPooled,  # (images, K) fp32 grad of the SE's pooled mean, added (/ HW) when HAS_GATE
    GX,  # out: grad of the input, (MI, K) rows
    Mean, Invstd, Gamma, Beta, DBeta, DGamma,  # (N,) fp32 BN vectors
    SampleScale,  # (images,) fp32 stochastic-depth factors on bn(y), read when DROP_PATH
    MI, K, N,  # input rows, input channels, output channels
    H, W, HO, WO,  # input and output height/width
    inv_M,  # 1 / output rows, for the BN mean terms
    inv_hw,  # 1 / (H * W): d pooled / d x
    STRIDE: tl.constexpr,  # forward stride; input pixels off the stride grid get zero grad
    RELU: tl.constexpr,  # the op applied ReLU
    RESIDUAL: tl.constexpr,  # the op added a shortcut before its ReLU
    DROP_PATH: tl.constexpr,  # bn(y) was scaled per image before the shortcut add (RESIDUAL only)
    HAS_GATE: tl.constexpr,  # the input was gated (SE)
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # rows per program: input rows at stride 1, output rows at stride 2
    BLOCK_N: tl.constexpr,  # input channels per program
    BLOCK_K: tl.constexpr,  # output channels per K step
    GROUP_M: tl.constexpr,  # row blocks per launch-order group (L2 reuse)
    CHANNEL_ALIGN: tl.constexpr,  # K and N are multiples of this (8, or 1): vector loads (as the forward's)
):
    # The gate (SE on conv c) only comes at stride 1: its pooled grad reaches every input pixel, off the grid too
    tl.static_assert(STRIDE == 1 or not HAS_GATE)
    K = K // CHANNEL_ALIGN * CHANNEL_ALIGN
    N = N // CHANNEL_ALIGN * CHANNEL_ALIGN
    pid_m, pid_n = grouped_launch_order(GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < K
    if STRIDE == 1:
        m_ok = offs_m < MI
        rows = offs_m.to(tl.int64)
        orow = rows
        img = rows // (H * W)
    else:
        # Programs walk output rows: each computes the grad of the input pixel its output row read, (2 oh, 2 ow),
        # and writes zeros to the other pixels of that 2 x 2 cell, so no MMA work is spent on the three quarters of
        # the input off the stride grid (which got masked-out zeros through the GEMM before).
        m_ok = offs_m < (MI // (H * W)) * HO * WO
        img = offs_m // (HO * WO)  # 32-bit (row counts fit): with 64-bit divisions 128 x 64 spilled 300-450 B
        hi = (offs_m // WO) % HO * STRIDE
        wi = offs_m % WO * STRIDE
        orow = offs_m.to(tl.int64)
        rows = ((img * H + hi) * W + wi).to(tl.int64)
        # the zeros first, while no accumulator is live (after the GEMM their pointers spilled 700 B)
        zeros = tl.zeros((BLOCK_M, BLOCK_N), dtype=GX.dtype.element_ty)
        for d in tl.static_range(1, STRIDE * STRIDE):
            ok = m_ok & (hi + d // STRIDE < H) & (wi + d % STRIDE < W)
            cell = rows + (d // STRIDE) * W + d % STRIDE
            tl.store(GX + cell[:, None] * K + offs_n[None, :], zeros, mask=ok[:, None] & n_ok[None, :])
    row_scale = 1.0
    if DROP_PATH:
        row_scale = tl.load(SampleScale + img, mask=m_ok, other=0.0)[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for j0 in range(0, N, BLOCK_K):
        offs_j = j0 + tl.arange(0, BLOCK_K)
        mean, invstd, gamma, beta, dbeta_m, dgamma_m = _load_channel_vectors(
            Mean, Invstd, Gamma, Beta, DBeta, DGamma, offs_j, N, inv_M, True)
        gy = _grad_y(GO, S, Out, orow[:, None] * N + offs_j[None, :], m_ok[:, None] & (offs_j < N)[None, :], mean,
                     invstd, gamma, beta, dbeta_m, dgamma_m, True, RELU, RESIDUAL, row_scale)
        b = tl.load(Wt + offs_j[:, None] * K + offs_n[None, :], mask=(offs_j < N)[:, None] & n_ok[None, :],
                    other=0.0)
        acc = tl.dot(gy.to(b.dtype), b, acc, input_precision=PRECISION)
    mask = m_ok[:, None] & n_ok[None, :]
    if HAS_GATE:
        vec_off = img[:, None] * K + offs_n[None, :]
        acc = acc * tl.load(Gate + vec_off, mask=mask, other=0.0) + tl.load(GPooled + vec_off, mask=mask,
                                                                              other=0.0) * inv_hw
    tl.store(GX + rows[:, None] * K + offs_n[None, :], acc.to(GX.dtype.element_ty), mask=mask)


@triton.jit
def _pointwise_conv_bwd_weight_kernel(
    GO, S, Out,  # as in the data-grad kernel: grad_out, saved y, output (mask when RESIDUAL), (M, N) rows
    X,  # forward input NHWC (images, H_in, W_in, K)
    Gate,  # (images, K) fp32 gate, read when HAS_GATE
    Wt,  # weight (N, K), read when HAS_GATE (for the gate's grad)
    GWPart,  # out: (SPLIT, N, K) fp32 partial weight grads
    GGatePart,  # out: (n blocks, images, K) fp32 partial gate grads, written when HAS_GATE
    Mean, Invstd, Gamma, Beta, DBeta, DGamma,  # (N,) fp32 BN vectors
    SampleScale,  # (images,) fp32 stochastic-depth factors on bn(y), read when DROP_PATH
    M, K, N,  # output rows, input channels, output channels
    HW, OW, H_in, W_in,  # output pixels per image, output width, input height/width
    inv_M,  # 1 / M
    ROWS_PER_SPLIT,  # rows each split reduces over (whole images when HAS_GATE)
    STRIDE: tl.constexpr,  # forward stride of X
    RELU: tl.constexpr,  # the op applied ReLU
    RESIDUAL: tl.constexpr,  # the op added a shortcut before its ReLU
    DROP_PATH: tl.constexpr,  # bn(y) was scaled per image before the shortcut add (RESIDUAL only)
    HAS_GATE: tl.constexpr,  # the input was gated (SE): walk whole images, write the gate's grad
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # rows per reduction step
    BLOCK_N: tl.constexpr,  # output channels per program
    BLOCK_K: tl.constexpr,  # input channels per program
    CHANNEL_ALIGN: tl.constexpr,  # K and N are multiples of this (8, or 1): vector loads (as the forward's)
):
    K = K // CHANNEL_ALIGN * CHANNEL_ALIGN
    N = N // CHANNEL_ALIGN * CHANNEL_ALIGN
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    split = tl.program_id(2)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    n_ok = offs_n < N
    k_ok = offs_k < K
    mean, invstd, gamma, beta, dbeta_m, dgamma_m = _load_channel_vectors(
        Mean, Invstd, Gamma, Beta, DBeta, DGamma, offs_n, N, inv_M, True)
    acc = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
    m_start = split * ROWS_PER_SPLIT
    m_end = tl.minimum(m_start + ROWS_PER_SPLIT, M)
    if HAS_GATE:
        for img in range(m_start // HW, m_end // HW):
            p = tl.zeros((BLOCK_N, BLOCK_K), dtype=tl.float32)
            image_scale = 1.0
            if DROP_PATH:
                image_scale = tl.load(SampleScale + img)
            for r0 in range(0, HW, BLOCK_M):
                local = r0 + tl.arange(0, BLOCK_M)
                r_ok = local < HW
                rows = local.to(tl.int64) + img * HW  # img * HW < M fits in int32
                gy = _grad_y(GO, S, Out, rows[:, None] * N + offs_n[None, :], r_ok[:, None] & n_ok[None, :], mean,
                             invstd, gamma, beta, dbeta_m, dgamma_m, True, RELU, RESIDUAL, image_scale)
                a = tl.load(X + rows[:, None] * K + offs_k[None, :], mask=r_ok[:, None] & k_ok[None, :], other=0.0)
                p = tl.dot(tl.trans(gy.to(a.dtype)), a, p, input_precision=PRECISION)
            gate_off = img * K + offs_k
            acc += p * tl.load(Gate + gate_off, mask=k_ok, other=0.0)[None, :]
            # reloaded per image (it stays in cache) rather than held in registers across the row loop
            w = tl.load(Wt + offs_n[:, None] * K + offs_k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)
            p *= w.to(tl.float32)
            tl.store(GGatePart + pid_n * (M // HW) * K + gate_off, tl.sum(p, axis=0), mask=k_ok)
    else:
        for m0 in range(m_start, m_end, BLOCK_M):
            offs_m = m0 + tl.arange(0, BLOCK_M)
            m_ok = offs_m < m_end
            rows = offs_m.to(tl.int64)
            src = _source_rows(rows, HW, OW, H_in, W_in, STRIDE)
            row_scale = 1.0
            if DROP_PATH:
                row_scale = tl.load(SampleScale + rows // HW, mask=m_ok, other=0.0)[:, None]
            gy = _grad_y(GO, S, Out, rows[:, None] * N + offs_n[None, :], m_ok[:, None] & n_ok[None, :], mean,
                         invstd, gamma, beta, dbeta_m, dgamma_m, True, RELU, RESIDUAL, row_scale)
            a = tl.load(X + src[:, None] * K + offs_k[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)
            acc = tl.dot(tl.trans(gy.to(a.dtype)), a, acc, input_precision=PRECISION)
    tl.store(GWPart + split.to(tl.int64) * N * K + offs_n[:, None] * K + offs_k[None, :], acc,
             mask=n_ok[:, None] & k_ok[None, :])


# ----------------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------------

# Launch-order grouping of row blocks for the forward and data-grad GEMMs (see _launch.grouped_launch_order): 8 row
# blocks sweep all N blocks together, so their A rows stay in L2 across the sweep.
GROUP_M = 8
# The fp32 training and backward tiles: 64 x 64 outputs, K step 32; the weight grad reduces 32 rows per step. fp32
# (IEEE dots) spills on larger tiles and on 4 warps (AOT ptxas report).
BLOCK_M, BLOCK_N, BLOCK_K = 64, 64, 32
WGRAD_BLOCK_M = 32
TRAIN_WARPS = 8


def train_fwd_tiles(out_channels: int, dtype: torch.dtype) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the training forward GEMM (statistics epilogue), the heuristic until
    a tuning sweep fills the table: the eval GEMM's 128-row 16-bit tiles, so A's rows and the weights are re-read
    half as often as at 64 x 64, and the statistics have half as many partial rows; fp32 64 x 64."""
    if dtype == torch.float32:
        return BLOCK_M, BLOCK_N, BLOCK_K, TRAIN_WARPS
    return 128, eval_block_n(out_channels, dtype), BLOCK_K, TRAIN_WARPS


def data_grad_tiles(dtype: torch.dtype, stride: int = 1, arch: int = 90,
                    gated: bool = False) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the data-grad GEMM: 128 input rows x 64 input channels in 16-bit
    (128 x 128 spilled 824-1,180 B with the SE gate's epilogue, which loads the gate and its pooled grad per element,
    AOT report), stepping K by 32, or by 16 for the stride-2 (projection) grad on sm_80, which at 32 took 255
    registers and spilled 104 B under triton 3.6 (the GPU machine's version), and for the gated grad on sm_80, which
    at 32 spilled 28 B once its loads became 16-byte vectors (CHANNEL_ALIGN); fp32 64 x 64."""
    if dtype == torch.float32:
        return BLOCK_M, BLOCK_N, BLOCK_K, TRAIN_WARPS
    return 128, 64, _data_grad_block_k(stride, arch, gated), TRAIN_WARPS


def _data_grad_block_k(stride: int, arch: int, gated: bool = False) -> int:
    return 16 if (stride != 1 or gated) and arch < 90 else BLOCK_K


def weight_grad_tiles(dtype: torch.dtype, gated: bool) -> tuple[int, int, int, int]:
    """(rows per step, BLOCK_N output channels, BLOCK_K input channels, num_warps) of the weight-grad kernel. 16-bit:
    128 x 128 fp32 accumulators, so grad_out and y are re-read by half as many K blocks and x by half as many N
    blocks as at 64 x 64; with the gate, whose per-image accumulator doubles the registers, 64 x 64 (128 x 64
    spilled 80-240 B, AOT report; 128 x 32 re-reads grad_out, y and out once per 32 input channels, and 32 x 128
    writes 4x the gate's partial grads). fp32: 64 x 64 (64 x 32 with the gate)."""
    if dtype == torch.float32:
        return WGRAD_BLOCK_M, BLOCK_N, 32 if gated else 64, TRAIN_WARPS
    return (WGRAD_BLOCK_M, 64, 64, TRAIN_WARPS) if gated else (WGRAD_BLOCK_M, 128, 128, TRAIN_WARPS)


def _train_heuristic(role: str, out_channels: int, dtype: torch.dtype, gated: bool, stride: int = 1,
                     arch: int = 90) -> tuple[int, int, int, int]:
    if role == "fwd":
        return train_fwd_tiles(out_channels, dtype)
    return data_grad_tiles(dtype, stride, arch, gated) if role == "data" else weight_grad_tiles(dtype, gated)


def train_candidates(role: str, out_channels: int, dtype: torch.dtype, gated: bool, stride: int = 1,
                     arch: int = 90) -> list[tuple[int, int, int, int]]:
    """The tuning space of a training 1x1 kernel (`role`: "fwd", "data" or "weight"): 64- and 128-wide tiles on 8
    warps, minus what the AOT report shows spilling in 16-bit (the data grad at 128 x 128, 16 B with stochastic
    depth on sm_90, and with the gate beyond 64 input channels; the weight grad at 128 x 64, 16 B on sm_80, and
    with the gate at 128 x 64 and 64 x 128), the gated weight grad at 64 x 32 on 4 warps (32 B spilled on 8), the
    stride-2 and gated data grads' 128-row tiles on sm_80 stepping K by 16 (see data_grad_tiles), the gated weight
    grad at 32 x 128 only on sm_90; fp32 has its heuristic alone."""
    heuristic = _train_heuristic(role, out_channels, dtype, gated, stride, arch)
    if dtype == torch.float32:
        return [heuristic]
    if role == "fwd":
        out = [(m, n, BLOCK_K, TRAIN_WARPS) for m in (64, 128) for n in (64, 128)]
    elif role == "data":
        out = [(m, n, _data_grad_block_k(stride, arch, gated) if m == 128 else BLOCK_K, TRAIN_WARPS)
               for m, n in ((64, 64), (128, 64)) + (() if gated else ((64, 128),))]
    elif gated:
        out = [(WGRAD_BLOCK_M, 64, 32, 4), (WGRAD_BLOCK_M, 128, 32, TRAIN_WARPS), (WGRAD_BLOCK_M, 64, 64, TRAIN_WARPS)]
        if arch >= 90:  # 32 x 128 spilled 8 B on sm_80 with 16-byte loads (CHANNEL_ALIGN)
            out.append((WGRAD_BLOCK_M, 32, 128, TRAIN_WARPS))
    else:
        out = [(WGRAD_BLOCK_M, n, k, TRAIN_WARPS) for n, k in ((64, 64), (64, 128), (128, 128))]
    return out if heuristic in out else [heuristic] + out


TRAIN_FAMILIES = {"fwd": "pointwise_train_fwd", "data": "pointwise_bwd_data", "weight": "pointwise_bwd_weight"}


def train_shape_key(in_channels: int, out_channels: int, stride: int, gated: bool) -> str:
    """A training 1x1 kernel's shape key in the tuned table (families: TRAIN_FAMILIES)."""
    return f"k={in_channels},n={out_channels},s={stride},gate={int(gated)}"


def select_train_tiles(role: str, x: torch.Tensor, out_channels: int, stride: int, gated: bool,
                       run=None) -> tuple[int, int, int, int]:
    """A training 1x1 kernel's configuration for input x: the tuned table, opt-in autotuning (`run` launches the
    kernel with a config), else the role's heuristic (kernels/tuning.py)."""
    arch = device_arch(x.device)
    return select(TRAIN_FAMILIES[role], x.dtype, train_shape_key(x.shape[1], out_channels, stride, gated),
                  train_candidates(role, out_channels, x.dtype, gated, stride, arch),
                  _train_heuristic(role, out_channels, x.dtype, gated, stride, arch), x.device, run)


# The eval kernel computes its BatchNorm(s) in the epilogue: on 4 warps the 16-bit variants reached 255 registers and
# spilled on sm_90 (AOT report); on 8 none spills.
EVAL_WARPS = 8
EVAL_BLOCK_K = 32


def eval_block_n(out_channels: int, dtype: torch.dtype) -> int:
    """Output channels per program of the eval 1x1 GEMM. 16-bit: 128, so A's rows are re-read half as often, unless
    128-wide tiles pad the channels over 20% more than 64-wide ones (64 -> 128, 160 -> 256), where the wasted MMA
    work outweighs the saved reads. fp32 keeps 64."""
    if dtype == torch.float32:
        return 64
    return 128 if cdiv(out_channels, 128) * 128 <= 1.2 * cdiv(out_channels, 64) * 64 else 64


def eval_tiles(out_channels: int, dtype: torch.dtype, projection: bool, arch: int = 80) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps) of the eval 1x1 GEMM on an sm_`arch` GPU, the heuristic until a GPU
    tuning sweep fills the table. 16-bit: 128-row blocks, so each weight tile is re-read by half as many programs (at
    64 rows, 51 of 166 inference launches of the four cost-tested models sat 1.5-2.1x above their floor on those
    re-reads; at 128 none does, modelled), on 8 warps. Conv c + projection on sm_80 steps K by 16: at 32 its gated
    variant spilled 4-28 B there (AOT report). fp32 keeps 64 x 64 tiles."""
    if dtype == torch.float32:
        return 64, 64, EVAL_BLOCK_K, EVAL_WARPS
    block_n = eval_block_n(out_channels, dtype)
    return 128, block_n, _eval_block_k(128, block_n, projection, arch), EVAL_WARPS


def _eval_block_k(block_m: int, block_n: int, projection: bool, arch: int) -> int:
    return 16 if projection and arch < 90 and block_m == block_n == 128 else EVAL_BLOCK_K


def eval_candidates(out_channels: int, dtype: torch.dtype, projection: bool,
                    arch: int = 80) -> list[tuple[int, int, int, int]]:
    """The eval 1x1 GEMM's tuning space on sm_`arch`: 64- and 128-row / -column tiles on 8 warps, K step 32 (16
    where the heuristic needs it), minus what the AOT report shows spilling (fp32 beyond 64 x 64 with IEEE dots)."""
    heuristic = eval_tiles(out_channels, dtype, projection, arch)
    if dtype == torch.float32:
        return [heuristic]
    out = [(m, n, _eval_block_k(m, n, projection, arch), EVAL_WARPS) for m in (64, 128) for n in (64, 128)]
    return out if heuristic in out else [heuristic] + out


def eval_shape_key(in_channels: int, out_channels: int, projection: bool) -> str:
    """The eval 1x1 GEMM's shape key in the tuned table (family "pointwise_eval")."""
    return f"k={in_channels},n={out_channels},proj={int(projection)}"


def select_eval_tiles(x: torch.Tensor, out_channels: int, projection: bool, run=None) -> tuple[int, int, int, int]:
    """The eval 1x1 GEMM's configuration for input x: the tuned table, opt-in autotuning (`run` launches the GEMM
    with a config), else eval_tiles (kernels/tuning.py)."""
    arch = device_arch(x.device)
    return select("pointwise_eval", x.dtype, eval_shape_key(x.shape[1], out_channels, projection),
                  eval_candidates(out_channels, x.dtype, projection, arch),
                  eval_tiles(out_channels, x.dtype, projection, arch), x.device, run)


def channel_align(*channels: int) -> int:
    """CHANNEL_ALIGN for the 1x1 kernels: 8 when every channel count is a multiple of 8 (the whole zoo), else 1."""
    return 8 if all(c % 8 == 0 for c in channels) else 1


def _check(x: torch.Tensor, weight: torch.Tensor, stride: int) -> tuple[int, int, int, int, int, int]:
    """(n, k, ho, wo, out_channels, m) of a 1x1 conv of stride `stride`."""
    if x.dim() != 4 or weight.dim() != 4 or tuple(weight.shape[1:]) != (x.shape[1], 1, 1):
        raise ValueError(f"pointwise_conv: weight {tuple(weight.shape)} does not fit input {tuple(x.shape)}")
    if weight.dtype != x.dtype:
        raise TypeError(f"pointwise_conv: input {x.dtype} and weight {weight.dtype} differ")
    if stride not in (1, 2):
        raise ValueError(f"pointwise_conv: stride must be 1 or 2, got {stride}")
    n, k, h, w = x.shape
    ho, wo = (h - 1) // stride + 1, (w - 1) // stride + 1
    return n, k, ho, wo, weight.shape[0], n * ho * wo


def _check_gate(gate: torch.Tensor | None, x: torch.Tensor, stride: int) -> None:
    if gate is not None and (tuple(gate.shape) != tuple(x.shape[:2]) or stride != 1):
        raise ValueError(f"pointwise_conv: gate {tuple(gate.shape)} must be (images, channels) = "
                         f"{tuple(x.shape[:2])}, at stride 1")


def _bn_vectors(bn, channels: int, what: str) -> tuple[torch.Tensor, ...]:
    """(gamma, beta, running_mean, running_var) of an eval BatchNorm, each (channels,) and contiguous."""
    if len(bn) != 4 or any(t.dim() != 1 or t.shape[0] != channels for t in bn):
        raise ValueError(f"pointwise_conv: {what} must be 4 vectors (gamma, beta, mean, var) of {channels} channels, "
                         f"got shapes {[tuple(t.shape) for t in bn]}")
    return tuple(t.contiguous() for t in bn)


def pointwise_conv_fwd(x: torch.Tensor, weight: torch.Tensor, bn, eps: float, relu: bool,
                       gate: torch.Tensor | None = None, shortcut: torch.Tensor | None = None,
                       x2: torch.Tensor | None = None, weight2: torch.Tensor | None = None, bn2=None,
                       eps2: float = 0.0, stride2: int = 1) -> torch.Tensor:
    """Eval 1x1 conv: act(bn((x * gate) @ W^T) + bn2(x2[::s, ::s] @ W2^T) + shortcut); NCHW-shaped channels_last
    tensors in and out, weights as (out, in, 1, 1) conv weights, bn / bn2 = (gamma, beta, running_mean,
    running_var) of eval BatchNorms, applied in the epilogue."""
    n, k, h, w, out_c, m = _check(x, weight, 1)
    _check_gate(gate, x, 1)
    bn = _bn_vectors(bn, out_c, "bn")
    x = nhwc(x)
    y = torch.empty((n, out_c, h, w), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    unused = torch.empty(1, device=x.device, dtype=x.dtype)
    if x2 is not None:
        if x2.shape[0] != n or (x2.shape[2] - 1) // stride2 + 1 != h or (x2.shape[3] - 1) // stride2 + 1 != w \
                or tuple(weight2.shape) != (out_c, x2.shape[1], 1, 1):
            raise ValueError(f"pointwise_conv: projection input {tuple(x2.shape)} / weight "
                             f"{tuple(weight2.shape)} do not fit output {tuple(y.shape)} at stride {stride2}")
        x2 = nhwc(x2)
        bn2 = _bn_vectors(bn2, out_c, "bn2")
    if shortcut is not None and tuple(shortcut.shape) != tuple(y.shape):
        raise ValueError(f"pointwise_conv: shortcut {tuple(shortcut.shape)} does not match output {tuple(y.shape)}")
    k2 = x2.shape[1] if x2 is not None else 1
    align = channel_align(k, out_c, k2)
    proj = x2 is not None  # without a projection its arguments are never read: x / weight / bn stand in
    bn2 = bn2 if proj else bn
    operands = dict(
        X=x, Wt=weight.reshape(out_c, k).contiguous(), Gate=gate.float().contiguous() if gate is not None else unused,
        X2=x2 if proj else x, W2t=weight2.reshape(out_c, -1).contiguous() if proj else weight,
        Gamma=bn[0], Beta=bn[1], Mean=bn[2], Var=bn[3], Gamma2=bn2[0], Beta2=bn2[1], Mean2=bn2[2], Var2=bn2[3],
        eps=eps, eps2=eps2 if proj else eps, Shortcut=nhwc(shortcut) if shortcut is not None else unused, Y=y,
        MeanPart=unused, M2Part=unused, M=m, K=k, N=out_c, HW=h * w, OW=w, H_in=h, W_in=w,
        H2=x2.shape[2] if proj else 1, W2=x2.shape[3] if proj else 1, K2=k2)

    def launch(config):
        block_m, block_n, block_k, warps = config
        wide = wide_offsets(block_m, h * w, h * w * k) or (
            proj and wide_offsets(block_m, h * w, x2.shape[2] * x2.shape[3] * k2))
        _pointwise_conv_kernel[(cdiv(m, block_m), cdiv(out_c, block_n))](
            **operands, STRIDE=1, HAS_GATE=gate is not None, HAS_X2=proj, STRIDE2=stride2, EVAL_BN=True,
            HAS_SHORTCUT=shortcut is not None, RELU=relu, STATS=False, PRECISION=dot_precision(x.dtype),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=GROUP_M, CHANNEL_ALIGN=align,
            WIDE_OFFSETS=wide, num_warps=warps)

    launch(select_eval_tiles(x, out_c, proj, launch))
    record(_pointwise_conv_kernel)
    return y


def pointwise_conv_train_fwd(x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                             eps: float, stride: int, relu: bool, gate: torch.Tensor | None = None,
                             shortcut: torch.Tensor | None = None, sample_scale: torch.Tensor | None = None,
                             sync=None):
    """Train 1x1 conv of stride `stride` on (x * gate), BN with batch statistics, [* sample_scale per image,]
    + shortcut, ReLU. Returns (out, y, mean, var, invstd): y the pre-BN output (saved for backward), var biased
    (fp32). The statistics are the whole batch's, dropped samples included, as timm's DropPath after the BN.
    `sync` (SyncBatchNorm, fastregnet.sync_batch_norm.RankStats) merges them with the other ranks' first."""
    n, k, ho, wo, out_c, m = _check(x, weight, stride)
    _check_gate(gate, x, stride)
    if m < 2:
        raise ValueError(f"pointwise_conv: BatchNorm needs more than one value per channel in training, got input "
                         f"{tuple(x.shape)} at stride {stride}")
    if shortcut is not None and tuple(shortcut.shape) != (n, out_c, ho, wo):
        raise ValueError(f"pointwise_conv: shortcut {tuple(shortcut.shape)} does not match output "
                         f"{(n, out_c, ho, wo)}")
    x = nhwc(x)
    y = torch.empty((n, out_c, ho, wo), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    unused = torch.empty(1, device=x.device, dtype=x.dtype)
    w2d = weight.reshape(out_c, k).contiguous()
    gate_arg = gate.float().contiguous() if gate is not None else unused

    def launch(config):
        """The GEMM with the statistics epilogue; returns (rows per block, per-block means, per-block M2)."""
        block_m, block_n, block_k, warps = config
        blocks = cdiv(m, block_m)
        mean_part = torch.empty((blocks, out_c), device=x.device, dtype=torch.float32)
        m2_part = torch.empty_like(mean_part)
        _pointwise_conv_kernel[(blocks, cdiv(out_c, block_n))](
            X=x, Wt=w2d, Gate=gate_arg, M=m, K=k, N=out_c, HW=ho * wo, OW=wo, H_in=x.shape[2], W_in=x.shape[3],
            Y=y, MeanPart=mean_part, M2Part=m2_part, eps=eps,
            # no projection, eval BN or shortcut in this mode: those arguments are never read
            X2=x, W2t=x, Gamma=unused, Beta=unused, Mean=unused, Var=unused, Gamma2=unused, Beta2=unused,
            Mean2=unused, Var2=unused, eps2=eps, Shortcut=unused, H2=1, W2=1, K2=1,
            STRIDE=stride, HAS_GATE=gate is not None, HAS_X2=False, STRIDE2=1,
            EVAL_BN=False, HAS_SHORTCUT=False, RELU=False, STATS=True, PRECISION=dot_precision(x.dtype),
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=GROUP_M, CHANNEL_ALIGN=channel_align(k, out_c),
            WIDE_OFFSETS=wide_offsets(block_m, ho * wo, x.shape[2] * x.shape[3] * k), num_warps=warps)
        return block_m, mean_part, m2_part

    rows_per_block, mean_part, m2_part = launch(select_train_tiles("fwd", x, out_c, stride, gate is not None, launch))
    record(_pointwise_conv_kernel)
    mean, var, invstd = bn_batch_stats(mean_part, m2_part, m, rows_per_block, eps, sync)
    out = bn_act_apply(y, mean, invstd, gamma, beta, relu, shortcut, sample_scale)
    return out, y, mean, var, invstd


def _weight_grad_split(m: int, hw: int, programs: int, on_gpu: bool, whole_images: bool, row_bytes: int,
                       block_m: int = WGRAD_BLOCK_M) -> int:
    """Rows per split of the weight grad: enough programs to fill a GPU (~4 waves of 132 SMs), and enough splits
    that one split's rows (`row_bytes` each, over every tensor read) fit WGRAD_SLAB_BYTES, so the K blocks' re-reads
    hit L2; each split at least 8 steps long, whole images when the gate's grad is folded per image. One split under
    the interpreter. `block_m`: the kernel's rows per step."""
    if not on_gpu:
        return m
    longest = cdiv(m, 8 * block_m)
    split = max(1, min(longest, max(cdiv(528, programs), cdiv(m * row_bytes, WGRAD_SLAB_BYTES))))
    rows = cdiv(m, split)
    return cdiv(rows, hw) * hw if whole_images else cdiv(rows, block_m) * block_m


def pointwise_conv_bwd(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, y: torch.Tensor,
                       out: torch.Tensor | None, mean: torch.Tensor, invstd: torch.Tensor, gamma: torch.Tensor,
                       beta: torch.Tensor, stride: int, relu: bool, gate: torch.Tensor | None = None,
                       se: tuple | None = None, sample_scale: torch.Tensor | None = None, sync=None):
    """Backward of pointwise_conv_train_fwd. `out` is given when the forward added a shortcut (its output is the
    ReLU mask); `se` = (pooled, hidden, fc1_weight, fc2_weight) when `gate` came from SE, whose backward then runs
    here too; sample_scale as the forward's (each kernel scales its image's gz on the BN side: no extra pass);
    with the forward's `sync`, the BN's two channel sums are all-reduced before the grads use them (the returned
    grad_gamma / grad_beta stay local, as nn.SyncBatchNorm's). Returns (grad_x, grad_weight, grad_gamma,
    grad_beta, grad_shortcut or None, SE grads or None), SE grads being (grad fc1 weight, fc1 bias, fc2 weight, fc2
    bias)."""
    n, k, ho, wo, out_c, m = _check(x, weight, stride)
    x, y, grad_out = nhwc(x), nhwc(y), nhwc(grad_out.to(x.dtype))
    residual = out is not None
    out = nhwc(out) if residual else y
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    mean, invstd, gamma, beta = (t.float().contiguous() for t in (mean, invstd, gamma, beta))
    w2d = weight.reshape(out_c, k).contiguous()
    has_gate = gate is not None
    if has_gate != (se is not None):
        raise ValueError("pointwise_conv_bwd: a gate comes from SE; pass both gate and se, or neither")
    gate = gate.float().contiguous() if has_gate else mean  # mean: a pointer the kernels never read here

    drop = sample_scale is not None
    if drop and not residual:
        raise ValueError("pointwise_conv_bwd: sample_scale comes with a shortcut (out)")
    scale = sample_scale.float().contiguous() if drop else mean  # mean: a pointer the kernels never read here
    dbeta, dgamma, g_shortcut = bn_act_bwd_reduce(grad_out, y, mean, invstd, gamma, beta, True, relu,
                                                  out if residual else None, scale if drop else None)
    dbeta_arg, dgamma_arg, inv_count = bn_grad_sums(dbeta, dgamma, m, sync)
    common = dict(RELU=relu, RESIDUAL=residual, DROP_PATH=drop, HAS_GATE=has_gate, PRECISION=dot_precision(x.dtype),
                  CHANNEL_ALIGN=channel_align(k, out_c))

    # weight grad first: with a gate it also yields the gate's grad, which the data grad's epilogue needs
    row_bytes = ((3 if residual else 2) * out_c + k) * x.element_size()  # grad_out, y (, out) and x per row

    def weight_grad(config):
        """(per-split weight grads, per-N-block gate grads or None)."""
        block_m, block_n, block_k, warps = config
        n_blocks, k_blocks = cdiv(out_c, block_n), cdiv(k, block_k)
        rows_per_split = _weight_grad_split(m, ho * wo, n_blocks * k_blocks, dev.type == "cuda", has_gate, row_bytes,
                                            block_m)
        split = cdiv(m, rows_per_split)
        gw_part = torch.empty((split, out_c, k), **f32)
        g_gate_part = torch.empty((n_blocks, n, k), **f32) if has_gate else gw_part
        _pointwise_conv_bwd_weight_kernel[(n_blocks, k_blocks, split)](
            GO=grad_out, S=y, Out=out, X=x, Gate=gate, Wt=w2d, GWPart=gw_part, GGatePart=g_gate_part, Mean=mean,
            Invstd=invstd, Gamma=gamma, Beta=beta, DBeta=dbeta_arg, DGamma=dgamma_arg, SampleScale=scale, M=m, K=k,
            N=out_c, HW=ho * wo, OW=wo, H_in=x.shape[2], W_in=x.shape[3], inv_M=inv_count,
            ROWS_PER_SPLIT=rows_per_split, STRIDE=stride,
            BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, num_warps=warps, **common)
        return gw_part, g_gate_part if has_gate else None

    gw_part, g_gate_part = weight_grad(select_train_tiles("weight", x, out_c, stride, has_gate, weight_grad))
    record(_pointwise_conv_bwd_weight_kernel)
    grad_w = gw_part.sum(0).reshape(out_c, k, 1, 1).to(weight.dtype)

    se_grads, g_pooled = None, mean  # mean: unread placeholder without a gate
    if has_gate:
        g_pooled, *se_grads = se_excite_bwd(g_gate_part, gate, *se)

    mi = x.shape[0] * x.shape[2] * x.shape[3]
    grad_x = torch.empty(x.shape, device=dev, dtype=x.dtype, memory_format=torch.channels_last)

    def data_grad(config):
        block_m, block_n, block_k, warps = config
        rows = mi if stride == 1 else m  # stride 2: programs walk the output rows (see the kernel)
        _pointwise_conv_bwd_data_kernel[(cdiv(rows, block_m), cdiv(k, block_n))](
            GO=grad_out, S=y, Out=out, Wt=w2d, Gate=gate, GPooled=g_pooled, GX=grad_x, Mean=mean, Invstd=invstd,
            Gamma=gamma, Beta=beta, DBeta=dbeta_arg, DGamma=dgamma_arg, SampleScale=scale, MI=mi, K=k, N=out_c,
            H=x.shape[2], W=x.shape[3], HO=ho, WO=wo, inv_M=inv_count, inv_hw=1.0 / (ho * wo), STRIDE=stride,
            BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_K=block_k, GROUP_M=GROUP_M, num_warps=warps, **common)

    data_grad(select_train_tiles("data", x, out_c, stride, has_gate, data_grad))
    record(_pointwise_conv_bwd_data_kernel)
    return grad_x, grad_w, dgamma, dbeta, g_shortcut, se_grads


def pointwise_variants(dtype: torch.dtype, candidates: bool = False, arch: int = 80) -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of the 1x1-conv variants the blocks launch on sm_`arch`, eval and
    train, at the zoo's channel counts (multiples of 8); candidates=True: every configuration of the eval and
    training tuning spaces (eval_candidates, train_candidates), not only the heuristic's picks."""
    ty = pointer_type(dtype)
    prec = dot_precision(dtype)
    bn_vectors = {k: "*fp32" for k in ("Gamma", "Beta", "Mean", "Var", "Gamma2", "Beta2", "Mean2", "Var2")}
    sig = {"X": ty, "Wt": ty, "Gate": "*fp32", "X2": ty, "W2t": ty, **bn_vectors, "eps": "fp32", "eps2": "fp32",
           "Shortcut": ty, "Y": ty, "MeanPart": "*fp32", "M2Part": "*fp32", "M": "i32", "K": "i32", "N": "i32",
           "HW": "i32", "OW": "i32", "H_in": "i32", "W_in": "i32", "H2": "i32", "W2": "i32", "K2": "i32"}

    def tiles(config) -> dict:
        block_m, block_n, block_k, _ = config
        return {"BLOCK_M": block_m, "BLOCK_N": block_n, "BLOCK_K": block_k}

    def fwd(config, **ce):
        base = dict(STRIDE=1, HAS_GATE=False, HAS_X2=False, STRIDE2=1, EVAL_BN=True, HAS_SHORTCUT=False, RELU=True,
                    STATS=False, PRECISION=prec, GROUP_M=GROUP_M, CHANNEL_ALIGN=8, WIDE_OFFSETS=False)
        return _pointwise_conv_kernel, sig, {**base, **ce, **tiles(config)}, config[3]

    def configs(space, heuristic) -> list[tuple]:
        """The tuning space (candidates=True) or the heuristic's pick, over out_channels that make the heuristics
        pick every BLOCK_N they can for this dtype (64 and 128)."""
        return sorted({cfg for c in (64, 128) for cfg in (space(c) if candidates else [heuristic(c)])})

    def train_configs(role: str, gated: bool, stride: int = 1) -> list[tuple]:
        return configs(lambda c: train_candidates(role, c, dtype, gated, stride, arch),
                       lambda c: _train_heuristic(role, c, dtype, gated, stride, arch))

    def eval_configs(projection: bool) -> list[tuple]:
        return configs(lambda c: eval_candidates(c, dtype, projection, arch),
                       lambda c: eval_tiles(c, dtype, projection, arch))

    out = []
    for config in eval_configs(False):
        out.append(fwd(config))  # eval conv a
        out += [fwd(config, HAS_GATE=gate, HAS_SHORTCUT=True) for gate in (False, True)]  # conv c, identity shortcut
    for config in eval_configs(True):  # conv c + projection
        out += [fwd(config, HAS_GATE=gate, HAS_X2=True, STRIDE2=s) for gate in (False, True) for s in (1, 2)]
    # train: conv a, conv c (gate or not), projection (stride 1 or 2)
    for gate, stride in ((False, 1), (True, 1), (False, 2)):
        out += [fwd(config, EVAL_BN=False, RELU=False, STATS=True, HAS_GATE=gate, STRIDE=stride)
                for config in train_configs("fwd", gate)]

    vec = {k: "*fp32" for k in ("Mean", "Invstd", "Gamma", "Beta", "DBeta", "DGamma")}
    data_sig = {"GO": ty, "S": ty, "Out": ty, "Wt": ty, "Gate": "*fp32", "GPooled": "*fp32", "GX": ty, **vec,
                "SampleScale": "*fp32", "MI": "i32", "K": "i32", "N": "i32", "H": "i32", "W": "i32", "HO": "i32",
                "WO": "i32",
                "inv_M": "fp32", "inv_hw": "fp32"}
    weight_sig = {"GO": ty, "S": ty, "Out": ty, "X": ty, "Gate": "*fp32", "Wt": ty, "GWPart": "*fp32",
                  "GGatePart": "*fp32", **vec, "SampleScale": "*fp32", "M": "i32", "K": "i32", "N": "i32",
                  "HW": "i32", "OW": "i32",
                  "H_in": "i32", "W_in": "i32", "inv_M": "fp32", "ROWS_PER_SPLIT": "i32"}
    # (stride, relu, residual, gate, drop path): conv a, projection at stride 1 / 2, conv c with and without SE,
    # with and without stochastic depth
    for stride, relu, residual, gate, drop in ((1, True, False, False, False), (1, False, False, False, False),
                                               (2, False, False, False, False), (1, True, True, False, False),
                                               (1, True, True, True, False), (1, True, True, False, True),
                                               (1, True, True, True, True)):
        ce = dict(STRIDE=stride, RELU=relu, RESIDUAL=residual, DROP_PATH=drop, HAS_GATE=gate, PRECISION=prec,
                  CHANNEL_ALIGN=8)
        out += [(_pointwise_conv_bwd_data_kernel, data_sig, {**ce, **tiles(config), "GROUP_M": GROUP_M}, config[3])
                for config in train_configs("data", gate, stride)]
        out += [(_pointwise_conv_bwd_weight_kernel, weight_sig, {**ce, **tiles(config)}, config[3])
                for config in train_configs("weight", gate)]
    return out
