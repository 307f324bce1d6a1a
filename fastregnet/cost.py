"""`fastregnet cost`: a static cost model of every launch in one step of a model on the Triton path. Nothing runs and
no GPU is needed: the launches, grids and tiles are those the launchers would use (taken from the kernels' own tile
functions), and every figure is MODELLED, not measured.

Per launch:
- bytes         what the programs load and store as tiled, re-reads included (the traffic the SMs ask of L2);
- dram_bytes    what reaches DRAM under the L2 reuse model below;
- min_bytes     the layer's least traffic: every input read once, every output written once;
- flops         useful work (2 x multiply-adds); issued_flops: what the padded MMA tiles issue;
- useful_mma_fraction = flops / issued_flops (None for kernels without MMA);
- serial_steps  the longest chain of dependent loop steps in any one program;
- the compiled variant's own facts (fastregnet/data/kernel_facts.json, from the AOT report: registers and shared
  memory -> ctas_per_sm; whether its loop loads are asynchronous copies -> pipelined), the grid -> waves;
- predicted_s   max(dram_bytes / (DRAM bandwidth x memory share), bytes / (L2 bandwidth x memory share),
                    issued work / (rate x MMA tile efficiency x wave efficiency), latency_s, host_s)
                + exposed_s + launch_s
  with
  memory share       min(1, sm_bandwidth_share x busy SMs / SMs): a grid that leaves SMs idle cannot draw the
                     whole bandwidth (one SM draws at most sm_bandwidth_share / SMs of it);
  wave efficiency    CTAs / (waves x SMs x ctas_per_sm): the last wave's idle slots (wave quantization);
  MMA tile efficiency min(1, BLOCK_N / mma_full_rate_n): narrow N tiles issue more instructions per flop;
  latency_s          serial_steps x waves x step_s: the longest chain of dependent loop steps;
  exposed_s          loops whose loads are not asynchronous copies (not software-pipelined): each step also waits
                     load_latency_steps x step_s for its loads, hidden only by the other CTAs on the SM, so
                     serial_steps x waves x step_s x load_latency_steps / ctas_per_sm, added, since a program
                     waiting on its loads issues nothing else (0 for pipelined loops);
  launch_s           the gap one launch costs on the GPU (CUDA-graph replay);
  host_s             eager launches only (`--launch eager`): the host time per launch measured by
                     bench/host_overhead.py (on whatever CPU ran it), which a GPU waits for when its kernels are
                     shorter;
- floor_s       max(min_bytes / DRAM bandwidth, flops / rate, one step): the layer's floor on that GPU.

L2 reuse model (stated, and checked on a toy GEMM by the tests): inside one launch the first read of any byte comes
from DRAM; a re-read of a tensor (another program loading the same bytes) hits L2 when that tensor's re-read
footprint fits in half of the L2, and goes to DRAM again otherwise. Writes reach DRAM once. A launch's DRAM bytes
are never fewer than its compulsory bytes (min_bytes) nor more than the bytes it requests (bytes). L1 is credited
only to loads that can hit it: the grouped conv's 16-byte cp.async.cg copies bypass L1, so all nine taps of its
window come from L2. The constants live in fastregnet/data/cost_constants.json, each GPU's with its source;
`fastregnet campaign-apply` replaces the L2 bandwidth, step and launch terms with values fitted from a GPU campaign's
microbenchmarks. Stem, head and other PyTorch ops appear as `torch:` entries whose predicted time is their floor plus
the launch term (the model cannot see inside cuDNN).

What the model cannot see: cache-line and DRAM-page effects, bank conflicts, instruction issue limits beyond the
MMA tile rule, clocks and power, L2 partitioning, and anything inside cuDNN/cuBLAS; every constant not fitted by a
campaign is a stated guess.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import asdict, dataclass

import torch

from .design import RegNetParams, resolve_name

__all__ = ["GPUS", "Launch", "model_launches", "block_launches", "launch_terms", "summarize", "gemm_launch",
           "load_gpus", "gpu_key"]


@dataclass(frozen=True)
class GPU:
    name: str
    dram_bytes_per_s: float  # sustained copy bandwidth (read + write)
    l2_bytes: int
    l2_bytes_per_s: float
    mma_flops_per_s: dict  # per dtype: bf16 / fp16 tensor cores, fp32 as tf32 or ieee (FMA)
    step_s: float  # one dependent, pipelined loop step of a program (load latency not hidden by other steps)
    arch: int = 90  # sm_XY as XY: the launchers pick some tiles per architecture
    launch_s: float = 0.0  # added to every launch: the gap between kernels replayed from a CUDA graph
    sms: int = 132  # streaming multiprocessors
    regs_per_sm: int = 65536  # 32-bit registers per SM
    smem_per_sm_bytes: int = 233472  # shared memory per SM (228 KiB on sm_90)
    threads_per_sm: int = 2048
    ctas_per_sm_max: int = 32
    load_latency_steps: float = 4.0  # an unpipelined loop step waits this many steps for its loads
    sm_bandwidth_share: float = 2.0  # one SM draws at most this many times its 1/SMs share of DRAM or L2 bandwidth
    mma_full_rate_n: int = 64  # tl.dot tiles narrower than this in N run below the MMA rate, in proportion
    source: str = ""  # where the figures come from: assumed, or fitted by campaign-apply from a GPU campaign


CONSTANTS_PATH = os.path.join(os.path.dirname(__file__), "data", "cost_constants.json")


def load_gpus(path: str = CONSTANTS_PATH) -> dict:
    """The modelled GPUs from the constants file (fastregnet/data/cost_constants.json), which `fastregnet
    campaign-apply` rewrites with constants fitted from a GPU campaign."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != 1 or not isinstance(doc.get("gpus"), dict):
        raise ValueError(f"{path}: not a fastregnet cost-constants file (format 1)")
    fields = {f.name for f in dataclasses.fields(GPU)} - {"name"}
    return {name: GPU(name, **{k: v for k, v in entry.items() if k in fields})
            for name, entry in doc["gpus"].items()}


def gpu_key(device_name: str, default: str | None = None) -> str | None:
    """The modelled GPU a device name is: "NVIDIA H200" -> "H200"; `default` for a GPU the constants file does
    not model (the campaign's records use H100's model for it; campaign-apply adds an entry of its own)."""
    return next((g for g in GPUS if g in device_name), default)


# H100 SXM: the copy bandwidth and bf16 rate as measured on such a machine (an earlier issue's figures); the L2
# bandwidth, fp32 rates and the step latency are datasheet-derived assumptions until a campaign fits them. Modelled.
GPUS = load_gpus()
ELEMENT = {"bf16": 2, "fp16": 2, "fp32": 4}
POINTER = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}
FACTS_PATH = os.path.join(os.path.dirname(__file__), "data", "kernel_facts.json")


def _load_facts(path: str = FACTS_PATH) -> dict:
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != 1:
        raise ValueError(f"{path}: not a fastregnet kernel-facts file (format 1)")
    out: dict = {}
    for fact in doc["facts"]:
        out.setdefault((fact["kernel"], fact["dtype"], fact["arch"]), []).append(fact)
    return out


_FACTS = _load_facts()


# Kernels compiled in fp32 storage only (the SE excitation, the statistics merge), and those whose BLOCK_M follows
# the feature map, so the AOT report lists other row blocks than a given launch's.
_FP32_ONLY = ("_se_pool_kernel", "_se_hidden_kernel", "_se_gate_kernel", "_bn_stats_finalize_kernel")
_ROWS_FOLLOW_THE_MAP = ("_se_squeeze_kernel",)


def kernel_facts(kernel: str, dtype: str, arch: int, blocks: dict, warps: int | None) -> dict:
    """The compiled facts of the variants a launch runs (kernels.aot.static_facts): those of `kernel` for that
    storage dtype and arch whose BLOCK_* tile and warps match the launch's, worst case over them (most registers
    and shared memory, pipelined only if all are). A tile the AOT report does not list exactly (the SE squeeze's
    row blocks follow the map size) matches on its other sides. Raises for a kernel, dtype or tile the report does
    not cover (the kernels whose storage is fp32 whatever the activations', _FP32_ONLY, are looked up as fp32)."""
    rows = _FACTS.get((kernel, "*fp32" if kernel in _FP32_ONLY else dtype, arch), [])
    if not rows:
        raise ValueError(f"no compiled facts for {kernel} ({dtype}, sm_{arch}): regenerate them with "
                         f"python bench/aot_report.py bench/results/aot-static-report.json")

    def matching(sides):
        return [f for f in rows if (warps is None or f["warps"] == warps)
                and all(f["blocks"].get(k, v) == v for k, v in sides.items())]

    found = matching(blocks) or (kernel in _ROWS_FOLLOW_THE_MAP
                                 and matching({k: v for k, v in blocks.items() if k != "BLOCK_M"}))
    if not found:
        raise ValueError(f"no compiled facts for {kernel} ({dtype}, sm_{arch}) with {blocks}, {warps} warps: "
                         f"regenerate them with python bench/aot_report.py bench/results/aot-static-report.json")
    pipelined = [f["pipelined"] for f in found if f["pipelined"] is not None]
    return {"registers": max(f["registers"] for f in found), "shared_bytes": max(f["shared_bytes"] for f in found),
            "warps": max(f["warps"] for f in found), "pipelined": all(pipelined) if pipelined else None,
            "l1_bypass": None if any(f["l1_bypass"] is None for f in found) else any(f["l1_bypass"] for f in found)}


def ctas_per_sm(facts: dict, gpu: GPU) -> int:
    """Resident CTAs per SM: the least of the register file, shared memory, thread and CTA limits."""
    threads = 32 * facts["warps"]
    by_regs = gpu.regs_per_sm // max(1, facts["registers"] * threads)
    by_smem = gpu.smem_per_sm_bytes // facts["shared_bytes"] if facts["shared_bytes"] else gpu.ctas_per_sm_max
    return max(1, min(gpu.ctas_per_sm_max, gpu.threads_per_sm // threads, by_regs, by_smem))


def host_s_per_launch(path: str = CONSTANTS_PATH) -> dict:
    """{mode: host seconds per launch} of eager launches, as bench/host_overhead.py last measured them (with the
    machine it ran on), from the constants file."""
    with open(path) as f:
        return json.load(f).get("host", {})


@dataclass
class Launch:
    kernel: str
    layer: str
    grid: tuple
    bytes: float
    dram_bytes: float
    min_bytes: float
    flops: float
    issued_flops: float | None
    serial_steps: int
    predicted_s: float = 0.0
    floor_s: float = 0.0
    work_s: float = 0.0  # the issued MMA (or FMA) work at the modelled rate, tile and wave efficiency included
    useful_mma_fraction: float | None = None
    l1_bypass_bytes: float = 0.0  # of `bytes`: tap re-reads from L2 that L1 would serve but for cp.async.cg
    blocks: dict = dataclasses.field(default_factory=dict)  # the launch's BLOCK_* tile (facts lookup)
    warps: int | None = None
    storage: str | None = None  # pointer type the compiled variant is keyed by (None: the step's dtype)
    ctas_per_sm: int | None = None  # from the compiled variant's registers and shared memory
    waves: int | None = None
    pipelined: bool | None = None  # the loop's loads are asynchronous copies (None: no loop, or a PyTorch op)
    memory_share: float = 1.0
    wave_efficiency: float = 1.0
    mma_tile_efficiency: float = 1.0
    latency_steps: float = 0.0  # the serial chain in step_s units: steps x waves
    exposed_steps: float = 0.0  # unpipelined loads' waits in step_s units (0 when pipelined)
    latency_s: float = 0.0
    exposed_s: float = 0.0
    launch_s: float = 0.0
    host_s: float = 0.0

    def to_json(self) -> dict:
        d = asdict(self)
        d["grid"] = list(self.grid)
        return d


def _reread_dram(tensor_bytes: float, reads: int, gpu: GPU, footprint: float | None = None) -> float:
    """DRAM bytes of a tensor read `reads` times in one launch, under the L2 reuse model: the re-reads hit L2 when
    their footprint (the whole tensor, or the part the programs running together share: a launch-order group's rows,
    a weight grad's row split) fits in half of it."""
    if reads <= 1:
        return tensor_bytes * reads
    footprint = tensor_bytes if footprint is None else footprint
    return tensor_bytes * (1 if footprint <= gpu.l2_bytes / 2 else reads)


def _occupancy(launch: Launch, gpu: GPU, dtype: str) -> None:
    """Fill the launch's compiled-variant terms: CTAs per SM, waves, memory share, wave and tile efficiency, and
    its serial chain in steps (see the module docstring)."""
    if launch.kernel.startswith("torch:"):
        launch.latency_steps = float(launch.serial_steps)
        return
    facts = kernel_facts(launch.kernel, launch.storage or POINTER[dtype], gpu.arch, launch.blocks, launch.warps)
    launch.ctas_per_sm = ctas_per_sm(facts, gpu)
    launch.pipelined = facts["pipelined"]
    ctas = math.prod(launch.grid) if launch.grid else 1
    slots = gpu.sms * launch.ctas_per_sm
    launch.waves = max(1, math.ceil(ctas / slots))
    launch.wave_efficiency = ctas / (launch.waves * slots)
    launch.memory_share = min(1.0, gpu.sm_bandwidth_share * min(ctas, gpu.sms) / gpu.sms)
    if launch.issued_flops and "BLOCK_N" in launch.blocks:
        launch.mma_tile_efficiency = min(1.0, launch.blocks["BLOCK_N"] / gpu.mma_full_rate_n)
    # programs of later waves start when earlier ones finish: the chain repeats once per wave
    launch.latency_steps = launch.serial_steps * launch.waves
    if launch.pipelined is False:
        launch.exposed_steps = launch.latency_steps * gpu.load_latency_steps / launch.ctas_per_sm


def _finish(launch: Launch, gpu: GPU, rate: float, dtype: str, host_s: float) -> Launch:
    # DRAM carries at least the compulsory bytes and at most what the programs ask of L2 (a per-tensor re-read
    # estimate can exceed that when each program reads only a slice of the tensor, as the grouped weight grad's K
    # blocks do)
    launch.dram_bytes = max(launch.min_bytes, min(launch.dram_bytes, launch.bytes))
    if launch.issued_flops:
        launch.useful_mma_fraction = launch.flops / launch.issued_flops
    _occupancy(launch, gpu, dtype)
    work = launch.issued_flops if launch.issued_flops is not None else launch.flops
    launch.work_s = work / (rate * launch.mma_tile_efficiency * launch.wave_efficiency)
    launch.latency_s = launch.latency_steps * gpu.step_s
    launch.exposed_s = launch.exposed_steps * gpu.step_s
    # eager host time is per Triton launch (bench/host_overhead.py divides by those); PyTorch ops carry none here
    launch.launch_s, launch.host_s = gpu.launch_s, (0.0 if launch.kernel.startswith("torch:") else host_s)
    launch.predicted_s = max(launch.dram_bytes / (gpu.dram_bytes_per_s * launch.memory_share),
                             launch.bytes / (gpu.l2_bytes_per_s * launch.memory_share),
                             launch.work_s, launch.latency_s, launch.host_s) + launch.exposed_s + gpu.launch_s
    # no launch finishes faster than one dependent step, so tiny layers have that as their floor
    launch.floor_s = max(launch.min_bytes / gpu.dram_bytes_per_s, launch.flops / rate, gpu.step_s)
    return launch


class _Step:
    """Collects the launches of one step for a GPU and dtype."""

    def __init__(self, gpu: GPU, dtype: str, allow_tf32: bool, host_s: float = 0.0):
        self.gpu, self.dtype, self.e, self.allow_tf32, self.host_s = gpu, dtype, ELEMENT[dtype], allow_tf32, host_s
        self.mma_rate = gpu.mma_flops_per_s[dtype if dtype != "fp32" else ("tf32" if allow_tf32 else "ieee")]
        self.fma_rate = gpu.mma_flops_per_s["ieee"]
        self.launches: list[Launch] = []

    def add(self, launch: Launch, mma: bool = True) -> None:
        self.launches.append(_finish(launch, self.gpu, self.mma_rate if mma else self.fma_rate, self.dtype,
                                     self.host_s))

    def torch_op(self, layer: str, what: str, bytes_: float, flops: float = 0.0) -> None:
        """A PyTorch op: modelled at its floor."""
        self.add(Launch(f"torch:{what}", layer, (), bytes_, bytes_, bytes_, flops, None, 0), mma=flops > 0)


# ----------------------------------------------------------------------------------------------------------------
# per-kernel models, mirroring the launchers
# ----------------------------------------------------------------------------------------------------------------


def gemm_launch(step: _Step, kernel: str, layer: str, m: int, k: int, n: int, tiles: tuple, a_bytes: float,
                extra_read: float = 0.0, extra_write: float = 0.0, second_k: int = 0, a2_bytes: float = 0.0,
                swizzle_rows: int = 1) -> None:
    """A 1x1-conv GEMM (M x K) @ (K x N) on BLOCK_M x BLOCK_N tiles stepping K by BLOCK_K, with an optional second
    GEMM of depth `second_k` into the same tile (the projection, whose result each program holds in registers).
    `tiles` = (BLOCK_M, BLOCK_N, BLOCK_K[, num_warps]).
    `a_bytes` is the A operand's size (it may be read at a stride); `swizzle_rows` row blocks share each sweep over N
    when the launch order groups them."""
    bm, bn, bk = tiles[:3]
    warps = tiles[3] if len(tiles) > 3 else None
    e = step.e
    mb, nb = math.ceil(m / bm), math.ceil(n / bn)
    w_bytes = n * (k + second_k) * e
    reads_a = nb
    # programs run pid_m fastest: A's rows are re-read once per N block, after a sweep over all of M (or over a
    # group of `swizzle_rows` row blocks when the grid is grouped, so the re-read footprint is that group's rows)
    footprint_a = (a_bytes + a2_bytes) * min(1.0, swizzle_rows / mb) if swizzle_rows > 1 else None
    dram_a = _reread_dram(a_bytes + a2_bytes, reads_a, step.gpu, footprint_a)
    out = m * n * e
    tiled = (a_bytes + a2_bytes) * reads_a + w_bytes * mb + out + extra_read + extra_write
    dram = dram_a + _reread_dram(w_bytes, mb, step.gpu) + out + extra_read + extra_write
    flops = 2.0 * m * n * (k + second_k)
    issued = 2.0 * mb * bm * nb * bn * (math.ceil(k / bk) + math.ceil(second_k / bk)) * bk
    minimum = a_bytes + a2_bytes + w_bytes + out + extra_read + extra_write
    step.add(Launch(kernel, layer, (mb, nb), tiled, dram, minimum, flops, issued,
                    math.ceil(k / bk) + math.ceil(second_k / bk), blocks=dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk),
                    warps=warps))


def grouped_conv_launch(step: _Step, kernel: str, layer: str, n: int, c: int, gw: int, h: int, stride: int,
                        squeeze: bool, stats: bool, transpose: bool = False) -> None:
    """The grouped 3x3 conv (forward or data grad): group-aligned tiles, K = 9 taps x GW folded."""
    from .kernels.grouped_conv import (BLOCK_M_CONV, DATA_GRAD_BLOCK_M, data_grad_blocks_per_class, data_grad_tiles,
                                       eval_block_m, eval_squeeze_layout, grouped_conv_tiles, launch_group_m)

    e = step.e
    dtype = _torch_dtype(step.dtype)
    bn, bk, warps = grouped_conv_tiles(gw, dtype)
    if transpose:
        bn, bk, warps = data_grad_tiles((bn, bk, warps))
    ho = (h - 1) // stride + 1
    m_out, m_in = n * ho * ho, n * h * h
    rows = m_in if transpose else m_out  # the data grad's programs own input pixels
    # the data grad; the training forward (statistics); the eval forward (with the squeeze: its layout's blocks)
    block_m = DATA_GRAD_BLOCK_M if transpose else BLOCK_M_CONV if stats else eval_block_m(dtype)
    slots = 1
    if squeeze:
        block_m, slots = eval_squeeze_layout(ho, ho, dtype)
    row_blocks = math.ceil(rows / block_m)
    chunks = math.ceil(gw / bn)
    k_steps = math.ceil(9 * gw / bk)
    groups = c // gw
    a_tensor = (m_out if transpose else m_in) * c * e  # the gathered operand: grad (data grad) or input (forward)
    # the 9 taps' windows overlap inside a program: loads that can hit L1 get the 3 horizontal taps of a kernel row
    # from it (so the window comes 3 times from L2); 16-byte cp.async.cg copies bypass L1, so all 9 taps come from L2
    tile = dict(BLOCK_M=block_m, BLOCK_N=bn, BLOCK_K=bk)
    bypass = kernel_facts(kernel, POINTER[step.dtype], step.gpu.arch, tile, warps)["l1_bypass"]
    if bypass is None:
        raise ValueError(f"kernel facts for {kernel} do not say whether its gathered loads bypass L1: regenerate "
                         f"them with python bench/aot_report.py --facts-only bench/results/aot-static-report.json")
    l2_taps = 9 if bypass else 3
    a_tiled = rows * l2_taps * c * e / (stride * stride if transpose else 1) * chunks
    bypass = a_tiled * (l2_taps - 3) / l2_taps
    # grouped launch order: GROUP_M row blocks run across all (group, chunk) programs together, so a group's N
    # chunks re-read rows that were just read: the re-read footprint is those rows' window
    footprint = launch_group_m(block_m) * block_m * 3 * c * e * stride
    a_dram = _reread_dram(a_tensor, chunks, step.gpu, footprint)
    w_bytes = c * 9 * gw * e
    out = rows * c * e
    extra = (row_blocks * slots * c * 4 if squeeze else 0) + (2 * row_blocks * c * 4 if stats else 0)
    if transpose:  # gy recomputed from grad_out and the saved tensor: a second gathered operand
        a_tiled, a_dram, a_tensor, bypass = 2 * a_tiled, 2 * a_dram, 2 * a_tensor, 2 * bypass
    tiled = a_tiled + w_bytes * row_blocks + out + extra
    dram = a_dram + _reread_dram(w_bytes, row_blocks, step.gpu) + out + extra
    flops = 2.0 * m_out * c * 9 * gw
    issued = 2.0 * row_blocks * block_m * groups * chunks * bn * k_steps * bk
    grid = (row_blocks, groups * chunks)
    if transpose and stride == 2:  # decomposed by input parity: each class folds only its 1, 2 or 4 taps into K
        per_class = data_grad_blocks_per_class(n, h, h, 2)
        issued, k_steps = 0.0, 0
        for ph in (0, 1):
            for pw in (0, 1):
                class_blocks = math.ceil(n * ((h - ph + 1) // 2) * ((h - pw + 1) // 2) / block_m)
                steps = math.ceil((1 + ph) * (1 + pw) * gw / bk)
                issued += 2.0 * class_blocks * block_m * groups * chunks * bn * steps * bk
                k_steps = max(k_steps, steps)
        grid = (4 * per_class, groups * chunks)
    minimum = a_tensor + w_bytes + out + extra
    step.add(Launch(kernel, layer, grid, tiled, dram, minimum, flops, issued, k_steps, l1_bypass_bytes=bypass,
                    blocks=tile, warps=warps))


def grouped_wgrad_launch(step: _Step, layer: str, n: int, c: int, gw: int, h: int, stride: int) -> None:
    from .kernels.grouped_conv import BLOCK_M_CONV, _weight_grad_split, grouped_conv_tiles, weight_grad_block_k

    e = step.e
    config = grouped_conv_tiles(gw, _torch_dtype(step.dtype))
    precision = "ieee" if step.dtype == "fp32" and not step.allow_tf32 else "tf32"
    bn, bk = config[0], weight_grad_block_k(config, precision, step.gpu.arch)
    ho = (h - 1) // stride + 1
    m_out, m_in = n * ho * ho, n * h * h
    chunks, k_blocks, groups = math.ceil(gw / bn), math.ceil(9 * gw / bk), c // gw
    row_bytes = (2 + stride * stride) * c * e
    split = _weight_grad_split(m_out, groups * chunks * k_blocks, True, row_bytes)
    rows_per_split = math.ceil(math.ceil(m_out / split) / BLOCK_M_CONV) * BLOCK_M_CONV
    split = math.ceil(m_out / rows_per_split)
    x_bytes, g_bytes = m_in * c * e, 2 * m_out * c * e  # input; grad_out + saved (gy recomputed)
    x_tiled = m_out * 9 * gw * e * groups * chunks * (k_blocks * bk / (9 * gw))  # each (chunk, k block) reads x
    g_tiled = g_bytes * k_blocks  # gy reloaded once per K block
    part = split * c * 9 * gw * 4
    tiled = x_tiled + g_tiled + part
    footprint = rows_per_split * row_bytes  # a split's programs run together (launch order: split slowest)
    dram = _reread_dram(x_bytes, chunks * k_blocks, step.gpu, footprint) + \
        _reread_dram(g_bytes, k_blocks, step.gpu, footprint) + part
    flops = 2.0 * m_out * c * 9 * gw
    issued = 2.0 * split * rows_per_split * groups * chunks * bn * k_blocks * bk
    step.add(Launch("_grouped_conv_bwd_weight_kernel", layer, (groups * chunks, k_blocks, split), tiled, dram,
                    x_bytes + g_bytes + c * 9 * gw * 4, flops, issued, math.ceil(rows_per_split / BLOCK_M_CONV),
                    blocks=dict(BLOCK_M=BLOCK_M_CONV, BLOCK_N=bn, BLOCK_K=bk), warps=config[2]))


def bn_stats_launches(step: _Step, layer: str, m: int, c: int, rows_per_block: int) -> None:
    """The statistics merge of a conv epilogue's per-block partials (+ the running-statistics update)."""
    from .kernels.batch_norm import stats_merge_plan

    blocks = math.ceil(m / rows_per_block)
    for grid, rows_in, steps in stats_merge_plan(blocks, c):
        b = rows_in * c * 4 * 2 + grid[0] * grid[1] * 64 * 4 * 3
        step.add(Launch("_bn_stats_finalize_kernel", layer, grid, b, b, b, 0.0, None, steps, storage="*fp32"),
                 mma=False)
    step.add(Launch("_running_stats_update_kernel", layer, (math.ceil(c / 256),), 4 * c * 4 + 2 * c * step.e,
                    4 * c * 4 + 2 * c * step.e, 4 * c * 4 + 2 * c * step.e, 0.0, None, 1, storage="*fp32"),
             mma=False)


def elementwise_launch(step: _Step, kernel: str, layer: str, m: int, c: int, reads: int, writes: int,
                       partial_rows: int = 0) -> None:
    """A pass over (M, C) rows: `reads` tensors read, `writes` written, plus fp32 per-block partial sums."""
    from .kernels.batch_norm import ELEMENTWISE_TILES

    b = (reads + writes) * m * c * step.e + partial_rows * c * 4
    block_m, block_c, warps = ELEMENTWISE_TILES
    tile = dict(BLOCK_M=block_m, BLOCK_C=block_c) if kernel != "_se_squeeze_kernel" else {}
    step.add(Launch(kernel, layer, (math.ceil(m / block_m), math.ceil(c / block_c)), b, b, b, 0.0, None, 1,
                    blocks=tile, warps=warps if tile else None), mma=False)


def se_excite_launch(step: _Step, layer: str, n: int, c: int, s: int, hw: int, rows_per_block: int,
                     backward: bool = False) -> None:
    """The excitation's launches (pool, fc1, fc2; or the backward's one), as squeeze_excite.excite_plan lays them
    out: each fc launch reads its fp32 weight once per image block (two weights for the backward)."""
    from .kernels.squeeze_excite import excite_plan

    w = c * s * 4 * (2 if backward else 1)
    for kernel, grid, weight_reads, steps, acts, min_acts in excite_plan(n, c, s, hw, rows_per_block, backward):
        wb = w if weight_reads else 0
        flops = 2.0 * n * c * s * (2 if backward else 1) if weight_reads else float(acts // 4)
        step.add(Launch(kernel, layer, grid, acts + wb * weight_reads,
                        min_acts + _reread_dram(wb, weight_reads, step.gpu), min_acts + wb, flops, None, steps,
                        storage="*fp32"), mma=False)


def _torch_dtype(name: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[name]


# ----------------------------------------------------------------------------------------------------------------
# a whole model
# ----------------------------------------------------------------------------------------------------------------


def _block_infer(step: _Step, name: str, n: int, h: int, w_in: int, w_out: int, stride: int, gw: int, se: int,
                 autocast_weights: bool) -> None:
    from .kernels.pointwise_conv import GROUP_M, eval_tiles

    e = step.e
    ho = (h - 1) // stride + 1
    if autocast_weights:  # fp32 parameters cast to the autocast dtype on every call (PyTorch copies)
        for part, numel in (("a", w_in * w_out), ("b", w_out * gw * 9), ("c", w_out * w_out)) + \
                (("proj", w_in * w_out),) * (stride != 1 or w_in != w_out):
            step.torch_op(f"{name}.{part}", "weight cast", numel * (4 + e))
    proj = stride != 1 or w_in != w_out
    tiles = eval_tiles(w_out, _torch_dtype(step.dtype), False, step.gpu.arch)
    gemm_launch(step, "_pointwise_conv_kernel", f"{name}.f.a", n * h * h, w_in, w_out, tiles, n * h * h * w_in * e,
                swizzle_rows=GROUP_M)
    step.torch_op(f"{name}.f.b", "weight layout", 2 * w_out * gw * 9 * e)
    grouped_conv_launch(step, "_grouped_conv_fwd_kernel", f"{name}.f.b", n, w_out, gw, h, stride, squeeze=bool(se),
                        stats=False)
    m = n * ho * ho
    if se:
        from .kernels.grouped_conv import eval_squeeze_layout

        se_excite_launch(step, f"{name}.f.se", n, w_out, se, ho * ho,
                         eval_squeeze_layout(ho, ho, _torch_dtype(step.dtype))[0])
    shortcut = 0 if proj else m * w_out * e
    gate = n * w_out * 4 if se else 0
    tiles = eval_tiles(w_out, _torch_dtype(step.dtype), proj, step.gpu.arch)
    gemm_launch(step, "_pointwise_conv_kernel", f"{name}.f.c" + ("+proj" if proj else ""), m, w_out, w_out, tiles,
                m * w_out * e, extra_read=shortcut + gate, second_k=w_in if proj else 0,
                a2_bytes=m * w_in * e if proj else 0, swizzle_rows=GROUP_M)


def _pointwise_train(step: _Step, layer: str, n: int, h: int, k: int, c: int, stride: int, relu: bool,
                     shortcut: bool, gate: bool) -> None:
    """Forward of pointwise_conv_bn_train: GEMM + statistics epilogue, merge, running update, BN apply."""
    from .kernels.pointwise_conv import GROUP_M, train_fwd_tiles

    e = step.e
    ho = (h - 1) // stride + 1
    m = n * ho * ho
    block_m, block_n, block_k, warps = train_fwd_tiles(c, _torch_dtype(step.dtype))
    blocks = math.ceil(m / block_m)
    gemm_launch(step, "_pointwise_conv_kernel", layer, m, k, c, (block_m, block_n, block_k, warps), m * k * e,
                extra_read=n * k * 4 if gate else 0, extra_write=2 * blocks * c * 4, swizzle_rows=GROUP_M)
    bn_stats_launches(step, layer, m, c, block_m)
    elementwise_launch(step, "_bn_act_apply_kernel", layer, m, c, 2 if shortcut else 1, 1)


def _pointwise_train_bwd(step: _Step, layer: str, n: int, h: int, k: int, c: int, stride: int, residual: bool,
                         gate: int) -> None:
    from .kernels.batch_norm import ELEMENTWISE_TILES
    from .kernels.pointwise_conv import GROUP_M, _weight_grad_split, data_grad_tiles, weight_grad_tiles

    e = step.e
    ho = (h - 1) // stride + 1
    m, mi = n * ho * ho, n * h * h
    elementwise_launch(step, "_bn_act_bwd_reduce_kernel", layer, m, c, 3 if residual else 2, 1 if residual else 0,
                       partial_rows=2 * math.ceil(m / ELEMENTWISE_TILES[0]))
    step.torch_op(layer, "partial sums", 2 * math.ceil(m / ELEMENTWISE_TILES[0]) * c * 4)
    dtype = _torch_dtype(step.dtype)
    wm, wn, wk, _ = weight_grad_tiles(dtype, bool(gate))
    nb, kb = math.ceil(c / wn), math.ceil(k / wk)
    row_bytes = ((3 if residual else 2) * c + k) * e
    rows = _weight_grad_split(m, ho * ho, nb * kb, True, bool(gate), row_bytes, wm)
    split = math.ceil(m / rows)
    g_bytes = (3 if residual else 2) * m * c * e
    x_bytes = mi * k * e / (stride * stride)
    gate_part = nb * n * k * 4 if gate else 0  # the gate's partial grads, one per N block
    tiled = g_bytes * kb + x_bytes * nb + split * c * k * 4 + gate_part
    footprint = rows * row_bytes  # a split's programs run together (launch order: split slowest)
    dram = _reread_dram(g_bytes, kb, step.gpu, footprint) + _reread_dram(x_bytes, nb, step.gpu, footprint) \
        + split * c * k * 4 + gate_part
    issued = 2.0 * split * math.ceil(rows / wm) * wm * nb * wn * kb * wk
    step.add(Launch("_pointwise_conv_bwd_weight_kernel", layer, (nb, kb, split), tiled, dram,
                    g_bytes + x_bytes + c * k * 4 + (n * k * 4 if gate else 0), 2.0 * m * c * k, issued,
                    math.ceil(rows / wm), blocks=dict(BLOCK_M=wm, BLOCK_N=wn, BLOCK_K=wk),
                    warps=weight_grad_tiles(dtype, bool(gate))[3]))
    step.torch_op(layer, "weight-grad partial sum", split * c * k * 4 + c * k * e)
    if gate:
        if nb > 1:
            step.torch_op(f"{layer}.se", "gate-grad partial sum", gate_part + n * k * 4)
        se_excite_launch(step, f"{layer}.se", n, k, gate, h * h, 1, backward=True)
        step.torch_op(f"{layer}.se", "fc grads", 4 * n * (k + gate) * 4, 2.0 * 2 * n * k * gate)
    # at stride 2 the programs walk the output rows and write zeros to the input pixels off the stride grid
    gemm_launch(step, "_pointwise_conv_bwd_data_kernel", layer, m if stride != 1 else mi, c, k,
                data_grad_tiles(dtype, stride, step.gpu.arch, bool(gate)), g_bytes,
                extra_read=n * k * 8 if gate else 0, extra_write=(mi - m) * k * e if stride != 1 else 0,
                swizzle_rows=GROUP_M)


def _block_train(step: _Step, name: str, n: int, h: int, w_in: int, w_out: int, stride: int, gw: int,
                 se: int) -> None:
    from .kernels.batch_norm import ELEMENTWISE_TILES
    from .kernels.grouped_conv import BLOCK_M_CONV

    e = step.e
    ho = (h - 1) // stride + 1
    proj = stride != 1 or w_in != w_out
    # forward, in the block's order: projection, f.a, f.b, then SE + conv c + BN + add + ReLU as one op
    if proj:
        _pointwise_train(step, f"{name}.proj", n, h, w_in, w_out, stride, relu=False, shortcut=False, gate=False)
    _pointwise_train(step, f"{name}.f.a", n, h, w_in, w_out, 1, relu=True, shortcut=False, gate=False)
    step.torch_op(f"{name}.f.b", "weight layout", 2 * w_out * gw * 9 * e)
    grouped_conv_launch(step, "_grouped_conv_fwd_kernel", f"{name}.f.b", n, w_out, gw, h, stride, False, True)
    m = n * ho * ho
    bn_stats_launches(step, f"{name}.f.b", m, w_out, BLOCK_M_CONV)
    elementwise_launch(step, "_bn_act_apply_kernel", f"{name}.f.b", m, w_out, 1, 1)
    if se:
        from .kernels.squeeze_excite import SQUEEZE_BLOCK_M, squeeze_layout

        rows, slots = squeeze_layout(ho * ho, SQUEEZE_BLOCK_M)
        elementwise_launch(step, "_se_squeeze_kernel", f"{name}.f.se", m, w_out, 1, 0,
                           partial_rows=math.ceil(m / rows) * slots)
        se_excite_launch(step, f"{name}.f.se", n, w_out, se, ho * ho, rows)
    _pointwise_train(step, f"{name}.f.c", n, ho, w_out, w_out, 1, relu=True, shortcut=True, gate=bool(se))
    # backward, reverse order
    _pointwise_train_bwd(step, f"{name}.f.c", n, ho, w_out, w_out, 1, residual=True, gate=se)
    elementwise_launch(step, "_bn_act_bwd_reduce_kernel", f"{name}.f.b", m, w_out, 2, 0,
                       partial_rows=2 * math.ceil(m / ELEMENTWISE_TILES[0]))
    step.torch_op(f"{name}.f.b", "partial sums", 2 * math.ceil(m / ELEMENTWISE_TILES[0]) * w_out * 4)
    step.torch_op(f"{name}.f.b", "weight layout", 2 * w_out * gw * 9 * e)
    grouped_conv_launch(step, "_grouped_conv_bwd_data_kernel", f"{name}.f.b", n, w_out, gw, h, stride, False, False,
                        transpose=True)
    grouped_wgrad_launch(step, f"{name}.f.b", n, w_out, gw, h, stride)
    step.torch_op(f"{name}.f.b", "weight-grad partial sum", w_out * 9 * gw * 4 * 2)
    _pointwise_train_bwd(step, f"{name}.f.a", n, h, w_in, w_out, 1, residual=False, gate=0)
    if proj:
        _pointwise_train_bwd(step, f"{name}.proj", n, h, w_in, w_out, stride, residual=False, gate=0)
    step.torch_op(name, "input-grad add", 3 * n * h * h * w_in * e)


def _host_s(launch: str, mode: str) -> float:
    if launch not in ("graph", "eager"):
        raise ValueError(f"launch must be 'graph' or 'eager', got {launch!r}")
    if launch == "graph":
        return 0.0
    host = host_s_per_launch()
    if mode not in host.get("s_per_launch", {}):
        raise ValueError("no host measurement in the cost constants: run python bench/host_overhead.py --constants")
    return host["s_per_launch"][mode]


def model_launches(model: str | RegNetParams, batch: int, dtype: str = "bf16", mode: str = "infer",
                   gpu: str = "H100", resolution: int = 224, allow_tf32: bool = True,
                   autocast_weights: bool = False, launch: str = "graph") -> list[Launch]:
    """Every launch of one inference forward or training step (forward + backward) of `model`, modelled.
    launch="graph": replayed from a CUDA graph (no host term); "eager": each Triton launch also waits for the
    measured host time per launch (host_s_per_launch)."""
    if dtype not in ELEMENT:
        raise ValueError(f"dtype must be one of {sorted(ELEMENT)}, got {dtype!r}")
    if mode not in ("infer", "train"):
        raise ValueError(f"mode must be 'infer' or 'train', got {mode!r}")
    if gpu not in GPUS:
        raise ValueError(f"unknown GPU {gpu!r}; modelled: {', '.join(GPUS)}")
    params = model if isinstance(model, RegNetParams) else resolve_name(model).params()
    step = _Step(GPUS[gpu], dtype, allow_tf32, _host_s(launch, mode))
    e = step.e
    res = (resolution - 1) // 2 + 1
    stem = batch * res * res * params.stem_width
    step.torch_op("stem", "conv+bn+relu", (batch * 3 * resolution * resolution + stem) * e * (3 if mode == "train"
                                                                                              else 1),
                  2.0 * stem * 27 * (3 if mode == "train" else 1))
    h = res
    for i, (w_in, w_out, stride, gw, b) in enumerate(params.blocks()):
        if b != 1:
            raise ValueError(f"the cost model covers bottleneck multiplier 1 (the zoo's), got {b}")
        se = int(round(params.se_ratio * w_in)) if params.se_ratio else 0
        name = f"block{i + 1}"
        if mode == "infer":
            _block_infer(step, name, batch, h, w_in, w_out, stride, gw, se, autocast_weights)
        else:
            _block_train(step, name, batch, h, w_in, w_out, stride, gw, se)
        h = (h - 1) // stride + 1
    last = params.blocks()[-1][1]
    step.torch_op("head", "avgpool+fc", batch * h * h * last * e + 1000 * last * e, 2.0 * batch * last * 1000)
    return step.launches


def block_launches(what: str, batch: int, hw: int, width_in: int, width_out: int, stride: int, group_width: int,
                   se_ratio: float | None, dtype: str = "bf16", gpu: str = "H100") -> list[Launch]:
    """The launches of one block-level microbenchmark (the GPU campaign's): "f.b eval" (the grouped conv + BN +
    ReLU alone), "block eval" (inference) or "block train" (forward + backward), input `hw` pixels square."""
    step = _Step(GPUS[gpu], dtype, True)
    se = int(round(se_ratio * width_in)) if se_ratio else 0
    if what == "f.b eval":
        step.torch_op("f.b", "weight layout", 2 * width_out * group_width * 9 * step.e)
        grouped_conv_launch(step, "_grouped_conv_fwd_kernel", "f.b", batch, width_out, group_width, hw, stride,
                            squeeze=False, stats=False)
    elif what == "block eval":
        _block_infer(step, "block", batch, hw, width_in, width_out, stride, group_width, se, False)
    elif what == "block train":
        _block_train(step, "block", batch, hw, width_in, width_out, stride, group_width, se)
    else:
        raise ValueError(f"unknown microbenchmark {what!r}; expected 'f.b eval', 'block eval' or 'block train'")
    return step.launches


def launch_terms(launches: list[Launch]) -> list[list[float]]:
    """Per launch, what the constants multiply: [DRAM bytes, L2 bytes (as tiled), each over the launch's memory
    share; MMA/FMA seconds at the modelled rate, tile and wave efficiency; its serial chain in steps (waves
    included); its unpipelined loads' exposed waits in steps]. fastregnet.calibration fits the L2 bandwidth, step
    and launch terms from these."""
    return [[x.dram_bytes / x.memory_share, x.bytes / x.memory_share, x.work_s, x.latency_steps, x.exposed_steps]
            for x in launches]


def summarize(launches: list[Launch]) -> dict:
    """Totals and the worst launches by predicted time over floor."""
    total = sum(x.predicted_s for x in launches)
    floor = sum(x.floor_s for x in launches)
    triton = [x for x in launches if not x.kernel.startswith("torch:")]
    mma = [x for x in launches if x.useful_mma_fraction is not None]
    return {"launches": len(launches), "predicted_s": total, "floor_s": floor,
            "predicted_over_floor": total / floor if floor else None,
            "bytes": sum(x.bytes for x in launches), "dram_bytes": sum(x.dram_bytes for x in launches),
            "min_bytes": sum(x.min_bytes for x in launches),
            "useful_mma_fraction": (sum(x.flops for x in mma) / sum(x.issued_flops for x in mma)) if mma else None,
            "max_serial_steps": max(x.serial_steps for x in launches),
            "launch_s": sum(x.launch_s for x in launches), "host_s": sum(x.host_s for x in launches),
            "latency_bound_launches": sum(x.latency_s >= max(x.predicted_s - x.launch_s, 1e-30) for x in triton),
            "unpipelined_launches": sum(x.pipelined is False for x in triton)}


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from .cli_args import positive_int

    p = sub.add_parser("cost", help="static cost model of one step's launches on a named GPU (modelled, no GPU used)")
    p.add_argument("--model", required=True, help="zoo name (torchvision, timm or pycls)")
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--dtype", choices=sorted(ELEMENT), default="bf16")
    p.add_argument("--mode", choices=["infer", "train"], default="infer")
    p.add_argument("--gpu", choices=sorted(GPUS), default="H100")
    p.add_argument("--resolution", type=positive_int, default=224)
    p.add_argument("--no-tf32", action="store_true", help="fp32 with IEEE dots (torch.backends.cudnn.allow_tf32 off)")
    p.add_argument("--launch", choices=["graph", "eager"], default="graph",
                   help="graph: replayed from a CUDA graph; eager: each launch also waits for the host time per "
                        "launch bench/host_overhead.py measured")
    p.add_argument("--json", action="store_true", help="one JSON object: settings, summary, every launch")
    p.set_defaults(func=_cmd_cost)


def _cmd_cost(args) -> int:
    import json

    launches = model_launches(args.model, args.batch, args.dtype, args.mode, args.gpu, args.resolution,
                              allow_tf32=not args.no_tf32, launch=args.launch)
    summary = summarize(launches)
    if args.json:
        settings = {"model": resolve_name(args.model).name, "batch": args.batch, "dtype": args.dtype,
                    "mode": args.mode, "gpu": args.gpu, "resolution": args.resolution,
                    "fp32_dot": "ieee" if args.no_tf32 else "tf32", "launch": args.launch,
                    "figures": "modelled (fastregnet/cost.py)"}
        print(json.dumps({"settings": settings, "summary": summary, "launches": [x.to_json() for x in launches]},
                         indent=1))
        return 0
    print(f"{'kernel':<36} {'layer':<18} {'MB':>9} {'min MB':>8} {'mma':>5} {'steps':>5} {'cta/SM':>6} "
          f"{'waves':>5} {'pipe':>4} {'lat us':>7} {'exp us':>6} {'launch':>6} {'host':>6} {'pred us':>8} "
          f"{'floor us':>8}")
    for x in launches:
        mma = f"{x.useful_mma_fraction:.2f}" if x.useful_mma_fraction is not None else "-"
        pipe = {True: "yes", False: "no", None: "-"}[x.pipelined]
        print(f"{x.kernel:<36} {x.layer:<18} {x.bytes / 1e6:>9.1f} {x.min_bytes / 1e6:>8.1f} {mma:>5} "
              f"{x.serial_steps:>5} {x.ctas_per_sm or '-':>6} {x.waves or '-':>5} {pipe:>4} "
              f"{x.latency_s * 1e6:>7.2f} {x.exposed_s * 1e6:>6.2f} {x.launch_s * 1e6:>6.2f} {x.host_s * 1e6:>6.1f} "
              f"{x.predicted_s * 1e6:>8.1f} {x.floor_s * 1e6:>8.1f}")
    print(f"MODELLED on {args.gpu} ({args.launch} launches): {summary['launches']} launches, "
          f"{summary['predicted_s'] * 1e3:.2f} ms predicted vs a {summary['floor_s'] * 1e3:.2f} ms floor "
          f"({summary['predicted_over_floor']:.2f}x); useful MMA fraction {summary['useful_mma_fraction']:.2f}; "
          f"longest serial chain {summary['max_serial_steps']} steps")
    return 0
