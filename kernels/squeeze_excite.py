"""Squeeze-and-Excitation for the RegNetY block, as small kernels around the convolutions that do the work.

The squeeze (per-(image, channel) sums of the grouped conv's output) is written per (row block, image slot), fp32
(squeeze_layout: blocks of consecutive rows that may straddle images): in eval by the grouped conv's epilogue, in
training by `_se_squeeze_kernel` over the normalized output. The gate is
applied by the 1x1 conv c as it loads its input (see pointwise_conv.py). What is left is per image and tiny:

    pooled = sums / HW                                                                            (_se_pool_kernel)
    hidden = relu(W1 @ pooled + b1)                                                               (_se_hidden_kernel)
    gate = sigmoid(W2 @ hidden + b2)                                                              (_se_gate_kernel)

and its backward, given grad_gate (computed inside conv c's weight-grad kernel, see pointwise_conv.py), on the same
two fc kernels with BACKWARD set and each weight read the other way round:

    g_pre2 = grad_gate * gate * (1 - gate),  g_hidden = W2^T @ g_pre2                          (_se_hidden_kernel)
    g_pre1 = g_hidden * (hidden > 0),  g_pooled = W1^T @ g_pre1                                 (_se_gate_kernel)
The fc programs take a block of up to 16 images and run their fc layer as small tl.dot GEMMs (fp32, IEEE), so the fc
weights are read once per image block rather than once per image (regnet_y_16gf's last stage at batch 256: 16
reads of its 9 MB of SE weights instead of 256). Every forward program's serial chain is short: the pool sums up to
64 row-block partials per step (1 step for the zoo at 224 px, where it had been up to 49 steps inside fc1), fc1
steps 128 channels deep over up to 4 channel splits (cdiv(C, 512) steps), fc2 64 squeeze channels deep (S / 64);
the backward's two launches likewise (its one program per image block had walked C x S twice: 1,056 steps).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import cdiv, nhwc, record
from .relu import relu, relu_grad

__all__ = ["se_squeeze", "se_excite", "se_excite_bwd", "squeeze_excite_variants", "excite_plan", "squeeze_layout",
           "squeeze_slots", "squeeze_part_rows", "SQUEEZE_BLOCK_M"]


@triton.jit
def _store_squeeze_sums(values, offs_m, m_ok, block, HW, SqPart, offs_c, c_ok, C, SLOTS, BLOCK_M: tl.constexpr):
    """The SE squeeze's share of one block of BLOCK_M rows (flattened image x pixel rows, blocks may straddle
    images): for each image the block can touch, the channel sums of its rows, in SqPart row block * SLOTS + s for
    image first + s, first being the image of the block's first row (a slot past the block's images holds 0). SLOTS
    is a run-time loop bound: one compiled variant serves every map size."""
    first = (block * BLOCK_M) // HW
    img = offs_m // HW
    for s in range(0, SLOTS):
        keep = m_ok & (img == first + s)
        tl.store(SqPart + (block.to(tl.int64) * SLOTS + s) * C + offs_c,
                 tl.sum(tl.where(keep[:, None], values, 0.0), axis=0), mask=c_ok)


@triton.jit
def _se_squeeze_kernel(
    X,  # NHWC activation (N, H, W, C)
    SqPart,  # (row blocks * SLOTS, C) fp32 out: channel sums of each block's rows per image (squeeze_layout)
    M, HW, C,  # rows (N * H * W), pixels per image, channels
    SLOTS,  # images a block can touch
    BLOCK_M: tl.constexpr,  # rows per block
    BLOCK_C: tl.constexpr,  # channels per program
):
    pid_m = tl.program_id(0)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    m_ok, c_ok = offs_m < M, offs_c < C
    x = tl.load(X + offs_m.to(tl.int64)[:, None] * C + offs_c[None, :], mask=m_ok[:, None] & c_ok[None, :],
                other=0.0).to(tl.float32)
    _store_squeeze_sums(x, offs_m, m_ok, pid_m, HW, SqPart, offs_c, c_ok, C, SLOTS, BLOCK_M)


@triton.jit
def _se_pool_kernel(
    SqPart,  # (row blocks * SLOTS, C) fp32 channel sums per (row block, image slot), see squeeze_layout
    Pooled,  # (images, C) fp32 out: the mean over H*W
    C, HW,  # channels, pixels per image
    ROWS,  # rows per block of SqPart
    SLOTS,  # image slots per block of SqPart
    inv_hw,  # 1 / (H * W)
    BLOCK_J: tl.constexpr,  # blocks per step
    BLOCK_C: tl.constexpr,  # channels per program
):
    """pooled[i, c] = (sum of image i's slots of the blocks holding its rows) / HW for one (image, C block)."""
    img = tl.program_id(0)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = offs_c < C
    first = (img * HW) // ROWS
    last = ((img + 1) * HW - 1) // ROWS
    total = tl.zeros((BLOCK_C,), dtype=tl.float32)
    for j0 in range(first, last + 1, BLOCK_J):
        blocks = j0 + tl.arange(0, BLOCK_J)
        slot = img - (blocks * ROWS) // HW
        part = tl.load(SqPart + (blocks.to(tl.int64) * SLOTS + slot)[:, None] * C + offs_c[None, :],
                       mask=(blocks <= last)[:, None] & c_ok[None, :], other=0.0)
        total += tl.sum(part, axis=0)
    tl.store(Pooled + img * C + offs_c, total * inv_hw, mask=c_ok)


@triton.jit
def _se_hidden_kernel(
    A,  # (images, C) fp32: pooled means (forward) or the gate's grad (BACKWARD)
    Gate,  # (images, C) fp32 gate, read when BACKWARD
    W,  # fc weight read as w[c, s] = W[c * w_c + s * w_s]: fc1's (S, C), or fc2's (C, S) when BACKWARD
    APre,  # (images, C) fp32 out when BACKWARD: g_pre2, written by the S-block-0 programs (for fc2's weight grad)
    HiddenPart,  # (splits, images, S) fp32 out: the products summed over each split's channels
    images, C, S,  # images, channels, squeeze channels
    C_PER_SPLIT,  # channels per split (a multiple of BLOCK_C)
    w_c, w_s,  # W's strides along c and s
    BACKWARD: tl.constexpr,  # the excitation's backward: A is grad_gate, multiplied by gate * (1 - gate) on load
    BLOCK_I: tl.constexpr,  # images per program
    BLOCK_C: tl.constexpr,  # channels per K step
    BLOCK_S: tl.constexpr,  # squeeze channels per program
):
    """part[split, i, s] = sum over the split's channels c of a[i, c] * w[c, s], for one (image block, S block,
    split): C_PER_SPLIT / BLOCK_C steps. Forward: fc1's pre-activation from the pooled means; backward: grad of fc2's
    input, hidden, from g_pre2 = grad_gate * gate * (1 - gate)."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    split = tl.program_id(2)
    i_ok, s_ok = offs_i < images, offs_s < S
    acc = tl.zeros((BLOCK_I, BLOCK_S), dtype=tl.float32)
    c_start = split * C_PER_SPLIT
    for c0 in range(c_start, tl.minimum(c_start + C_PER_SPLIT, C), BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = i_ok[:, None] & (offs_c < C)[None, :]
        off = offs_i[:, None] * C + offs_c[None, :]
        v = tl.load(A + off, mask=mask, other=0.0)
        if BACKWARD:
            gate = tl.load(Gate + off, mask=mask, other=0.0)
            v = v * gate * (1.0 - gate)
            tl.store(APre + off, v, mask=mask & (tl.program_id(1) == 0))
        w = tl.load(W + offs_s[None, :] * w_s + offs_c[:, None] * w_c, mask=s_ok[None, :] & (offs_c < C)[:, None],
                    other=0.0)
        acc = tl.dot(v, w, acc, input_precision="ieee")
    tl.store(HiddenPart + (split * images + offs_i[:, None]) * S + offs_s[None, :], acc,
             mask=i_ok[:, None] & s_ok[None, :])


@triton.jit
def _se_gate_kernel(
    HiddenPart,  # (splits, images, S) fp32 from _se_hidden_kernel
    B1,  # fc1's (S,) bias, fp32 (forward)
    W,  # fc weight read as w[s, c] = W[s * w_s + c * w_c]: fc2's (C, S), or fc1's (S, C) when BACKWARD
    B2,  # fc2's (C,) bias, fp32 (forward)
    Saved,  # (images, S) fp32 hidden saved by the forward, the ReLU mask when BACKWARD
    HiddenOut,  # (images, S) fp32 out, written by the C-block-0 programs: hidden (forward), g_pre1 (BACKWARD)
    Out,  # (images, C) fp32 out: the gate (forward), the grad of the pooled means (BACKWARD)
    images, C, S, splits,  # images, channels, squeeze channels, fc1 splits
    w_c, w_s,  # W's strides along c and s
    BACKWARD: tl.constexpr,  # the excitation's backward
    BLOCK_I: tl.constexpr,  # images per program
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_S: tl.constexpr,  # squeeze channels per K step
    SPLITS: tl.constexpr,  # fc1 splits, padded to a power of two
):
    """For one (image block, C block), S / BLOCK_S steps, each summing the split partials as it loads them. Forward:
    hidden = relu(partials + b1), gate[i, c] = sigmoid(sum_s hidden[i, s] * W2[c, s] + b2[c]). Backward:
    g_pre1 = partials where the saved hidden > 0, g_pooled[i, c] = sum_s g_pre1[i, s] * W1[s, c]."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    offs_p = tl.arange(0, SPLITS)
    i_ok, c_ok = offs_i < images, offs_c < C
    first = tl.program_id(1) == 0
    acc = tl.zeros((BLOCK_I, BLOCK_C), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        s_ok = offs_s < S
        part = tl.load(HiddenPart + (offs_p[:, None, None] * images + offs_i[None, :, None]) * S
                       + offs_s[None, None, :],
                       mask=(offs_p < splits)[:, None, None] & i_ok[None, :, None] & s_ok[None, None, :], other=0.0)
        hs_off = offs_i[:, None] * S + offs_s[None, :]
        hs_mask = i_ok[:, None] & s_ok[None, :]
        if BACKWARD:
            hidden = relu_grad(tl.sum(part, axis=0), tl.load(Saved + hs_off, mask=hs_mask, other=0.0))
        else:
            hidden = relu(tl.sum(part, axis=0) + tl.load(B1 + offs_s, mask=s_ok, other=0.0)[None, :])
        tl.store(HiddenOut + hs_off, hidden, mask=hs_mask & first)
        w = tl.load(W + offs_c[None, :] * w_c + offs_s[:, None] * w_s, mask=c_ok[None, :] & s_ok[:, None], other=0.0)
        acc = tl.dot(hidden, w, acc, input_precision="ieee")
    if not BACKWARD:
        acc = 1.0 / (1.0 + tl.exp(-(acc + tl.load(B2 + offs_c, mask=c_ok, other=0.0)[None, :])))
    tl.store(Out + offs_i[:, None] * C + offs_c[None, :], acc, mask=i_ok[:, None] & c_ok[None, :])


# ----------------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------------

SQUEEZE_BLOCK_M = 64  # rows per training squeeze block; the grouped conv's squeeze epilogue uses its own BLOCK_M
_BLOCK_C = 64  # the squeeze's channels per program
# The pool: 64 row-block partials (of 64 channels) per step, so up to 64 x 64 = 4,096 pixels per image in one step.
_POOL_BLOCK_J, _POOL_BLOCK_C = 64, 64
# The fc programs (forward, and the backward's two GEMMs the other way round): fc1 = (16 images x 128 channels) @
# (128 x 32 squeeze) per step, over up to 4 channel splits (fc1_splits) whose partials fc2's programs sum as they load
# them; fc2 = (16 x 64 squeeze) @ (64 x 64 channels) per step. A step's weight tile is 16 KB, and the chains are
# C / 512 (at least 1) and S / 64 steps (6 and 12 in regnet_y_16gf's last stage; the unsplit excitation walked
# 48 x 2 and 24, its one-program backward 1,056). On 8 warps: on 4 they spilled 8-116 B (AOT report).
_FC1_BLOCK_C, _FC1_BLOCK_S, _FC1_MAX_SPLITS = 128, 32, 4
_FC2_BLOCK_S, _FC2_BLOCK_C = 64, 64
_FC_WARPS = 8
# Images per excitation program: the fc weights are read once per image block (cdiv(images, 16) times per layer,
# instead of once per image). 16 is tl.dot's minimum; 32- and 64-image blocks spill on sm_90 (AOT report).
_BLOCK_I = 16


def squeeze_layout(hw: int, block_m: int) -> tuple[int, int]:
    """(rows per block, slots) of the SE squeeze's partial sums over maps of `hw` pixels, for a producer whose tiles
    are `block_m` rows: blocks of R consecutive rows of the flattened (image, pixel) rows, not aligned to images (an
    image-aligned 64-row block held 49 useful rows at 7 x 7 and 4 in its last block at 14 x 14), each with one slot
    per image it can touch, cdiv(R - 1, hw) + 1; R is halved (down to 16) while that passes 16 (maps under 9 pixels)."""
    rows = block_m
    while rows > 16 and squeeze_slots(rows, hw) > 16:
        rows //= 2
    return rows, squeeze_slots(rows, hw)


def squeeze_slots(rows_per_block: int, hw: int) -> int:
    """Images a block of `rows_per_block` consecutive rows can touch, over maps of `hw` pixels."""
    return cdiv(rows_per_block - 1, hw) + 1


def squeeze_part_rows(images: int, hw: int, rows_per_block: int) -> int:
    """Rows of the squeeze's partial sums (row blocks x image slots) over `images` maps of `hw` pixels."""
    return cdiv(images * hw, rows_per_block) * squeeze_slots(rows_per_block, hw)


def fc1_splits(c: int) -> tuple[int, int]:
    """(splits, channels per split) of fc1: one 128-channel step per split up to 512 channels, so a small SE layer's
    fc1 is one step long. At most 4: each fc2 program reads every split's partials for its image block, so 4
    splits read as many bytes as fc2's own weight tile column (4 x 16 images vs 64 channels)."""
    chunks = cdiv(c, _FC1_BLOCK_C)
    per_split = cdiv(chunks, min(chunks, _FC1_MAX_SPLITS)) * _FC1_BLOCK_C
    return cdiv(c, per_split), per_split


def excite_plan(images: int, c: int, s: int, hw: int, rows_per_block: int, backward: bool = False) -> list[tuple]:
    """Per launch of the excitation (pool, hidden, gate) or of its backward: (kernel name, grid, reads of the fc
    weight it uses, serial steps per program, activation bytes as tiled, least activation bytes)."""
    image_blocks = cdiv(images, _BLOCK_I)
    splits, per_split = fc1_splits(c)
    c_blocks = cdiv(c, _FC2_BLOCK_C)
    # backward: the first GEMM also reads the gate and writes g_pre2; the second also reads the saved hidden
    hidden = (images * c * (3 if backward else 1) + splits * images * s) * 4
    gate_min = (splits * images * s + images * s * (2 if backward else 1) + images * c) * 4
    gate_tiled = gate_min + (c_blocks - 1) * splits * images * s * 4  # every C block re-reads the fc1 partials
    fc = [("_se_hidden_kernel", (image_blocks, cdiv(s, _FC1_BLOCK_S), splits), image_blocks,
           per_split // _FC1_BLOCK_C, hidden, hidden),
          ("_se_gate_kernel", (image_blocks, c_blocks), image_blocks, cdiv(s, _FC2_BLOCK_S), gate_tiled,
           gate_min)]
    if backward:
        return fc
    parts = (cdiv(hw, rows_per_block) + 1) * images  # squeeze partial rows read, at most
    pool = (parts * c + images * c) * 4
    return [("_se_pool_kernel", (images, cdiv(c, _POOL_BLOCK_C)), 0,
             cdiv(cdiv(hw, rows_per_block) + 1, _POOL_BLOCK_J), pool, pool)] + fc


def _f32(t: torch.Tensor, *shape) -> torch.Tensor:
    return t.reshape(*shape).float().contiguous()


def se_squeeze(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(per-(row block, image slot) channel sums fp32, rows per block) of a channels_last (N, C, H, W) tensor, in
    the squeeze_layout the grouped conv's epilogue also writes."""
    n, c, h, w = x.shape
    rows, slots = squeeze_layout(h * w, SQUEEZE_BLOCK_M)
    sq_part = torch.empty((squeeze_part_rows(n, h * w, rows), c), device=x.device, dtype=torch.float32)
    _se_squeeze_kernel[(cdiv(n * h * w, rows), cdiv(c, _BLOCK_C))](
        X=nhwc(x), SqPart=sq_part, M=n * h * w, HW=h * w, C=c, SLOTS=slots, BLOCK_M=rows, BLOCK_C=_BLOCK_C)
    record(_se_squeeze_kernel)
    return sq_part, rows


def se_excite(sq_part: torch.Tensor, images: int, hw: int, rows_per_block: int, fc1_weight: torch.Tensor,
              fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor, saved: bool = False):
    """(images, C) fp32 gate from the squeeze's partial sums over `images` maps of `hw` pixels, written in blocks of
    `rows_per_block` rows (squeeze_layout); with saved=True, (gate, pooled, hidden) for the backward."""
    c = sq_part.shape[1]
    slots = squeeze_slots(rows_per_block, hw)
    if sq_part.shape[0] != squeeze_part_rows(images, hw, rows_per_block):
        raise ValueError(f"se_excite: {sq_part.shape[0]} partial rows do not fit {images} images of {hw} pixels in "
                         f"blocks of {rows_per_block} rows")
    s = fc1_weight.shape[0]
    f32 = dict(device=sq_part.device, dtype=torch.float32)
    pooled, hidden, gate = torch.empty((images, c), **f32), torch.empty((images, s), **f32), torch.empty((images, c),
                                                                                                        **f32)
    _se_pool_kernel[(images, cdiv(c, _POOL_BLOCK_C))](
        SqPart=sq_part, Pooled=pooled, C=c, HW=hw, ROWS=rows_per_block, SLOTS=slots, inv_hw=1.0 / hw,
        BLOCK_J=_POOL_BLOCK_J, BLOCK_C=_POOL_BLOCK_C)
    record(_se_pool_kernel)
    _fc_pair(pooled, None, _f32(fc1_weight, s, c), (1, c), _f32(fc1_bias, s), _f32(fc2_weight, c, s), (s, 1),
             _f32(fc2_bias, c), None, hidden, gate, backward=False)
    return (gate, pooled, hidden) if saved else gate


def _fc_pair(a, gate, w_first, first_strides, b1, w_second, second_strides, b2, saved, hidden_out, out, backward,
             a_pre=None):
    """The two fc launches: _se_hidden_kernel (a @ w_first over split channel ranges) and _se_gate_kernel (the
    splits summed, then @ w_second), each weight read through its (channel, squeeze channel) strides. Forward: fc1
    (S, C) then fc2 (C, S) with their biases; backward: fc2 then fc1, each read the other way round."""
    images, c = a.shape
    s = hidden_out.shape[1]
    splits, per_split = fc1_splits(c)
    hidden_part = torch.empty((splits, images, s), device=a.device, dtype=torch.float32)
    image_blocks = cdiv(images, _BLOCK_I)
    unused = hidden_out  # a pointer the kernels never read in this direction
    _se_hidden_kernel[(image_blocks, cdiv(s, _FC1_BLOCK_S), splits)](
        A=a, Gate=gate if backward else unused, W=w_first, APre=a_pre if backward else unused, HiddenPart=hidden_part,
        images=images, C=c, S=s, C_PER_SPLIT=per_split, w_c=first_strides[0], w_s=first_strides[1],
        BACKWARD=backward, BLOCK_I=_BLOCK_I, BLOCK_C=_FC1_BLOCK_C, BLOCK_S=_FC1_BLOCK_S, num_warps=_FC_WARPS)
    record(_se_hidden_kernel)
    _se_gate_kernel[(image_blocks, cdiv(c, _FC2_BLOCK_C))](
        HiddenPart=hidden_part, B1=unused if backward else b1, W=w_second, B2=unused if backward else b2,
        Saved=saved if backward else unused, HiddenOut=hidden_out, Out=out, images=images, C=c, S=s, splits=splits,
        w_c=second_strides[0], w_s=second_strides[1], BACKWARD=backward, BLOCK_I=_BLOCK_I, BLOCK_C=_FC2_BLOCK_C,
        BLOCK_S=_FC2_BLOCK_S, SPLITS=triton.next_power_of_2(splits), num_warps=_FC_WARPS)
    record(_se_gate_kernel)


def se_excite_bwd(g_gate_part: torch.Tensor, gate: torch.Tensor, pooled: torch.Tensor, hidden: torch.Tensor,
                  fc1_weight: torch.Tensor, fc2_weight: torch.Tensor):
    """Backward of se_excite from partial gate grads (parts, images, C): returns (g_pooled (images, C), grads of
    fc1 weight, fc1 bias, fc2 weight, fc2 bias) fp32, weights shaped like the conv weights. The parts (one per N
    block of the weight grad that wrote them) are summed by one torch reduction, parallel over images and channels,
    not inside the kernel, whose 16-image programs would walk them in series (C / 64 x parts steps)."""
    parts, images, c = g_gate_part.shape
    g_gate = g_gate_part.sum(0) if parts > 1 else g_gate_part[0]
    s = fc1_weight.shape[0]
    f32 = dict(device=gate.device, dtype=torch.float32)
    g_pre2, g_pre1, g_pooled = torch.empty((images, c), **f32), torch.empty((images, s), **f32), torch.empty(
        (images, c), **f32)
    # g_hidden = g_pre2 @ W2 (C, S), then g_pooled = g_pre1 @ W1 (S, C): the forward's fc launches, reversed
    _fc_pair(g_gate.contiguous(), gate, _f32(fc2_weight, c, s), (s, 1), None, _f32(fc1_weight, s, c), (1, c), None,
             hidden, g_pre1, g_pooled, backward=True, a_pre=g_pre2)
    # The fc weight grads are (images x C)^T (images x S) products, a few KB: one torch matmul each, not a kernel.
    g_fc1_w = (g_pre1.t() @ pooled).reshape(s, c, 1, 1)
    g_fc2_w = (g_pre2.t() @ hidden).reshape(c, s, 1, 1)
    return g_pooled, g_fc1_w, g_pre1.sum(0), g_fc2_w, g_pre2.sum(0)


def squeeze_excite_variants() -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of the SE kernels (all fp32 except the squeeze's input)."""
    out = [(_se_pool_kernel,
            {"SqPart": "*fp32", "Pooled": "*fp32", "C": "i32", "HW": "i32", "ROWS": "i32", "SLOTS": "i32",
             "inv_hw": "fp32"},
            dict(BLOCK_J=_POOL_BLOCK_J, BLOCK_C=_POOL_BLOCK_C), 4)]
    for backward in (False, True):
        out.append((_se_hidden_kernel,
                    {"A": "*fp32", "Gate": "*fp32", "W": "*fp32", "APre": "*fp32", "HiddenPart": "*fp32",
                     "images": "i32", "C": "i32", "S": "i32", "C_PER_SPLIT": "i32", "w_c": "i32", "w_s": "i32"},
                    dict(BACKWARD=backward, BLOCK_I=_BLOCK_I, BLOCK_C=_FC1_BLOCK_C, BLOCK_S=_FC1_BLOCK_S), _FC_WARPS))
        for splits in (1, 2, 4):
            out.append((_se_gate_kernel,
                        {"HiddenPart": "*fp32", "B1": "*fp32", "W": "*fp32", "B2": "*fp32", "Saved": "*fp32",
                         "HiddenOut": "*fp32", "Out": "*fp32", "images": "i32", "C": "i32", "S": "i32",
                         "splits": "i32", "w_c": "i32", "w_s": "i32"},
                        dict(BACKWARD=backward, BLOCK_I=_BLOCK_I, BLOCK_C=_FC2_BLOCK_C, BLOCK_S=_FC2_BLOCK_S,
                             SPLITS=splits), _FC_WARPS))
    for ty in ("*fp32", "*fp16", "*bf16"):
        out.append((_se_squeeze_kernel, {"X": ty, "SqPart": "*fp32", "M": "i32", "HW": "i32", "C": "i32",
                                         "SLOTS": "i32"}, dict(BLOCK_M=SQUEEZE_BLOCK_M, BLOCK_C=_BLOCK_C), 4))
    return out
