"""Fused grouped 3x3 convolution (pad 1, stride 1 or 2) + BatchNorm + ReLU on NHWC tensors, forward and backward.

All kernels are implicit GEMMs over NHWC rows whose tiles are aligned to whole groups: a program owns BLOCK_M
pixels x BLOCK_N channels of ONE group (a group wider than BLOCK_N takes several programs), and its K dimension is
the group's 9 taps x GW input channels folded into one axis, k = tap * GW + ci, walked in BLOCK_K steps. Only the
last K step and the last N chunk are padded, so the MMA work issued is useful except for that padding (>= 72% for
every zoo group width >= 16, 45% at width 8, where tl.dot's minimum of 16 halves N), and a tile never mixes groups:
a NaN or Inf in one group cannot reach another group's outputs through a masked 0 * Inf. Consecutive k are
consecutive channels of one input pixel, so the activation loads are contiguous runs; the weights are laid out per
call (one small copy, nothing cached) as (groups, 9 * GW, GW) in the order the tiles read them.

Vector loads: the group width is a run-time argument (one compiled variant serves every width sharing a tile), so
the compiler cannot see that a run of consecutive k stays within one tap, nor that C and GW keep runs aligned. The
constexpr VEC (the largest power of two <= 8 dividing GW: 8 for every zoo width) tells it both (_aligned,
_tap_of), and the operand loads of all three kernels compile to 16-byte cp.async copies, software-pipelined, where
the tile gives a thread that many bytes (tests/test_aot_compile.py reads this from the PTX). Without it, widths
that are not multiples of 16 (8, 24, 40, 56, 72, 120, 168, 232, 264) issued scalar 2-byte loads.

Modes of the forward kernel:
- eval: BN applied in the epilogue from the live tensors (EVAL_BN), or a folded bias (HAS_BIAS), then ReLU.
- train: epilogue writes the pre-BN conv output y and, per (row block, channel), the block's mean and centred sum
  of squares M2 (fp32); `batch_norm.py` merges them (Chan's formula) and normalizes y + ReLU.

Backward (derivation, with z = gamma * xhat + beta, xhat = (y - mean) * invstd, out = relu(z), M = N*HO*WO):
    gz      = grad_out * (z > 0)
    dbeta   = sum_m gz,            dgamma = sum_m gz * xhat
    gy      = gamma * invstd * (gz - dbeta / M - xhat * dgamma / M)       (train; batch statistics)
    gy      = grad_out * (out > 0)                                           (eval; dbias = sum_m gy)
    grad_x  = conv_transpose(gy, W),   grad_W = correlate(x, gy)
`batch_norm.bn_act_bwd_reduce` computes the two sums; the data-grad and weight-grad kernels then recompute gy from
(grad_out, y) as they load it, instead of writing gy out and reading it back: 6 passes over memory instead of 7,
and no gy buffer. Backward saves x, W, y (pre-BN, or out in eval) and the per-channel mean/invstd: nothing else.
The data grad uses the same folded K (tap, output channel); the weight grad's tile is (k = (tap, ci), n), so one
program covers several taps and loads each gy tile once for all of them.

Reductions over rows (statistics, dbeta/dgamma, grad_W) are written per block and summed in a fixed order, so
results are deterministic (no atomics).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ._launch import (WGRAD_SLAB_BYTES, cdiv, device_arch, dot_precision, grouped_launch_order, nhwc, pointer_type,
                      record, wide_offsets)
from .batch_norm import (_eval_bn_affine, _grad_y, _load_channel_vectors, _store_block_stats, bn_act_apply,
                         bn_act_bwd_reduce, bn_batch_stats, bn_grad_sums)
from .relu import relu
from .squeeze_excite import _store_squeeze_sums, squeeze_layout, squeeze_part_rows
from .tuning import select

__all__ = ["grouped_conv_fwd", "grouped_conv_train_fwd", "grouped_conv_bwd", "grouped_conv_tiles",
           "grouped_conv_candidates", "select_tiles", "shape_key",
           "eval_block_m", "eval_squeeze_layout", "kernel_variants", "useful_mma_fraction"]


# ----------------------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------------------


@triton.jit
def _aligned(n, VEC: tl.constexpr):
    """n, a multiple of VEC, written so that the compiler knows it is one (a run-time integer is otherwise assumed
    odd unless it is a multiple of 16): the channel and group-width strides then prove VEC-element aligned runs."""
    return n // VEC * VEC


@triton.jit
def _tap_of(k, GW, VEC: tl.constexpr):
    """k // GW for folded indices k = tap * GW + c, computed from k rounded down to VEC (VEC divides GW, so the
    result is the same): the compiler then sees the tap constant over each aligned run of VEC consecutive k, and
    the loads that run addresses become VEC-wide vector / cp.async loads instead of scalar ones."""
    return (k // VEC * VEC) // GW


@triton.jit
def _tap_offsets(k, GW, VEC: tl.constexpr):
    """For folded indices k = tap * GW + c: (c, dh, dw), the channel within the group and the tap's offsets."""
    tap = _tap_of(k, GW, VEC)
    return k - tap * GW, tap // 3 - 1, tap % 3 - 1


@triton.jit
def _grouped_conv_fwd_kernel(
    X,  # input, NHWC contiguous (N, H, W, C)
    Wk,  # weight laid out (G, GW, 9 * GW): Wk[g, co, tap * GW + ci] = W[g * GW + co, ci, tap], same dtype as X
    Bias,  # bias (C,) fp32, read when HAS_BIAS (the differentiable eval op, whose caller folds BN per call)
    Gamma, Beta, Mean, Var,  # (C,) eval BatchNorm, applied when EVAL_BN (inference)
    eps,  # its eps
    Y,  # output NHWC (N, HO, WO, C): activation (eval) or pre-BN conv output (STATS)
    MeanPart,  # (num_row_blocks, C) fp32: per-block mean of the conv output, written when STATS
    M2Part,  # (num_row_blocks, C) fp32: per-block centred sum of squares, written when STATS
    SqPart,  # (row blocks * SQUEEZE_SLOTS, C) fp32: per-(row block, image slot) sums of the output, when SQUEEZE
    SQUEEZE_SLOTS,  # images a row block can touch (SQUEEZE; squeeze_layout)
    M,  # number of output pixels N*HO*WO
    H, W, C, HO, WO,  # input height/width, channels, output height/width
    GW,  # group width (channels per group)
    N_CHUNKS,  # BLOCK_N chunks per group: cdiv(GW, BLOCK_N)
    VEC: tl.constexpr,  # a power of two (<= 8) dividing GW: channel runs the loads may vectorize (_aligned)
    STRIDE: tl.constexpr,  # 1 or 2
    HAS_BIAS: tl.constexpr,  # add Bias in the epilogue
    EVAL_BN: tl.constexpr,  # apply the eval BatchNorm (scale, shift from the live tensors) in the epilogue
    RELU: tl.constexpr,  # apply ReLU in the epilogue
    STATS: tl.constexpr,  # write BN partial statistics (training)
    SQUEEZE: tl.constexpr,  # write the SE squeeze's channel sums per (row block, image slot): squeeze_layout
    PRECISION: tl.constexpr,  # tl.dot input precision: "ieee" for fp32, "tf32" (ignored) for fp16/bf16
    BLOCK_M: tl.constexpr,  # output pixels per program
    BLOCK_N: tl.constexpr,  # output channels per program (all in one group)
    BLOCK_K: tl.constexpr,  # folded (tap, input channel) indices per K step
    GROUP_M: tl.constexpr,  # row blocks per launch-order group: all groups' tiles of those rows run together
    WIDE_OFFSETS: tl.constexpr,  # a tile's input window spans over 2^31 elements: 64-bit offsets inside it
):
    C, GW = _aligned(C, VEC), _aligned(GW, VEC)
    pid_m, pid_n = grouped_launch_order(GROUP_M)
    g = pid_n // N_CHUNKS
    local_n = (pid_n % N_CHUNKS) * BLOCK_N + tl.arange(0, BLOCK_N)
    row0 = pid_m * BLOCK_M
    offs_m = row0 + tl.arange(0, BLOCK_M)
    m_ok = offs_m < M
    n_ok = local_n < GW
    offs_n = g * GW + local_n
    wo = offs_m % WO
    ho = (offs_m // WO) % HO
    # Addresses: a 64-bit base at the tile's first window plus 32-bit offsets inside the tile (a tile's rows lie
    # within a few images; WIDE_OFFSETS where that span passes 2^31 elements). Per-element int64 address math cost
    # ~2x the registers and spilled at 128-row tiles (AOT report).
    pix = ((offs_m // (WO * HO)) * H + ho * STRIDE) * W + wo * STRIDE  # each row's window's top-left input pixel
    pix0 = ((row0 // (WO * HO)) * H + (row0 // WO) % HO * STRIDE) * W + row0 % WO * STRIDE
    X_tile = X + pix0.to(tl.int64) * C + g * GW
    if WIDE_OFFSETS:
        a_rows = (pix - pix0).to(tl.int64) * C
    else:
        a_rows = (pix - pix0) * C
    K = 9 * GW
    w_group = Wk + g.to(tl.int64) * K * GW

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        ci, dh, dw = _tap_offsets(offs_k, GW, VEC)
        hi = ho[:, None] * STRIDE + dh[None, :]
        wi = wo[:, None] * STRIDE + dw[None, :]
        ok = m_ok[:, None] & k_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        a = tl.load(X_tile + a_rows[:, None] + ((dh * W + dw) * C + ci)[None, :], mask=ok, other=0.0)
        # K-major B tiles: Hopper's tf32 wgmma takes B only K-major, so an N-major fp32 tile was loaded 4 B at a time
        b = tl.load(w_group + local_n[None, :] * K + offs_k[:, None], mask=k_ok[:, None] & n_ok[None, :],
                    other=0.0)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)

    if HAS_BIAS:
        acc += tl.load(Bias + offs_n, mask=n_ok, other=0.0)[None, :]
    if EVAL_BN:
        scale, shift = _eval_bn_affine(Gamma, Beta, Mean, Var, eps, offs_n, n_ok)
        acc = acc * scale[None, :] + shift[None, :]
    if STATS:
        _store_block_stats(acc, Y, m_ok, n_ok, offs_n, MeanPart, M2Part, pid_m, C)
    if RELU:
        acc = relu(acc)
    if SQUEEZE:
        _store_squeeze_sums(acc, offs_m, m_ok, pid_m, HO * WO, SqPart, offs_n, n_ok, C, SQUEEZE_SLOTS, BLOCK_M)
    y_off = (offs_m - row0)[:, None] * C + offs_n[None, :]
    tl.store(Y + row0.to(tl.int64) * C + y_off, acc.to(Y.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _grouped_conv_bwd_data_kernel(
    GO,  # grad of the op's output, NHWC (N, HO, WO, C)
    S,  # saved tensor for gy: pre-BN y (TRAIN) or activation out (eval), NHWC (N, HO, WO, C)
    Wk,  # weight laid out (G, 9 * GW, GW): Wk[g, tap * GW + co, ci] = W[g * GW + co, ci, tap], dtype of X
    GX,  # out: grad wrt the input, NHWC (N, H, W, C)
    Mean, Invstd, Gamma, Beta, DBeta, DGamma,  # (C,) fp32, read when TRAIN
    NB,  # images
    H, W, C, HO, WO,  # input height/width, channels, output height/width
    GW,  # group width
    N_CHUNKS,  # BLOCK_N chunks per group
    BLOCKS_PER_CLASS,  # row blocks per parity class (stride 2: of the largest class, even rows and columns)
    inv_M,  # 1 / (N*HO*WO), for the BN mean terms
    VEC: tl.constexpr,  # a power of two (<= 8) dividing GW (_aligned)
    STRIDE: tl.constexpr,  # forward stride, 1 or 2
    TRAIN: tl.constexpr,  # BN with batch statistics (else eval: gy = grad_out * relu mask)
    RELU: tl.constexpr,  # the op applied ReLU
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # input pixels per program
    BLOCK_N: tl.constexpr,  # input channels per program (one group)
    BLOCK_K: tl.constexpr,  # folded (tap, output channel) indices per K step
    GROUP_M: tl.constexpr,  # row blocks per launch-order group
):
    # Stride 2 is decomposed by the parity (ph, pw) of the input pixel: output pixel (ho, wo) reads input
    # (2 ho + kh - 1, 2 wo + kw - 1), so an input row of parity ph receives only taps kh = 1 (ph = 0) or kh in {0, 2}
    # (ph = 1), and likewise for columns. Each program owns pixels of one class and folds only that class's 1, 2 or
    # 4 taps into K: no MMA work on taps that cannot contribute (stride 1 is the single class of all 9 taps).
    C, GW = _aligned(C, VEC), _aligned(GW, VEC)
    pid_m, pid_n = grouped_launch_order(GROUP_M)
    g = pid_n // N_CHUNKS
    local_n = (pid_n % N_CHUNKS) * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = local_n < GW
    cls = pid_m // BLOCKS_PER_CLASS
    ph = cls // STRIDE
    pw = cls % STRIDE
    hc = (H - ph + STRIDE - 1) // STRIDE  # rows / columns of this class
    wc = (W - pw + STRIDE - 1) // STRIDE
    local = (pid_m % BLOCKS_PER_CLASS) * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = local < NB * hc * wc
    hi = ((local // wc) % hc) * STRIDE + ph
    wi = (local % wc) * STRIDE + pw
    nb = (local // (wc * hc)).to(tl.int64)
    ntw = 3 if STRIDE == 1 else 1 + pw  # taps per kernel row / column for this class
    nth = 3 if STRIDE == 1 else 1 + ph
    # an empty class (e.g. odd rows of a 1-row map) or a block past the class's pixels runs no K steps
    K = tl.where((pid_m % BLOCKS_PER_CLASS) * BLOCK_M < NB * hc * wc, nth * ntw * GW, 0)
    w_group = Wk + g.to(tl.int64) * 9 * GW * GW

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < K
        t = _tap_of(offs_k, GW, VEC)
        co = offs_k - t * GW
        if STRIDE == 1:
            kh = t // 3
            kw = t % 3
        else:
            kh = (1 - ph) + ph * 2 * (t // ntw)
            kw = (1 - pw) + pw * 2 * (t % ntw)
        # output pixel (ho, wo) reads input (ho*S + kh - 1, wo*S + kw - 1): invert for each k's tap
        th = hi[:, None] + 1 - kh[None, :]
        tw = wi[:, None] + 1 - kw[None, :]
        ho = th // STRIDE
        wo = tw // STRIDE
        ok = m_ok[:, None] & k_ok[None, :] & (th >= 0) & (tw >= 0) & (ho < HO) & (wo < WO)
        ch = g * GW + co
        mean, invstd, gamma, beta, dbeta_m, dgamma_m = _load_channel_vectors(
            Mean, Invstd, Gamma, Beta, DBeta, DGamma, ch, C, inv_M, TRAIN)
        gy = _grad_y(GO, S, S, ((nb[:, None] * HO + ho) * WO + wo) * C + ch[None, :], ok, mean, invstd, gamma, beta,
                     dbeta_m, dgamma_m, TRAIN, RELU, False, 1.0)
        b = tl.load(w_group + ((kh * 3 + kw) * GW + co)[:, None] * GW + local_n[None, :],
                    mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = tl.dot(gy.to(b.dtype), b, acc, input_precision=PRECISION)

    x_off = ((nb * H + hi) * W + wi)[:, None] * C + (g * GW + local_n)[None, :]
    tl.store(GX + x_off, acc.to(GX.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@triton.jit
def _grouped_conv_bwd_weight_kernel(
    GO,  # grad of the op's output, NHWC (N, HO, WO, C)
    S,  # saved tensor for gy (see the data-grad kernel)
    X,  # forward input, NHWC (N, H, W, C)
    GWPart,  # out: (SPLIT, G, 9 * GW, GW) fp32 partial weight grads, [s, g, tap * GW + ci, co], one slice per split
    Mean, Invstd, Gamma, Beta, DBeta, DGamma,  # (C,) fp32, read when TRAIN
    M,  # output pixels N*HO*WO
    H, W, C, HO, WO,  # input height/width, channels, output height/width
    GW,  # group width
    N_CHUNKS,  # BLOCK_N chunks per group
    inv_M,  # 1 / M
    ROWS_PER_SPLIT,  # output rows each split reduces over (a multiple of BLOCK_M)
    SPLIT,  # number of row splits
    VEC: tl.constexpr,  # a power of two (<= 8) dividing GW (_aligned)
    STRIDE: tl.constexpr,  # forward stride
    TRAIN: tl.constexpr,  # BN with batch statistics
    RELU: tl.constexpr,  # the op applied ReLU
    PRECISION: tl.constexpr,  # tl.dot input precision
    BLOCK_M: tl.constexpr,  # rows per reduction step
    BLOCK_N: tl.constexpr,  # output channels per program (one group)
    BLOCK_K: tl.constexpr,  # folded (tap, input channel) indices per program
):
    C, GW = _aligned(C, VEC), _aligned(GW, VEC)
    g = tl.program_id(0) // N_CHUNKS
    local_n = (tl.program_id(0) % N_CHUNKS) * BLOCK_N + tl.arange(0, BLOCK_N)
    K = 9 * GW
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(2)
    n_ok = local_n < GW
    k_ok = offs_k < K
    offs_n = g * GW + local_n
    ci, dh, dw = _tap_offsets(offs_k, GW, VEC)
    mean, invstd, gamma, beta, dbeta_m, dgamma_m = _load_channel_vectors(
        Mean, Invstd, Gamma, Beta, DBeta, DGamma, offs_n, C, inv_M, TRAIN)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    m_start = split * ROWS_PER_SPLIT
    for m0 in range(m_start, tl.minimum(m_start + ROWS_PER_SPLIT, M), BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        m_ok = offs_m < M
        wo = offs_m % WO
        ho = (offs_m // WO) % HO
        nb = (offs_m // (WO * HO)).to(tl.int64)
        # the input tile is loaded as (k, m), already transposed for the dot: a tl.trans of an (m, k) load kept
        # the load out of the software pipeline (vector loads into registers instead of cp.async, sm_90 PTX)
        hi = dh[:, None] + ho[None, :] * STRIDE
        wi = dw[:, None] + wo[None, :] * STRIDE
        ok = k_ok[:, None] & m_ok[None, :] & (hi >= 0) & (hi < H) & (wi >= 0) & (wi < W)
        a_t = tl.load(X + ((nb[None, :] * H + hi) * W + wi) * C + (g * GW + ci)[:, None], mask=ok, other=0.0)
        gy = _grad_y(GO, S, S, offs_m.to(tl.int64)[:, None] * C + offs_n[None, :], m_ok[:, None] & n_ok[None, :],
                     mean, invstd, gamma, beta, dbeta_m, dgamma_m, TRAIN, RELU, False, 1.0)
        acc = tl.dot(a_t, gy.to(a_t.dtype), acc, input_precision=PRECISION)
    out = GWPart + (split.to(tl.int64) * C + g * GW) * K
    tl.store(out + offs_k[:, None] * GW + local_n[None, :], acc, mask=k_ok[:, None] & n_ok[None, :])


# ----------------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------------

_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Rows per program for the training and backward conv kernels (the eval forward: eval_block_m). 64 keeps a 64x64 fp32
# accumulator at 32 registers/thread on 4 warps; the AOT test checks every variant the zoo uses for spills on
# sm_80/sm_90. Not yet tuned on a GPU (none was lent).
BLOCK_M_CONV = 64
_TILE_SIDES = (16, 32, 64)
# Launch order: 8 row blocks at a time across every (group, N chunk), so the input rows all of a pixel block's
# groups read stay in L2 while they are read (otherwise each group's N chunks re-sweep the whole input).
GROUP_M = 8


def launch_group_m(block_m: int) -> int:
    """GROUP_M for row blocks of `block_m` rows: 512 rows a group, whatever the tile, so the input window a group
    sweeps stays in L2 (at 128-row blocks, 8 per group doubled it past half the L2 in regnet_y_16gf's last stage)."""
    return max(1, GROUP_M * BLOCK_M_CONV // block_m)


# The data grad recomputes gy for its gathered (tap, channel) tile and works out each k's tap for its parity class:
# on 64-row blocks it spilled 20-148 B on sm_80 and sm_90 (AOT report), so it runs 32-row blocks stepping K by at
# most 32: on 4 warps for 32-deep steps, on 8 for 16-deep ones (a 32 x 16 tile spilled 24 B on 4 warps on sm_90),
# except 16 x 16 tiles (group width 8), whose operands on 8 warps came to one 2-byte load per thread.
DATA_GRAD_BLOCK_M, DATA_GRAD_MAX_K = 32, 32


def data_grad_tiles(config: tuple[int, int, int]) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) of the data grad for a conv configuration (the same N tile)."""
    bn, bk = config[0], min(config[1], DATA_GRAD_MAX_K)
    return bn, bk, 4 if bk == 32 or bn == 16 else 8


def weight_grad_block_k(config: tuple[int, int, int], precision: str, arch: int) -> int:
    """BLOCK_K of the weight grad for a conv configuration: the forward's, except with fp32 IEEE dots (TF32 off)
    on 32-wide N tiles on sm_90, where 32 took 255 registers and spilled 84-96 B under triton 3.6 (the GPU
    machine's version; 16 spills 8-12 B there and under 3.8, AOT)."""
    block_n, block_k, _ = config
    return 16 if precision == "ieee" and arch >= 90 and block_n >= 32 and block_k > 16 else block_k


def channel_run(group_width: int) -> int:
    """The kernels' VEC: the largest power of two up to 8 dividing the group width (8 for every zoo width), i.e.
    the aligned channel run one vector load can cover (16 bytes in 16-bit storage, two 16-byte loads in fp32)."""
    return min(8, group_width & -group_width)


def useful_mma_fraction(group_width: int, block_n: int, block_k: int) -> float:
    """The share of the MMA work a group-aligned tile issues that is useful: N pads GW to BLOCK_N chunks, K pads
    the folded 9 * GW to BLOCK_K steps."""
    gw = group_width
    return gw / (block_n * cdiv(gw, block_n)) * (9 * gw) / (block_k * cdiv(9 * gw, block_k))


def _floor_tiles(group_width: int, dtype: torch.dtype) -> list[tuple[int, int]]:
    """(BLOCK_N, BLOCK_K) tiles from sides 16/32/64 (32 at most for fp32, whose IEEE dot holds its operands in
    registers) whose useful MMA fraction is within 85% of the best achievable, and >= 70% where that is
    achievable. 16 x 64 and 64 x 16 are left out: they spilled on sm_80 / sm_90 (AOT report)."""
    cap = 32 if dtype == torch.float32 else 64
    sides = [t for t in _TILE_SIDES if t <= cap]
    best = max(useful_mma_fraction(group_width, n, k) for n in sides for k in sides)
    floor = max(0.85 * best, min(best, 0.7))
    return [(n, k) for n in sides for k in sides
            if useful_mma_fraction(group_width, n, k) >= floor and (n, k) not in ((16, 64), (64, 16))]


@functools.cache  # a pure function of its arguments, asked on every launch
def grouped_conv_tiles(group_width: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for a group width.

    Heuristic until a GPU tuning sweep fills a table: among the tiles meeting the useful-work floor (_floor_tiles),
    take the widest N (fewer re-reads of the activation tile), then the deepest K. Every zoo group width >= 16 gets
    >= 72% useful work; width 8 gets 45% (tl.dot's N minimum is 16). 8 warps once a tile side reaches 64 or in
    fp32, where the AOT report shows 4 warps spilling."""
    bn, bk = max(_floor_tiles(group_width, dtype))
    warps = 8 if dtype == torch.float32 or max(bn, bk) == 64 else 4
    return bn, bk, warps


@functools.cache  # a pure function of its arguments, asked on every launch
def grouped_conv_candidates(group_width: int, dtype: torch.dtype) -> tuple[tuple[int, int, int], ...]:
    """The tuning space for a group width: every tile meeting the heuristic's useful-work floor on 8 warps (4 for
    16-bit 32 x 16), and the heuristic's own pick (4 warps for small 16-bit tiles: other tiles on 4 warps spilled
    in the forward or weight grad, AOT report)."""
    # 16-bit 32 x 16 tiles run 4 warps: on 8 the forward spilled 16 B at 64 registers on sm_80 (AOT report)
    out = tuple((n, k, 4 if (n, k) == (32, 16) and dtype != torch.float32 else 8)
                for n, k in _floor_tiles(group_width, dtype))
    heuristic = grouped_conv_tiles(group_width, dtype)
    return out if heuristic in out else (heuristic,) + out


def shape_key(group_width: int) -> str:
    """The grouped conv's shape key in the tuned table (family "grouped_conv")."""
    return f"gw={group_width}"


def select_tiles(group_width: int, x: torch.Tensor, run=None) -> tuple[int, int, int]:
    """(BLOCK_N, BLOCK_K, num_warps) for a grouped conv on x: the tuned table, opt-in autotuning (`run` launches the
    forward with a config), else grouped_conv_tiles (kernels/tuning.py). One configuration per (GPU, dtype, group
    width) serves the forward and both backward kernels."""
    return select("grouped_conv", x.dtype, shape_key(group_width), grouped_conv_candidates(group_width, x.dtype),
                  grouped_conv_tiles(group_width, x.dtype), x.device, run)


def _weights_for_forward(weight: torch.Tensor) -> torch.Tensor:
    """(C, GW, 3, 3) -> (G, GW, 9 * GW) with [g, co, tap * GW + ci] = W[g * GW + co, ci, tap]: the forward's B tiles,
    K-major (consecutive k contiguous). Made on every call: no copy can go stale."""
    c, gw = weight.shape[:2]
    return weight.reshape(c // gw, gw, gw, 9).permute(0, 1, 3, 2).reshape(c // gw, gw, 9 * gw).contiguous()


def _weights_for_data_grad(weight: torch.Tensor) -> torch.Tensor:
    """(C, GW, 3, 3) -> (G, 9 * GW, GW) with [g, tap * GW + co, ci] = W[g * GW + co, ci, tap]."""
    c, gw = weight.shape[:2]
    return weight.reshape(c // gw, gw, gw, 9).permute(0, 3, 1, 2).reshape(c // gw, 9 * gw, gw).contiguous()


def _check(x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> tuple[int, int, int, int, int]:
    if x.dim() != 4:
        raise ValueError(f"grouped_conv: expected a 4-D NCHW input, got shape {tuple(x.shape)}")
    n, c, h, w = x.shape
    if x.dtype not in _DTYPES or weight.dtype != x.dtype:
        raise TypeError(f"grouped_conv: input and weight must share a dtype among fp32/fp16/bf16, got {x.dtype} "
                        f"and {weight.dtype}")
    if weight.device != x.device:
        raise ValueError(f"grouped_conv: input on {x.device}, weight on {weight.device}")
    if groups < 1 or c % groups or tuple(weight.shape) != (c, c // groups, 3, 3):
        raise ValueError(f"grouped_conv: weight {tuple(weight.shape)} does not fit a 3x3 conv of {c} channels in "
                         f"{groups} groups (expected {(c, c // max(groups, 1), 3, 3)})")
    if stride not in (1, 2):
        raise ValueError(f"grouped_conv: stride must be 1 or 2, got {stride}")
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"grouped_conv: empty input {tuple(x.shape)}")
    return n, c, h, w, c // groups


def _out_hw(h: int, w: int, stride: int) -> tuple[int, int]:
    return (h - 1) // stride + 1, (w - 1) // stride + 1


def eval_block_m(dtype: torch.dtype) -> int:
    """Rows per program of the eval forward. 16-bit: 128, so each weight tile is re-read by half as many programs
    (regnet_y_16gf's f.b launches at batch 256 sat 1.6-2.2x above their floor at 64, 1.0-1.8x at 128, modelled); no
    zoo configuration spills at 128 with 32-bit offsets inside the tile (AOT report). fp32 keeps 64."""
    return BLOCK_M_CONV if dtype == torch.float32 else 128


def eval_squeeze_layout(ho: int, wo: int, dtype: torch.dtype) -> tuple[int, int]:
    """(rows per block, image slots) of the SE squeeze sums the eval forward writes (squeeze_excite.squeeze_layout)."""
    return squeeze_layout(ho * wo, eval_block_m(dtype))


def grouped_conv_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: int, groups: int,
                     relu: bool, squeeze: bool = False, bn=None, eps: float = 0.0):
    """Eval forward: relu(conv3x3(x, weight, pad 1, stride, groups) + bias), or with bn = (gamma, beta,
    running_mean, running_var) (and bias None) relu(bn(conv3x3(...))), the BatchNorm applied in the epilogue from
    those tensors. Output is channels_last.

    With squeeze=True, also the SE squeeze: returns (y, sq_part, rows_per_block) where sq_part holds the channel
    sums per (row block, image slot) (fp32, squeeze_excite.squeeze_layout), for `se_excite`."""
    n, c, h, w, gw = _check(x, weight, stride, groups)
    if bn is not None and (bias is not None or len(bn) != 4 or any(tuple(t.shape) != (c,) for t in bn)):
        raise ValueError(f"grouped_conv: bn must be 4 vectors of {c} channels, without a bias")
    ho, wo = _out_hw(h, w, stride)
    x, wk = nhwc(x), _weights_for_forward(weight)
    y = torch.empty((n, c, ho, wo), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    m = n * ho * wo
    unused = torch.empty(1, device=x.device, dtype=torch.float32)  # pointer for arguments this mode never reads
    b = bias.float().contiguous() if bias is not None else unused
    bn_vectors = tuple(t.contiguous() for t in bn) if bn is not None else (unused,) * 4
    block_m, slots = eval_squeeze_layout(ho, wo, x.dtype) if squeeze else (eval_block_m(x.dtype), 1)
    row_blocks = cdiv(m, block_m)
    sq_part = torch.empty((squeeze_part_rows(n, ho * wo, block_m), c), device=x.device, dtype=torch.float32) \
        if squeeze else unused

    def launch(config):
        bn_, bk, warps = config
        chunks = cdiv(gw, bn_)
        _grouped_conv_fwd_kernel[(row_blocks, (c // gw) * chunks)](
            X=x, Wk=wk, Bias=b, Gamma=bn_vectors[0], Beta=bn_vectors[1], Mean=bn_vectors[2], Var=bn_vectors[3],
            eps=eps, Y=y, MeanPart=unused, M2Part=unused, SqPart=sq_part, SQUEEZE_SLOTS=slots,
            M=m, H=h, W=w, C=c, HO=ho, WO=wo, GW=gw, N_CHUNKS=chunks, VEC=channel_run(gw), STRIDE=stride,
            HAS_BIAS=bias is not None, EVAL_BN=bn is not None, RELU=relu, STATS=False, SQUEEZE=squeeze,
            PRECISION=dot_precision(x.dtype), BLOCK_M=block_m, BLOCK_N=bn_, BLOCK_K=bk, GROUP_M=launch_group_m(block_m),
            WIDE_OFFSETS=wide_offsets(block_m, ho * wo, h * w * c, halo_images=1), num_warps=warps)

    launch(select_tiles(gw, x, launch))
    record(_grouped_conv_fwd_kernel)
    return (y, sq_part, block_m) if squeeze else y


def grouped_conv_train_fwd(x: torch.Tensor, weight: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                           eps: float, stride: int, groups: int, relu: bool, sync=None):
    """Train forward: conv, BN with batch statistics, ReLU. Returns (out, y, mean, var, invstd): y is the pre-BN
    conv output (saved for backward), var the biased batch variance (fp32, per channel). `sync` (SyncBatchNorm
    across ranks, fastregnet.sync_batch_norm.RankStats) merges this rank's statistics with the other ranks'
    between the epilogue's reduction and the BN apply."""
    n, c, h, w, gw = _check(x, weight, stride, groups)
    ho, wo = _out_hw(h, w, stride)
    m = n * ho * wo
    if m < 2:
        raise ValueError(f"grouped_conv: BatchNorm needs more than one value per channel in training, got input "
                         f"{tuple(x.shape)}")
    x, wk = nhwc(x), _weights_for_forward(weight)
    y = torch.empty((n, c, ho, wo), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    blocks = cdiv(m, BLOCK_M_CONV)
    mean_part = torch.empty((blocks, c), device=x.device, dtype=torch.float32)
    m2_part = torch.empty_like(mean_part)
    unused = torch.empty(1, device=x.device, dtype=torch.float32)  # Bias and SqPart: never read in this mode
    def launch(config):
        bn, bk, warps = config
        chunks = cdiv(gw, bn)
        _grouped_conv_fwd_kernel[(blocks, (c // gw) * chunks)](
            X=x, Wk=wk, Bias=unused, Gamma=unused, Beta=unused, Mean=unused, Var=unused, eps=eps,
            Y=y, MeanPart=mean_part, M2Part=m2_part, SqPart=unused, SQUEEZE_SLOTS=1,
            M=m, H=h, W=w, C=c, HO=ho, WO=wo, GW=gw, N_CHUNKS=chunks, VEC=channel_run(gw), STRIDE=stride,
            HAS_BIAS=False, EVAL_BN=False, RELU=False, STATS=True, SQUEEZE=False,
            PRECISION=dot_precision(x.dtype), BLOCK_M=BLOCK_M_CONV, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=GROUP_M,
            WIDE_OFFSETS=wide_offsets(BLOCK_M_CONV, ho * wo, h * w * c, halo_images=1), num_warps=warps)

    launch(select_tiles(gw, x, launch))
    record(_grouped_conv_fwd_kernel)
    mean, var, invstd = bn_batch_stats(mean_part, m2_part, m, BLOCK_M_CONV, eps, sync)
    out = bn_act_apply(y, mean, invstd, gamma, beta, relu)
    return out, y, mean, var, invstd


def _weight_grad_split(m: int, programs: int, on_gpu: bool, row_bytes: int) -> int:
    """Row splits for the weight grad: enough programs to fill a GPU (~4 waves of 132 SMs), and enough splits that
    one split's rows (`row_bytes` each, over every tensor read) fit WGRAD_SLAB_BYTES, so the K blocks' re-reads hit
    L2; each split still at least 8 row blocks long. Under the interpreter every program costs host time, so one
    split."""
    if not on_gpu:
        return 1
    longest = cdiv(m, 8 * BLOCK_M_CONV)
    return max(1, min(longest, max(cdiv(528, programs), cdiv(m * row_bytes, WGRAD_SLAB_BYTES))))


def grouped_conv_bwd(grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, saved: torch.Tensor,
                     mean: torch.Tensor | None, invstd: torch.Tensor | None, gamma: torch.Tensor | None,
                     beta: torch.Tensor | None, stride: int, groups: int, relu: bool, train: bool, sync=None):
    """Backward of grouped_conv_fwd (train=False; `saved` is its output) or grouped_conv_train_fwd (train=True;
    `saved` is y). Returns (grad_x, grad_weight, grad_gamma or None, grad_beta), grad_beta being the bias grad in
    eval. grad_weight is in weight's dtype, per-channel grads fp32. With the forward's `sync`, the BN's two
    channel sums are all-reduced before the data and weight grads use them (grad_gamma / grad_beta stay local)."""
    n, c, h, w, gw = _check(x, weight, stride, groups)
    ho, wo = _out_hw(h, w, stride)
    m_out = n * ho * wo
    x, weight, saved, grad_out = nhwc(x), weight.contiguous(), nhwc(saved), nhwc(grad_out.to(x.dtype))
    dev = x.device
    f32 = dict(device=dev, dtype=torch.float32)
    if train:
        mean, invstd, gamma, beta = (t.float().contiguous() for t in (mean, invstd, gamma, beta))
    else:
        mean = invstd = gamma = beta = torch.empty(1, **f32)  # unread in eval

    dbeta, dgamma, _ = bn_act_bwd_reduce(grad_out, saved, mean, invstd, gamma, beta, train, relu)
    dbeta_arg, dgamma_arg, inv_count = bn_grad_sums(dbeta, dgamma if train else dbeta, m_out, sync)

    bn, bk, warps = select_tiles(gw, x)  # the forward's configuration (tuned there when autotuning)
    chunks = cdiv(gw, bn)
    groups_x_chunks = (c // gw) * chunks
    prec = dot_precision(x.dtype)
    grad_x = torch.empty((n, c, h, w), device=dev, dtype=x.dtype, memory_format=torch.channels_last)
    per_class = data_grad_blocks_per_class(n, h, w, stride)
    _, data_bk, data_warps = data_grad_tiles((bn, bk, warps))
    _grouped_conv_bwd_data_kernel[(stride * stride * per_class, groups_x_chunks)](
        GO=grad_out, S=saved, Wk=_weights_for_data_grad(weight), GX=grad_x, Mean=mean, Invstd=invstd, Gamma=gamma,
        Beta=beta, DBeta=dbeta_arg, DGamma=dgamma_arg, NB=n, H=h, W=w, C=c, HO=ho, WO=wo, GW=gw, N_CHUNKS=chunks,
        BLOCKS_PER_CLASS=per_class, inv_M=inv_count, VEC=channel_run(gw), STRIDE=stride, TRAIN=train, RELU=relu,
        PRECISION=prec, BLOCK_M=DATA_GRAD_BLOCK_M, BLOCK_N=bn, BLOCK_K=data_bk, GROUP_M=GROUP_M, num_warps=data_warps)
    record(_grouped_conv_bwd_data_kernel)

    bk = weight_grad_block_k((bn, bk, warps), prec, device_arch(dev))
    k_blocks = cdiv(9 * gw, bk)
    row_bytes = (2 + stride * stride) * c * x.element_size()  # grad_out and saved, and the input rows per output row
    split = _weight_grad_split(m_out, groups_x_chunks * k_blocks, dev.type == "cuda", row_bytes)
    rows_per_split = cdiv(cdiv(m_out, split), BLOCK_M_CONV) * BLOCK_M_CONV
    split = cdiv(m_out, rows_per_split)
    gw_part = torch.empty((split, c // gw, 9 * gw, gw), **f32)
    _grouped_conv_bwd_weight_kernel[(groups_x_chunks, k_blocks, split)](
        GO=grad_out, S=saved, X=x, GWPart=gw_part, Mean=mean, Invstd=invstd, Gamma=gamma, Beta=beta, DBeta=dbeta_arg,
        DGamma=dgamma_arg, M=m_out, H=h, W=w, C=c, HO=ho, WO=wo, GW=gw, N_CHUNKS=chunks, inv_M=inv_count,
        ROWS_PER_SPLIT=rows_per_split, SPLIT=split, VEC=channel_run(gw), STRIDE=stride, TRAIN=train, RELU=relu,
        PRECISION=prec, BLOCK_M=BLOCK_M_CONV, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)
    record(_grouped_conv_bwd_weight_kernel)
    # (G, 9 * GW, GW) as [g, tap * GW + ci, co] back to (C, GW, 3, 3); the split partials summed in a fixed order
    grad_w = gw_part.sum(0).reshape(c // gw, 9, gw, gw).permute(0, 3, 2, 1).reshape(c, gw, 3, 3)
    return grad_x, grad_w.to(weight.dtype), dgamma, dbeta


def data_grad_blocks_per_class(n: int, h: int, w: int, stride: int) -> int:
    """Row blocks of the data grad's largest parity class (stride 2: even rows and columns; stride 1: all)."""
    return cdiv(n * cdiv(h, stride) * cdiv(w, stride), DATA_GRAD_BLOCK_M)


def kernel_variants(group_width: int, dtype: torch.dtype, stride: int, config: tuple | None = None,
                    arch: int = 90) -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of every kernel variant a conv of this group width, dtype and stride
    launches on sm_`arch` with `config` (default: the heuristic's), for ahead-of-time compilation (tests,
    bench/aot_report.py)."""
    ty = pointer_type(dtype)
    bn, bk, warps = config or grouped_conv_tiles(group_width, dtype)
    prec = dot_precision(dtype)
    out = []
    for eval_mode in (True, False):
        sig = {"X": ty, "Wk": ty, "Bias": "*fp32", "Gamma": "*fp32", "Beta": "*fp32", "Mean": "*fp32",
               "Var": "*fp32", "eps": "fp32", "Y": ty, "MeanPart": "*fp32", "M2Part": "*fp32", "SqPart": "*fp32",
               "SQUEEZE_SLOTS": "i32", "M": "i32", "H": "i32", "W": "i32", "C": "i32", "HO": "i32", "WO": "i32",
               "GW": "i32", "N_CHUNKS": "i32"}
        # eval: inference with the BN epilogue (with and without the SE squeeze), and the differentiable eval op
        # with a bias; train: the statistics epilogue
        modes = ((False, True, False), (False, True, True), (True, False, False)) if eval_mode else \
            ((False, False, False),)
        block_m = eval_block_m(dtype) if eval_mode else BLOCK_M_CONV
        for has_bias, eval_bn, squeeze in modes:
            ce = dict(VEC=channel_run(group_width), STRIDE=stride, HAS_BIAS=has_bias, EVAL_BN=eval_bn, RELU=eval_mode,
                      STATS=not eval_mode, SQUEEZE=squeeze, PRECISION=prec, BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk,
                      GROUP_M=launch_group_m(block_m), WIDE_OFFSETS=False)
            out.append((_grouped_conv_fwd_kernel, sig, ce, warps))
    vec = {k: "*fp32" for k in ("Mean", "Invstd", "Gamma", "Beta", "DBeta", "DGamma")}
    dims = {"H": "i32", "W": "i32", "C": "i32", "HO": "i32", "WO": "i32", "GW": "i32", "N_CHUNKS": "i32",
            "inv_M": "fp32"}
    for train in (False, True):
        common = dict(VEC=channel_run(group_width), STRIDE=stride, TRAIN=train, RELU=True, PRECISION=prec,
                      BLOCK_M=BLOCK_M_CONV, BLOCK_N=bn, BLOCK_K=bk)
        data_dims = {k: v for k, v in dims.items() if k != "inv_M"}
        sig = {"GO": ty, "S": ty, "Wk": ty, "GX": ty, **vec, "NB": "i32", **data_dims, "BLOCKS_PER_CLASS": "i32",
               "inv_M": "fp32"}
        _, data_bk, data_warps = data_grad_tiles((bn, bk, warps))
        out.append((_grouped_conv_bwd_data_kernel, sig, {**common, "BLOCK_M": DATA_GRAD_BLOCK_M, "BLOCK_K": data_bk,
                                                         "GROUP_M": GROUP_M}, data_warps))
        sig = {"GO": ty, "S": ty, "X": ty, "GWPart": "*fp32", **vec, "M": "i32", **dims, "ROWS_PER_SPLIT": "i32",
               "SPLIT": "i32"}
        out.append((_grouped_conv_bwd_weight_kernel, sig,
                    {**common, "BLOCK_K": weight_grad_block_k((bn, bk, warps), prec, arch)}, warps))
    return out
