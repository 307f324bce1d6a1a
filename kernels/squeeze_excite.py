"""Squeeze-and-Excitation for the RegNetY block, as three small kernels around the convolutions that do the work.

The squeeze (per-(image, channel) sums of the grouped conv's output) is written per (image, row block), fp32: in
eval by the grouped conv's epilogue, in training by `_se_squeeze_kernel` over the normalized output. The gate is
applied by the 1x1 conv c as it loads its input (see pointwise_conv.py). What is left is per image and tiny:

    pooled = sums / HW,  hidden = relu(W1 @ pooled + b1)                                          (_se_hidden_kernel)
    gate = sigmoid(W2 @ hidden + b2)                                                              (_se_gate_kernel)

and its backward, given grad_gate (computed inside conv c's weight-grad kernel, see pointwise_conv.py):

    g_pre2 = grad_gate * gate * (1 - gate),  g_pre1 = (W2^T @ g_pre2) * (hidden > 0),  g_pooled = W1^T @ g_pre1
                                                                                              (_se_excite_bwd_kernel)
Each program takes a block of up to 16 images and runs its fc layer as small tl.dot GEMMs (fp32, IEEE), so the fc
weights are read once per image block rather than once per image (regnet_y_16gf's last stage at batch 256: 16
reads of its 9 MB of SE weights instead of 256). The forward is two launches, split over S blocks (fc1) and C
blocks (fc2), so a program's serial chain is C / 64 or S / 32 steps: one launch walked C x S twice in 64 x 32
steps (up to ~1,000 steps in regnet_y_16gf). The backward (training) is still one program per image block.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._launch import nhwc, record
from .relu import relu, relu_grad

__all__ = ["se_squeeze", "se_excite", "se_excite_bwd", "squeeze_excite_variants", "excite_plan", "SQUEEZE_BLOCK_M"]


@triton.jit
def _rows_times_matrix(Rows, row_stride, offs_i, i_ok, Mat, mat_r, mat_k, offs_out, R, K, BLOCK_K: tl.constexpr):
    """acc[i, r] = sum_k rows[i, k] * M[r, k] (fp32, IEEE) for images offs_i and outputs offs_out of an (R, K)
    matrix with strides (mat_r, mat_k): one small GEMM per K step, so the matrix is read once per image block."""
    acc = tl.zeros((offs_i.shape[0], offs_out.shape[0]), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        v = tl.load(Rows + offs_i[:, None] * row_stride + offs_k[None, :], mask=i_ok[:, None] & (offs_k < K)[None, :],
                    other=0.0)
        w = tl.load(Mat + offs_out[None, :] * mat_r + offs_k[:, None] * mat_k,
                    mask=(offs_out < R)[None, :] & (offs_k < K)[:, None], other=0.0)
        acc = tl.dot(v, w, acc, input_precision="ieee")
    return acc


@triton.jit
def _se_squeeze_kernel(
    X,  # NHWC activation (N, H, W, C)
    SqPart,  # (N * blocks_per_image, C) fp32 out: channel sums of each image's row blocks
    HW, C,  # pixels per image, channels
    BLOCK_M: tl.constexpr,  # rows per block (blocks never straddle images)
    BLOCK_C: tl.constexpr,  # channels per program
):
    pid_m = tl.program_id(0)
    blocks_per_image = tl.cdiv(HW, BLOCK_M)
    local = (pid_m % blocks_per_image) * BLOCK_M + tl.arange(0, BLOCK_M)
    rows = (pid_m // blocks_per_image).to(tl.int64) * HW + local
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    mask = (local < HW)[:, None] & (offs_c < C)[None, :]
    x = tl.load(X + rows[:, None] * C + offs_c[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(SqPart + pid_m * C + offs_c, tl.sum(x, axis=0), mask=offs_c < C)


@triton.jit
def _se_hidden_kernel(
    SqPart,  # (images * blocks_per_image, C) fp32 channel sums of the grouped conv output, per row block
    W1, B1,  # fc1: (S, C) weight and (S,) bias, fp32
    Pooled,  # (images, C) fp32 out: the mean over H*W (saved for backward), written by the S-block-0 programs
    Hidden,  # (images, S) fp32 out: relu(fc1(pooled))
    images, C, S,  # images, channels, squeeze channels
    blocks_per_image,  # row blocks per image in SqPart
    inv_hw,  # 1 / (H * W)
    BLOCK_I: tl.constexpr,  # images per program
    BLOCK_C: tl.constexpr,  # channels per K step
    BLOCK_S: tl.constexpr,  # squeeze channels per program
):
    """hidden[i, s] = relu(sum_c pooled[i, c] * W1[s, c] + b1[s]) for one (image block, S block): the pooled means
    are formed from the row-block sums as each K step loads them, so the chain is C / BLOCK_C steps."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_s = tl.program_id(1) * BLOCK_S + tl.arange(0, BLOCK_S)
    i_ok, s_ok = offs_i < images, offs_s < S
    first = tl.program_id(1) == 0
    acc = tl.zeros((BLOCK_I, BLOCK_S), dtype=tl.float32)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        c_ok = offs_c < C
        mask = i_ok[:, None] & c_ok[None, :]
        total = tl.zeros((BLOCK_I, BLOCK_C), dtype=tl.float32)
        for j in range(0, blocks_per_image):
            total += tl.load(SqPart + (offs_i[:, None] * blocks_per_image + j) * C + offs_c[None, :], mask=mask,
                             other=0.0)
        pooled = total * inv_hw
        tl.store(Pooled + offs_i[:, None] * C + offs_c[None, :], pooled, mask=mask & first)
        w = tl.load(W1 + offs_s[None, :] * C + offs_c[:, None], mask=s_ok[None, :] & c_ok[:, None], other=0.0)
        acc = tl.dot(pooled, w, acc, input_precision="ieee")
    acc += tl.load(B1 + offs_s, mask=s_ok, other=0.0)[None, :]
    tl.store(Hidden + offs_i[:, None] * S + offs_s[None, :], relu(acc), mask=i_ok[:, None] & s_ok[None, :])


@triton.jit
def _se_gate_kernel(
    Hidden,  # (images, S) fp32 from _se_hidden_kernel
    W2, B2,  # fc2: (C, S) weight and (C,) bias, fp32
    Gate,  # (images, C) fp32 out: sigmoid(fc2(hidden))
    images, C, S,  # images, channels, squeeze channels
    BLOCK_I: tl.constexpr,  # images per program
    BLOCK_C: tl.constexpr,  # channels per program
    BLOCK_S: tl.constexpr,  # squeeze channels per K step
):
    """gate[i, c] = sigmoid(sum_s hidden[i, s] * W2[c, s] + b2[c]) for one (image block, C block): S / BLOCK_S steps."""
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    i_ok = offs_i < images
    acc = _rows_times_matrix(Hidden, S, offs_i, i_ok, W2, S, 1, offs_c, C, S, BLOCK_S)
    acc += tl.load(B2 + offs_c, mask=offs_c < C, other=0.0)[None, :]
    tl.store(Gate + offs_i[:, None] * C + offs_c[None, :], 1.0 / (1.0 + tl.exp(-acc)),
             mask=i_ok[:, None] & (offs_c < C)[None, :])


@triton.jit
def _se_excite_bwd_kernel(
    GGatePart,  # (parts, images, C) fp32: partial grads of the gate, summed here
    Gate, Pooled, Hidden,  # forward outputs (images, C), (images, C), (images, S) fp32
    W1, W2,  # fc1 (S, C), fc2 (C, S) weights, fp32
    GPre2,  # (images, C) fp32 out: grad of fc2's output (pre-sigmoid)
    GPre1,  # (images, S) fp32 out: grad of fc1's output (pre-ReLU)
    GPooled,  # (images, C) fp32 out: grad of the pooled mean
    C, S, parts, images,
    BLOCK_I: tl.constexpr,  # images per program
    BLOCK_C: tl.constexpr,  # channels per step
    BLOCK_S: tl.constexpr,  # squeeze channels per step
):
    offs_i = tl.program_id(0) * BLOCK_I + tl.arange(0, BLOCK_I)
    i_ok = offs_i < images
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        mask = i_ok[:, None] & (offs_c < C)[None, :]
        off = offs_i[:, None] * C + offs_c[None, :]
        g = tl.zeros((BLOCK_I, BLOCK_C), dtype=tl.float32)
        for p in range(0, parts):
            g += tl.load(GGatePart + p * images * C + off, mask=mask, other=0.0)
        gate = tl.load(Gate + off, mask=mask, other=0.0)
        tl.store(GPre2 + off, g * gate * (1.0 - gate), mask=mask)
    tl.debug_barrier()
    for s0 in range(0, S, BLOCK_S):
        offs_s = s0 + tl.arange(0, BLOCK_S)
        mask = i_ok[:, None] & (offs_s < S)[None, :]
        g_hidden = _rows_times_matrix(GPre2, C, offs_i, i_ok, W2, 1, S, offs_s, S, C, BLOCK_C)  # g_pre2 @ W2
        hidden = tl.load(Hidden + offs_i[:, None] * S + offs_s[None, :], mask=mask, other=0.0)
        tl.store(GPre1 + offs_i[:, None] * S + offs_s[None, :], relu_grad(g_hidden, hidden), mask=mask)
    tl.debug_barrier()
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + tl.arange(0, BLOCK_C)
        g_pooled = _rows_times_matrix(GPre1, S, offs_i, i_ok, W1, 1, C, offs_c, C, S, BLOCK_S)  # g_pre1 @ W1
        tl.store(GPooled + offs_i[:, None] * C + offs_c[None, :], g_pooled,
                 mask=i_ok[:, None] & (offs_c < C)[None, :])


# ----------------------------------------------------------------------------------------------------------------
# launchers
# ----------------------------------------------------------------------------------------------------------------

SQUEEZE_BLOCK_M = 64  # rows per squeeze block; the grouped conv's squeeze epilogue uses its own BLOCK_M
_BLOCK_C, _BLOCK_S = 64, 32
# Images per excitation program: the fc weights are read once per image block (cdiv(images, 16) times per layer,
# instead of once per image), and each step is an (images x 64) @ (64 x 32) tl.dot, fp32 IEEE, so a program's
# serial chain is as long as the old one-image program's. 16 is tl.dot's minimum; 32- and 64-image blocks spill on
# sm_90 at these steps (AOT report), and narrower steps would lengthen the chain. 4 warps: no spills.
_BLOCK_I, _EXCITE_WARPS = 16, 4


def excite_plan(images: int, c: int, s: int, blocks_per_image: int, backward: bool = False) -> list[tuple]:
    """Per launch of the excitation (hidden, gate) or of its backward: (kernel name, grid, reads of the fc weight it
    uses, serial steps per program)."""
    image_blocks = triton.cdiv(images, _BLOCK_I)
    c_steps, s_steps = triton.cdiv(c, _BLOCK_C), triton.cdiv(s, _BLOCK_S)
    if backward:
        return [("_se_excite_bwd_kernel", (image_blocks,), image_blocks, 2 * c_steps * s_steps + 2 * c_steps)]
    return [("_se_hidden_kernel", (image_blocks, s_steps), image_blocks, c_steps * (blocks_per_image + 1)),
            ("_se_gate_kernel", (image_blocks, c_steps), image_blocks, s_steps)]


def _f32(t: torch.Tensor, *shape) -> torch.Tensor:
    return t.reshape(*shape).float().contiguous()


def se_squeeze(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(per-(image, row block) channel sums fp32, blocks_per_image) of a channels_last (N, C, H, W) tensor."""
    n, c, h, w = x.shape
    blocks_per_image = triton.cdiv(h * w, SQUEEZE_BLOCK_M)
    sq_part = torch.empty((n * blocks_per_image, c), device=x.device, dtype=torch.float32)
    _se_squeeze_kernel[(n * blocks_per_image, triton.cdiv(c, _BLOCK_C))](
        nhwc(x), sq_part, h * w, c, BLOCK_M=SQUEEZE_BLOCK_M, BLOCK_C=_BLOCK_C)
    record(_se_squeeze_kernel)
    return sq_part, blocks_per_image


def se_excite(sq_part: torch.Tensor, blocks_per_image: int, hw: int, fc1_weight: torch.Tensor,
              fc1_bias: torch.Tensor, fc2_weight: torch.Tensor, fc2_bias: torch.Tensor, saved: bool = False):
    """(images, C) fp32 gate from per-(image, row block) channel sums of an H*W = `hw` map; with saved=True,
    (gate, pooled, hidden) for the backward."""
    blocks, c = sq_part.shape
    images = blocks // blocks_per_image
    s = fc1_weight.shape[0]
    f32 = dict(device=sq_part.device, dtype=torch.float32)
    pooled, hidden, gate = torch.empty((images, c), **f32), torch.empty((images, s), **f32), torch.empty((images, c),
                                                                                                        **f32)
    image_blocks = triton.cdiv(images, _BLOCK_I)
    _se_hidden_kernel[(image_blocks, triton.cdiv(s, _BLOCK_S))](
        sq_part, _f32(fc1_weight, s, c), _f32(fc1_bias, s), pooled, hidden, images, c, s, blocks_per_image, 1.0 / hw,
        BLOCK_I=_BLOCK_I, BLOCK_C=_BLOCK_C, BLOCK_S=_BLOCK_S, num_warps=_EXCITE_WARPS)
    record(_se_hidden_kernel)
    _se_gate_kernel[(image_blocks, triton.cdiv(c, _BLOCK_C))](
        hidden, _f32(fc2_weight, c, s), _f32(fc2_bias, c), gate, images, c, s, BLOCK_I=_BLOCK_I, BLOCK_C=_BLOCK_C,
        BLOCK_S=_BLOCK_S, num_warps=_EXCITE_WARPS)
    record(_se_gate_kernel)
    return (gate, pooled, hidden) if saved else gate


def se_excite_bwd(g_gate_part: torch.Tensor, gate: torch.Tensor, pooled: torch.Tensor, hidden: torch.Tensor,
                  fc1_weight: torch.Tensor, fc2_weight: torch.Tensor):
    """Backward of se_excite from partial gate grads (parts, images, C): returns (g_pooled (images, C), grads of
    fc1 weight, fc1 bias, fc2 weight, fc2 bias) fp32, weights shaped like the conv weights."""
    parts, images, c = g_gate_part.shape
    s = fc1_weight.shape[0]
    f32 = dict(device=gate.device, dtype=torch.float32)
    g_pre2, g_pre1, g_pooled = torch.empty((images, c), **f32), torch.empty((images, s), **f32), torch.empty(
        (images, c), **f32)
    _se_excite_bwd_kernel[(triton.cdiv(images, _BLOCK_I),)](
        g_gate_part, gate, pooled, hidden, _f32(fc1_weight, s, c), _f32(fc2_weight, c, s), g_pre2, g_pre1, g_pooled,
        c, s, parts, images, BLOCK_I=_BLOCK_I, BLOCK_C=_BLOCK_C, BLOCK_S=_BLOCK_S, num_warps=_EXCITE_WARPS)
    record(_se_excite_bwd_kernel)
    # The fc weight grads are (images x C)^T (images x S) products, a few KB: one torch matmul each, not a kernel.
    g_fc1_w = (g_pre1.t() @ pooled).reshape(s, c, 1, 1)
    g_fc2_w = (g_pre2.t() @ hidden).reshape(c, s, 1, 1)
    return g_pooled, g_fc1_w, g_pre1.sum(0), g_fc2_w, g_pre2.sum(0)


def squeeze_excite_variants() -> list[tuple]:
    """(kernel, signature, constexprs, num_warps) of the SE kernels (all fp32 except the squeeze's input)."""
    vecs = dict(BLOCK_I=_BLOCK_I, BLOCK_C=_BLOCK_C, BLOCK_S=_BLOCK_S)
    out = [(_se_hidden_kernel,
            {"SqPart": "*fp32", "W1": "*fp32", "B1": "*fp32", "Pooled": "*fp32", "Hidden": "*fp32", "images": "i32",
             "C": "i32", "S": "i32", "blocks_per_image": "i32", "inv_hw": "fp32"}, vecs, _EXCITE_WARPS),
           (_se_gate_kernel,
            {"Hidden": "*fp32", "W2": "*fp32", "B2": "*fp32", "Gate": "*fp32", "images": "i32", "C": "i32",
             "S": "i32"}, vecs, _EXCITE_WARPS),
           (_se_excite_bwd_kernel,
            {"GGatePart": "*fp32", "Gate": "*fp32", "Pooled": "*fp32", "Hidden": "*fp32", "W1": "*fp32",
             "W2": "*fp32", "GPre2": "*fp32", "GPre1": "*fp32", "GPooled": "*fp32", "C": "i32", "S": "i32",
             "parts": "i32", "images": "i32"}, vecs, _EXCITE_WARPS)]
    for ty in ("*fp32", "*fp16", "*bf16"):
        out.append((_se_squeeze_kernel, {"X": ty, "SqPart": "*fp32", "HW": "i32", "C": "i32"},
                    dict(BLOCK_M=SQUEEZE_BLOCK_M, BLOCK_C=_BLOCK_C), 4))
    return out
