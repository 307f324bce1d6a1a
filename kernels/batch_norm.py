"""Training-mode BatchNorm around the block's convolutions, on NHWC rows (M rows x C channels): the statistics
merge, the normalize (+ residual) + ReLU pass, the backward reduction, and the gy recomputation the conv backward
kernels inline.

Forward: the conv kernels write per-(row block, channel) mean and centred sum of squares M2 in their epilogue;
`_bn_stats_finalize_kernel` merges the blocks with Chan's parallel formula (no sum-of-squares cancellation) and
`_bn_act_apply_kernel` computes out = relu(gamma * (y - mean) * invstd + beta [+ shortcut]).

Backward (z = gamma * xhat + beta [+ shortcut], xhat = (y - mean) * invstd, out = relu(z), M rows):
    gz      = grad_out * (z > 0)            (the mask comes from the saved out when there is a shortcut)
    dbeta   = sum_m gz,            dgamma = sum_m gz * xhat,        grad_shortcut = gz
    gy      = gamma * invstd * (gz - dbeta / M - xhat * dgamma / M)
`_bn_act_bwd_reduce_kernel` computes the sums (and grad_shortcut); the conv backward kernels call `_grad_y` to
recompute gy tile by tile as they load it, so gy is never written out.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import cdiv, nhwc, pointer_type, record
from .relu import relu, relu_grad
from .tuning import select

__all__ = ["bn_batch_stats", "stats_merge_plan", "bn_update_running_stats", "bn_act_apply", "bn_act_bwd_reduce",
           "batch_norm_variants", "elementwise_candidates", "select_elementwise_tiles", "ELEMENTWISE_TILES"]


# Rows of the tile `_channel_vector` loads a vector as: with at least as many elements as the largest launch has
# threads (16 warps), Triton treats the load as expensive and keeps it in a compact layout.
VECTOR_TILE_THREADS = tl.constexpr(512)


@triton.jit
def _channel_vector(P, offs_c, c_ok, other):
    """P[offs_c] in fp32 (`other` where not c_ok), for a conv epilogue. Loaded as a (rows, C) tile whose row 0 alone
    is read, summed over rows (x + -0.0 is x, NaN and signed zero included): Triton re-derives a load of fewer
    elements than threads in its consumer's layout, the MMA accumulator's, where each thread loads and computes
    every column it holds (32 of 128 on 8 warps); four such vectors cost the 1x1 eval epilogue ~60 registers and
    spilled conv c + projection on sm_90 (AOT report). From the tile, scale and shift are computed once per column
    and converted to the accumulator's layout through shared memory."""
    ROWS: tl.constexpr = max(1, VECTOR_TILE_THREADS // offs_c.shape[0])
    row = tl.arange(0, ROWS)[:, None]
    v = tl.load(P + offs_c[None, :] + row * 0, mask=(row == 0) & c_ok[None, :], other=-0.0)
    return tl.where(c_ok, tl.sum(v.to(tl.float32), axis=0), other)


@triton.jit
def _eval_bn_affine(Gamma, Beta, Mean, Var, eps, offs_c, c_ok):
    """Eval BatchNorm as a per-channel (scale, shift) in fp32, from the module's live tensors on every launch:
    scale = gamma / sqrt(var + eps), shift = beta - mean * scale. A conv epilogue then computes
    acc * scale + shift, so no folded weight exists that could go stale."""
    gamma = _channel_vector(Gamma, offs_c, c_ok, 0.0)
    beta = _channel_vector(Beta, offs_c, c_ok, 0.0)
    mean = _channel_vector(Mean, offs_c, c_ok, 0.0)
    var = _channel_vector(Var, offs_c, c_ok, 1.0)
    scale = gamma * (1.0 / tl.sqrt(var + eps))
    return scale, beta - mean * scale


@triton.jit
def _store_block_stats(acc, Y, m_ok, n_ok, offs_n, MeanPart, M2Part, block, C):
    """A conv epilogue's share of the batch statistics: this row block's per-channel mean and centred sum of
    squares M2 over its valid rows (merged by _bn_stats_finalize_kernel). Taken from the accumulator rounded to
    Y's dtype, i.e. of the values stored, as BatchNorm over y sees them: backward recomputes xhat from the stored
    y, and its formula assumes their mean is exactly the batch mean."""
    acc = acc.to(Y.dtype.element_ty).to(tl.float32)
    valid = m_ok[:, None] & n_ok[None, :]
    count = tl.sum(m_ok.to(tl.float32), axis=0)
    mean = tl.sum(tl.where(valid, acc, 0.0), axis=0) / count
    d = tl.where(valid, acc - mean[None, :], 0.0)
    tl.store(MeanPart + block * C + offs_n, mean, mask=n_ok)
    tl.store(M2Part + block * C + offs_n, tl.sum(d * d, axis=0), mask=n_ok)


@triton.jit
def _bn_stats_finalize_kernel(
    MeanPart,  # (num_blocks, C) fp32 per-block means
    M2Part,  # (num_blocks, C) fp32 per-block centred sums of squares
    Mean,  # FINAL: (C,) fp32 out, the batch mean; else (parts, C) fp32 out, each part's mean
    Var,  # FINAL: (C,) fp32 out, the biased batch variance; else (parts, C) fp32 out, each part's M2
    Invstd,  # (C,) fp32 out: 1 / sqrt(var + eps), written when FINAL
    num_blocks,  # row blocks written by the conv kernel (or parts of a first pass)
    M,  # total rows
    ROWS_PER_BLOCK,  # rows per block; the last block may hold fewer
    C,  # channels
    eps,  # BatchNorm epsilon
    BLOCKS_PER_PART,  # blocks each program merges (its part of the column)
    FINAL: tl.constexpr,  # one part: write mean / var / invstd; else write each part's (mean, M2)
    BLOCK_R: tl.constexpr,  # blocks merged per step
    BLOCK_C: tl.constexpr,  # channels per program
):
    pid = tl.program_id(0)
    part = tl.program_id(1)
    offs_c = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    n_a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    mean_a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    m2_a = tl.zeros((BLOCK_C,), dtype=tl.float32)
    first = part * BLOCKS_PER_PART
    last = tl.minimum(first + BLOCKS_PER_PART, num_blocks)
    for r0 in range(first, last, BLOCK_R):
        offs_r = r0 + tl.arange(0, BLOCK_R)
        r_ok = offs_r < last
        cnt = tl.where(r_ok, tl.minimum(M - offs_r * ROWS_PER_BLOCK, ROWS_PER_BLOCK), 0).to(tl.float32)
        mask = r_ok[:, None] & c_ok[None, :]
        off = offs_r[:, None] * C + offs_c[None, :]
        mean_b = tl.load(MeanPart + off, mask=mask, other=0.0)
        m2_b = tl.load(M2Part + off, mask=mask, other=0.0)
        # merge this step's blocks into one (n_t, mean_t, m2_t), then into the running total (Chan et al.)
        n_t = tl.sum(cnt, axis=0)
        mean_t = tl.sum(cnt[:, None] * mean_b, axis=0) / n_t
        dev = tl.where(mask, mean_b - mean_t[None, :], 0.0)
        m2_t = tl.sum(m2_b + cnt[:, None] * dev * dev, axis=0)
        n = n_a + n_t
        delta = mean_t - mean_a
        mean_a = mean_a + delta * (n_t / n)
        m2_a = m2_a + m2_t + delta * delta * (n_a * n_t / n)
        n_a = n
    if FINAL:
        var = m2_a / n_a
        tl.store(Mean + offs_c, mean_a, mask=c_ok)
        tl.store(Var + offs_c, var, mask=c_ok)
        tl.store(Invstd + offs_c, 1.0 / tl.sqrt(var + eps), mask=c_ok)
    else:
        tl.store(Mean + part * C + offs_c, mean_a, mask=c_ok)
        tl.store(Var + part * C + offs_c, m2_a, mask=c_ok)


@triton.jit
def _running_stats_update_kernel(
    RunningMean, RunningVar,  # (C,) buffers, updated in place (their own dtype)
    Mean, Var,  # (C,) fp32 batch mean and biased batch variance
    C,  # channels
    momentum,  # nn.BatchNorm2d's momentum for this batch
    unbiased,  # count / (count - 1): the running variance takes the unbiased estimate
    BLOCK_C: tl.constexpr,  # channels per program
):
    offs_c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    rm = tl.load(RunningMean + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    rv = tl.load(RunningVar + offs_c, mask=c_ok, other=0.0).to(tl.float32)
    rm = (1.0 - momentum) * rm + momentum * tl.load(Mean + offs_c, mask=c_ok, other=0.0)
    rv = (1.0 - momentum) * rv + momentum * unbiased * tl.load(Var + offs_c, mask=c_ok, other=0.0)
    tl.store(RunningMean + offs_c, rm.to(RunningMean.dtype.element_ty), mask=c_ok)
    tl.store(RunningVar + offs_c, rv.to(RunningVar.dtype.element_ty), mask=c_ok)


@triton.jit
def _bn_act_apply_kernel(
    Y,  # pre-BN conv output, (M, C) rows
    Out,  # (M, C) out: relu(gamma * (y - mean) * invstd + beta [+ shortcut])
    Shortcut,  # (M, C) residual added before the ReLU, read when HAS_SHORTCUT
    Mean, Invstd, Gamma, Beta,  # (C,) fp32 per-channel statistics and affine parameters
    SampleScale,  # (images,) fp32 stochastic-depth factors on bn(y) (0 or 1 / keep), read when DROP_PATH
    M, C, HW,  # rows, channels, rows per image
    HAS_SHORTCUT: tl.constexpr,  # add the residual (the block's last BN: out = relu(bn(y) + shortcut))
    RELU: tl.constexpr,  # apply ReLU
    DROP_PATH: tl.constexpr,  # scale each image's bn(y) before the shortcut add (timm's drop_path)
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # channels per program
):
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    m_ok = offs_m < M
    mask = m_ok[:, None] & c_ok[None, :]
    off = offs_m.to(tl.int64)[:, None] * C + offs_c[None, :]
    scale = tl.load(Gamma + offs_c, mask=c_ok, other=0.0) * tl.load(Invstd + offs_c, mask=c_ok, other=0.0)
    shift = tl.load(Beta + offs_c, mask=c_ok, other=0.0) - tl.load(Mean + offs_c, mask=c_ok, other=0.0) * scale
    z = tl.load(Y + off, mask=mask, other=0.0).to(tl.float32) * scale[None, :] + shift[None, :]
    if DROP_PATH:
        z *= tl.load(SampleScale + offs_m // HW, mask=m_ok, other=0.0)[:, None]
    if HAS_SHORTCUT:
        z += tl.load(Shortcut + off, mask=mask, other=0.0).to(tl.float32)
    if RELU:
        z = relu(z)
    tl.store(Out + off, z.to(Out.dtype.element_ty), mask=mask)


@triton.jit
def _grad_y(GO, S, Out, off, mask, mean, invstd, gamma, beta, dbeta_m, dgamma_m, TRAIN: tl.constexpr,
            RELU: tl.constexpr, RESIDUAL: tl.constexpr, row_scale):
    """gy (fp32) for a tile: grad of the conv output, from grad_out and the saved tensor S.

    TRAIN: S is the pre-BN y; gy = gamma*invstd*(gz - dbeta/M - xhat*dgamma/M), gz = go*(z>0) (dbeta_m, dgamma_m
    are dbeta/M and dgamma/M); with RESIDUAL the ReLU mask is (Out > 0), since z also held the shortcut, and gz is
    multiplied by row_scale, each row's stochastic-depth factor ((BLOCK_M, 1), or 1.0 without drop path).
    Eval: S is the activation out; gy = go * (out > 0)."""
    go = tl.load(GO + off, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(S + off, mask=mask, other=0.0).to(tl.float32)
    if TRAIN:
        xhat = (s - mean[None, :]) * invstd[None, :]
        if RESIDUAL:
            go = relu_grad(go, tl.load(Out + off, mask=mask, other=0.0)) * row_scale
        elif RELU:
            go = relu_grad(go, xhat * gamma[None, :] + beta[None, :])
        gy = (gamma * invstd)[None, :] * (go - dbeta_m[None, :] - xhat * dgamma_m[None, :])
    else:
        gy = relu_grad(go, s) if RELU else go
    return tl.where(mask, gy, 0.0)


@triton.jit
def _load_channel_vectors(Mean, Invstd, Gamma, Beta, DBeta, DGamma, offs_c, C, inv_M, TRAIN: tl.constexpr):
    """Per-channel vectors the gy recomputation needs (zeros in eval, where they are unused)."""
    c_ok = offs_c < C
    if TRAIN:
        mean = tl.load(Mean + offs_c, mask=c_ok, other=0.0)
        invstd = tl.load(Invstd + offs_c, mask=c_ok, other=0.0)
        gamma = tl.load(Gamma + offs_c, mask=c_ok, other=0.0)
        beta = tl.load(Beta + offs_c, mask=c_ok, other=0.0)
        dbeta_m = tl.load(DBeta + offs_c, mask=c_ok, other=0.0) * inv_M
        dgamma_m = tl.load(DGamma + offs_c, mask=c_ok, other=0.0) * inv_M
    else:
        mean = tl.zeros(offs_c.shape, dtype=tl.float32)
        invstd, gamma, beta, dbeta_m, dgamma_m = mean, mean, mean, mean, mean
    return mean, invstd, gamma, beta, dbeta_m, dgamma_m


@triton.jit
def _bn_act_bwd_reduce_kernel(
    GO,  # grad of the op's output, (M, C) rows
    S,  # saved tensor: pre-BN y (TRAIN) or the activation out (eval)
    Out,  # the op's output (mask source), read when RESIDUAL
    GShortcut,  # (M, C) out: grad of the residual input (= gz), written when RESIDUAL
    Mean, Invstd, Gamma, Beta,  # (C,) fp32, read when TRAIN
    DBetaPart,  # (num_row_blocks, C) fp32 out: per-block sum of gz (the bias / beta grad)
    DGammaPart,  # (num_row_blocks, C) fp32 out: per-block sum of gz * xhat, written when TRAIN
    SampleScale,  # (images,) fp32 stochastic-depth factors the forward applied to bn(y), read when DROP_PATH
    M, C, HW,  # rows, channels, rows per image
    TRAIN: tl.constexpr,  # BN with batch statistics (else folded eval BN)
    RELU: tl.constexpr,  # the op applied ReLU
    RESIDUAL: tl.constexpr,  # the op added a shortcut before its ReLU (TRAIN only)
    DROP_PATH: tl.constexpr,  # bn(y) was scaled per image before the shortcut add (RESIDUAL only)
    BLOCK_M: tl.constexpr,  # rows per program
    BLOCK_C: tl.constexpr,  # channels per program
):
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    m_ok = offs_m < M
    mask = m_ok[:, None] & c_ok[None, :]
    off = offs_m.to(tl.int64)[:, None] * C + offs_c[None, :]
    go = tl.load(GO + off, mask=mask, other=0.0).to(tl.float32)
    s = tl.load(S + off, mask=mask, other=0.0).to(tl.float32)
    if TRAIN:
        mean = tl.load(Mean + offs_c, mask=c_ok, other=0.0)
        invstd = tl.load(Invstd + offs_c, mask=c_ok, other=0.0)
        xhat = (s - mean[None, :]) * invstd[None, :]
        if RESIDUAL:
            go = relu_grad(go, tl.load(Out + off, mask=mask, other=0.0))
            tl.store(GShortcut + off, go.to(GShortcut.dtype.element_ty), mask=mask)
            if DROP_PATH:  # the shortcut's grad is gz; the BN's is gz times the image's factor
                go *= tl.load(SampleScale + offs_m // HW, mask=m_ok, other=0.0)[:, None]
        elif RELU:
            gamma = tl.load(Gamma + offs_c, mask=c_ok, other=0.0)
            beta = tl.load(Beta + offs_c, mask=c_ok, other=0.0)
            go = relu_grad(go, xhat * gamma[None, :] + beta[None, :])
        go = tl.where(mask, go, 0.0)
        tl.store(DGammaPart + pid_m * C + offs_c, tl.sum(go * xhat, axis=0), mask=c_ok)
    elif RELU:
        go = relu_grad(go, s)
    tl.store(DBetaPart + pid_m * C + offs_c, tl.sum(tl.where(mask, go, 0.0), axis=0), mask=c_ok)


# ----------------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------------

# The normalize pass and the backward reduction run (rows x channels) tiles, memory-bound: 64 x 64 on 4 warps is the
# heuristic; the tuning space reshapes it for a GPU sweep to pick per channel count (table families bn_apply and
# bn_bwd_reduce, key c=C), at 32 elements per thread: at 64 the variants with a shortcut spilled 96-572 B, and the
# reduction's sum over rows spilled 4-72 B at 128 x 64 and 64 x 128 on 8 warps and 128 x 32 on 4 (AOT report). The
# reduction's partial rows follow the tile (cdiv(M, BLOCK_M)), so a configuration fixes its summation order: same
# configuration, same bits.
ELEMENTWISE_TILES = (64, 64, 4)


def elementwise_candidates(family: str) -> list[tuple[int, int, int]]:
    """(BLOCK_M, BLOCK_C, num_warps) of the tuning space of the normalize pass (family "bn_apply") or the backward
    reduction ("bn_bwd_reduce")."""
    if family == "bn_apply":
        return [ELEMENTWISE_TILES, (128, 64, 8), (64, 128, 8), (32, 128, 4)]
    return [ELEMENTWISE_TILES, (32, 128, 4), (128, 32, 8), (32, 64, 2)]


def select_elementwise_tiles(family: str, t: torch.Tensor, channels: int, run=None) -> tuple[int, int, int]:
    """The tuned table, opt-in autotuning (`run` launches with a config), else ELEMENTWISE_TILES (kernels/tuning.py)."""
    return select(family, t.dtype, f"c={channels}", elementwise_candidates(family), ELEMENTWISE_TILES, t.device, run)


# The statistics merge walks a column of per-block partials. One program per 64 channels walking all of them would be
# a serial chain as long as the batch (50,176 blocks in regnet_y_1_6gf's stage 1 at batch 256: 1,568 dependent
# steps); instead programs merge parts of at most MERGE_STEPS steps each, and a second pass merges the parts. The
# split depends only on the number of blocks, so results are deterministic run to run.
_MERGE_BLOCK_R, _MERGE_BLOCK_C, MERGE_STEPS = 32, 64, 16


def stats_merge_plan(blocks: int, channels: int) -> list[tuple[tuple[int, int], int, int]]:
    """The merge's passes as (grid, partial rows read, serial steps per program): one pass when the blocks fit in
    MERGE_STEPS steps, else a first pass over parts and a second over the parts' results."""
    per_part = _MERGE_BLOCK_R * MERGE_STEPS
    c_progs = cdiv(channels, _MERGE_BLOCK_C)
    if blocks <= per_part:
        return [((c_progs, 1), blocks, cdiv(blocks, _MERGE_BLOCK_R))]
    parts = cdiv(blocks, per_part)
    if parts > per_part:
        per_part = cdiv(blocks, per_part)  # a huge batch: longer parts rather than a third pass
        per_part = cdiv(per_part, _MERGE_BLOCK_R) * _MERGE_BLOCK_R
        parts = cdiv(blocks, per_part)
    return [((c_progs, parts), blocks, per_part // _MERGE_BLOCK_R),
            ((c_progs, 1), parts, cdiv(parts, _MERGE_BLOCK_R))]


def bn_batch_stats(mean_part: torch.Tensor, m2_part: torch.Tensor, m: int, rows_per_block: int, eps: float,
                   sync=None):
    """(mean, biased var, invstd), fp32 per channel, from a conv epilogue's per-row-block (mean, M2) over m rows;
    with `sync` (SyncBatchNorm, fastregnet.sync_batch_norm.RankStats) merged with the other ranks' statistics."""
    blocks, c = mean_part.shape
    f32 = dict(device=mean_part.device, dtype=torch.float32)
    mean, var, invstd = (torch.empty(c, **f32) for _ in range(3))
    plan = stats_merge_plan(blocks, c)
    if len(plan) == 2:  # first pass: each part's (mean, M2) over BLOCKS_PER_PART blocks of rows_per_block rows
        (grid, _, steps), _ = plan
        per_part = steps * _MERGE_BLOCK_R
        part_mean, part_m2 = torch.empty((grid[1], c), **f32), torch.empty((grid[1], c), **f32)
        _bn_stats_finalize_kernel[grid](
            MeanPart=mean_part, M2Part=m2_part, Mean=part_mean, Var=part_m2, Invstd=invstd, num_blocks=blocks, M=m,
            ROWS_PER_BLOCK=rows_per_block, C=c, eps=eps, BLOCKS_PER_PART=per_part, FINAL=False,
            BLOCK_R=_MERGE_BLOCK_R, BLOCK_C=_MERGE_BLOCK_C)
        record(_bn_stats_finalize_kernel)
        mean_part, m2_part, blocks, rows_per_block = part_mean, part_m2, grid[1], rows_per_block * per_part
    _bn_stats_finalize_kernel[(cdiv(c, _MERGE_BLOCK_C), 1)](
        MeanPart=mean_part, M2Part=m2_part, Mean=mean, Var=var, Invstd=invstd, num_blocks=blocks, M=m,
        ROWS_PER_BLOCK=rows_per_block, C=c, eps=eps, BLOCKS_PER_PART=blocks, FINAL=True, BLOCK_R=_MERGE_BLOCK_R,
        BLOCK_C=_MERGE_BLOCK_C)
    record(_bn_stats_finalize_kernel)
    if sync is not None:
        return sync.merge(mean, var, m, eps)
    return mean, var, invstd


def bn_grad_sums(dbeta: torch.Tensor, dgamma: torch.Tensor, count: int, sync=None):
    """(sum gz, sum gz * xhat, 1 / count) the data and weight grads normalize with: this rank's over its `count`
    values, or with the forward's `sync` every rank's (one all_reduce; the caller's dbeta / dgamma, the affine
    grads, stay local)."""
    if sync is None:
        return dbeta, dgamma, 1.0 / count
    g_dbeta, g_dgamma = sync.reduce(dbeta, dgamma)
    return g_dbeta, g_dgamma, 1.0 / sync.total


def bn_update_running_stats(running_mean: torch.Tensor, running_var: torch.Tensor, mean: torch.Tensor,
                            var: torch.Tensor, count: int, momentum: float) -> None:
    """nn.BatchNorm2d's running-statistics update, in place, in one launch (instead of five elementwise ops):
    r = (1 - momentum) * r + momentum * batch, with the unbiased variance var * n / (n - 1) for running_var."""
    c = running_mean.numel()
    _running_stats_update_kernel[(cdiv(c, 256),)](
        RunningMean=running_mean, RunningVar=running_var, Mean=mean, Var=var, C=c, momentum=momentum,
        unbiased=count / max(count - 1, 1), BLOCK_C=256)
    record(_running_stats_update_kernel)


def bn_act_apply(y: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                 relu: bool, shortcut: torch.Tensor | None = None,
                 sample_scale: torch.Tensor | None = None) -> torch.Tensor:
    """relu(gamma * (y - mean) * invstd + beta [+ shortcut]) for a channels_last (N, C, H, W) y; with
    sample_scale (N,) (stochastic depth, with a shortcut only) relu(scale[n] * bn(y) + shortcut)."""
    n, c, h, w = y.shape
    m = n * h * w
    if sample_scale is not None and (shortcut is None or tuple(sample_scale.shape) != (n,)):
        raise ValueError(f"bn_act_apply: sample_scale must be ({n},) and come with a shortcut")
    out = torch.empty_like(y, memory_format=torch.channels_last)
    operands = dict(Y=y, Out=out, Shortcut=nhwc(shortcut) if shortcut is not None else y, Mean=mean, Invstd=invstd,
                    Gamma=gamma.float().contiguous(), Beta=beta.float().contiguous(),
                    SampleScale=sample_scale.float().contiguous() if sample_scale is not None else mean,
                    M=m, C=c, HW=h * w)  # without a shortcut / stochastic depth, y / mean stand in (never read)

    def launch(config):
        block_m, block_c, warps = config
        _bn_act_apply_kernel[(cdiv(m, block_m), cdiv(c, block_c))](
            **operands, HAS_SHORTCUT=shortcut is not None, RELU=relu, DROP_PATH=sample_scale is not None,
            BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps)

    launch(select_elementwise_tiles("bn_apply", y, c, launch))
    record(_bn_act_apply_kernel)
    return out


def bn_act_bwd_reduce(grad_out: torch.Tensor, saved: torch.Tensor, mean, invstd, gamma, beta, train: bool,
                      relu: bool, out: torch.Tensor | None = None, sample_scale: torch.Tensor | None = None):
    """(dbeta, dgamma or None, grad_shortcut or None): the per-channel sums of the BN backward (fp32). With `out`
    (the op's output, TRAIN only) the op added a shortcut before its ReLU, and gz is also returned as its grad;
    sample_scale (stochastic depth, with out only) scales each image's gz on the BN side."""
    n, c, h, w = saved.shape
    m = n * h * w
    f32 = dict(device=saved.device, dtype=torch.float32)
    residual = out is not None
    g_shortcut = torch.empty_like(saved, memory_format=torch.channels_last) if residual else None
    scale = sample_scale.float().contiguous() if sample_scale is not None else mean

    def launch(config):
        """(per-row-block dbeta partials, dgamma partials or None)."""
        block_m, block_c, warps = config
        blocks = cdiv(m, block_m)
        dbeta_part = torch.empty((blocks, c), **f32)
        dgamma_part = torch.empty((blocks, c), **f32) if train else dbeta_part
        _bn_act_bwd_reduce_kernel[(blocks, cdiv(c, block_c))](
            GO=grad_out, S=saved, Out=out if residual else saved, GShortcut=g_shortcut if residual else saved,
            Mean=mean, Invstd=invstd, Gamma=gamma, Beta=beta, DBetaPart=dbeta_part, DGammaPart=dgamma_part,
            SampleScale=scale, M=m, C=c, HW=h * w, TRAIN=train, RELU=relu, RESIDUAL=residual,
            DROP_PATH=sample_scale is not None, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=warps)
        return dbeta_part, dgamma_part if train else None

    dbeta_part, dgamma_part = launch(select_elementwise_tiles("bn_bwd_reduce", saved, c, launch))
    record(_bn_act_bwd_reduce_kernel)
    return dbeta_part.sum(0), dgamma_part.sum(0) if train else None, g_shortcut


def batch_norm_variants(dtype: torch.dtype, candidates: bool = False) -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of the BatchNorm kernels the blocks launch for a storage dtype;
    candidates=True: every configuration of the elementwise tuning space (elementwise_candidates)."""
    ty = pointer_type(dtype)
    vec4 = {"Mean": "*fp32", "Invstd": "*fp32", "Gamma": "*fp32", "Beta": "*fp32"}
    apply_configs = elementwise_candidates("bn_apply") if candidates else [ELEMENTWISE_TILES]
    reduce_configs = elementwise_candidates("bn_bwd_reduce") if candidates else [ELEMENTWISE_TILES]
    merge_sig = {"MeanPart": "*fp32", "M2Part": "*fp32", "Mean": "*fp32", "Var": "*fp32", "Invstd": "*fp32",
                 "num_blocks": "i32", "M": "i32", "ROWS_PER_BLOCK": "i32", "C": "i32", "eps": "fp32",
                 "BLOCKS_PER_PART": "i32"}
    out = [(_bn_stats_finalize_kernel, merge_sig, dict(FINAL=final, BLOCK_R=_MERGE_BLOCK_R, BLOCK_C=_MERGE_BLOCK_C),
            4) for final in (True, False)]
    out.append((_running_stats_update_kernel, {"RunningMean": ty, "RunningVar": ty, "Mean": "*fp32", "Var": "*fp32",
                                                "C": "i32", "momentum": "fp32", "unbiased": "fp32"},
                dict(BLOCK_C=256), 4))
    apply_sig = {"Y": ty, "Out": ty, "Shortcut": ty, **vec4, "SampleScale": "*fp32", "M": "i32", "C": "i32",
                 "HW": "i32"}
    # a/b, proj, c + residual, c + residual + drop path
    for shortcut, relu, drop in ((False, True, False), (False, False, False), (True, True, False), (True, True, True)):
        out += [(_bn_act_apply_kernel, apply_sig, dict(HAS_SHORTCUT=shortcut, RELU=relu, DROP_PATH=drop, BLOCK_M=bm,
                                                       BLOCK_C=bc), warps) for bm, bc, warps in apply_configs]
    reduce_sig = {"GO": ty, "S": ty, "Out": ty, "GShortcut": ty, **vec4, "DBetaPart": "*fp32", "DGammaPart": "*fp32",
                  "SampleScale": "*fp32", "M": "i32", "C": "i32", "HW": "i32"}
    for train, relu, residual, drop in ((False, True, False, False), (True, True, False, False),
                                        (True, False, False, False), (True, True, True, False),
                                        (True, True, True, True)):
        out += [(_bn_act_bwd_reduce_kernel, reduce_sig,
                 dict(TRAIN=train, RELU=relu, RESIDUAL=residual, DROP_PATH=drop, BLOCK_M=bm, BLOCK_C=bc), warps)
                for bm, bc, warps in reduce_configs]
    return out
