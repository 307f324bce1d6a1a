"""Compile every kernel variant the model zoo launches for sm_80 and sm_90, without a GPU, with the divisibility
specialization Triton's launcher applies at run time (kernels/aot.py: aligned pointers and row counts; the grouped
conv's channel alignment comes from its constexpr VEC instead).

The interpreter accepts code the GPU compiler rejects (e.g. a tl.dot dim below 16); this catches it in CI. It also
reads registers and spills from ptxas: the bar is no spills in 16-bit. Every 16-bit variant is compiled for both
archs; fp32 (TF32 and IEEE) variants for sm_90 here and for both in bench/aot_report.py. Kernels defined under
TRITON_INTERPRET=1 cannot be compiled, so the compilation runs in a subprocess without it, started in the background
when the suite is collected (conftest.py) and run while the other tests do; these tests run last and wait for it.
"""

import json
import os

import pytest

from conftest import aot_compile_result

KERNELS = {"_grouped_conv_fwd_kernel", "_grouped_conv_bwd_data_kernel", "_grouped_conv_bwd_weight_kernel",
           "_bn_stats_finalize_kernel", "_running_stats_update_kernel", "_bn_act_apply_kernel",
           "_bn_act_bwd_reduce_kernel", "_pointwise_conv_kernel", "_pointwise_conv_bwd_data_kernel",
           "_pointwise_conv_bwd_weight_kernel", "_se_squeeze_kernel", "_se_pool_kernel", "_se_hidden_kernel",
           "_se_gate_kernel"}


@pytest.fixture(scope="module")
def rows():
    returncode, stdout, stderr = aot_compile_result()
    assert returncode == 0, stderr[-3000:]
    return json.loads(stdout)


@pytest.mark.parametrize("arch", [80, 90])
def test_every_zoo_variant_compiles_without_spills(arch, rows):
    rows = [r for r in rows if r["arch"] == arch]
    assert {r["kernel"].split("[")[0] for r in rows} == KERNELS
    failed = [f"{r['kernel']} {r['dtype']}: {r['error']}" for r in rows if "error" in r]
    assert not failed, "\n".join(failed)
    # 16-bit storage (the fast path): no spills at all. fp32 (TF32 or IEEE dots), and the fp32 SE excitation: a few
    # bytes at most (bench/aot_report.py), bounded so it can't grow.
    spills = [r for r in rows if (r["spill_store_bytes"] or r["spill_load_bytes"]) and r["dtype"] != "*fp32"]
    assert not spills, spills
    fp32_spills = [r for r in rows if r["dtype"] == "*fp32" and r["spill_store_bytes"] > 64]
    assert not fp32_spills, fp32_spills
    assert all(r["shared_bytes"] <= 100 * 1024 for r in rows)
    # compiled with the run-time specialization: pointers aligned
    assert all("Wk" in r["divisible_by_16"] for r in rows if r["kernel"].startswith("_grouped_conv_fwd"))
    if arch == 90:
        precisions = {r["kernel"].split("PRECISION=")[1].split(",")[0] for r in rows
                      if r["dtype"] == "*fp32" and "PRECISION=" in r["kernel"]}
        assert precisions == {"ieee", "tf32"}  # both of PyTorch's fp32 policies


# The (rows, columns) of the tile each grouped-conv kernel loads per K step from each tensor; the per-channel fp32
# vectors the data grad gathers per K step are 1-D (BLOCK_K).
_GROUPED_TILES = {
    "_grouped_conv_fwd_kernel": {"X": ("BLOCK_M", "BLOCK_K"), "Wk": ("BLOCK_K", "BLOCK_N")},
    "_grouped_conv_bwd_data_kernel": {"GO": ("BLOCK_M", "BLOCK_K"), "S": ("BLOCK_M", "BLOCK_K"),
                                      "Wk": ("BLOCK_K", "BLOCK_N"),
                                      **{v: ("BLOCK_K",) for v in ("Mean", "Invstd", "Gamma", "Beta", "DBeta",
                                                                   "DGamma")}},
    "_grouped_conv_bwd_weight_kernel": {"X": ("BLOCK_K", "BLOCK_M"), "GO": ("BLOCK_M", "BLOCK_N"),
                                        "S": ("BLOCK_M", "BLOCK_N")},
}


def _widest_load(tile: tuple, constexprs: dict, element_bytes: int, warps: int, run: int) -> int:
    """Bytes per thread per load the tile allows: 16, or a run of `run` aligned consecutive elements, or the tile's
    elements per thread, whichever is least (and at least one element)."""
    elements = 1
    for side in tile:
        elements *= constexprs[side]
    return max(element_bytes, min(16, run * element_bytes, elements * element_bytes // (32 * warps)))


def _channel_run(gw: int) -> int:
    """The aligned run of channels a group width allows, written out here rather than taken from the code under
    test (grouped_conv.channel_run): the largest power of two <= 8 dividing it."""
    return min(8, gw & -gw)


def _load_shortfalls(kernel_name: str, loop_loads: dict, ce: dict, ty: str, warps: int, gw: int) -> list[str]:
    """What falls short in one compiled grouped-conv variant's K-loop loads: an operand tile not loaded by cp.async
    copies of the widest size its tile and group width allow."""
    bytes_of = {"*fp32": 4, "*fp16": 2, "*bf16": 2}
    tiles = _GROUPED_TILES[kernel_name]
    assert set(loop_loads) <= set(tiles), (kernel_name, loop_loads)
    bad = []
    for arg, tile in tiles.items():
        size = 4 if len(tile) == 1 else bytes_of[ty]
        want = _widest_load(tile, ce, size, warps, _channel_run(gw))
        loads = loop_loads.get(arg)
        if arg in ("Mean", "Invstd", "Gamma", "Beta", "DBeta", "DGamma") and not ce["TRAIN"]:
            assert loads is None, (kernel_name, arg, loads)  # eval reads no BN vectors
            continue
        sizes = [int(k.split(".")[-1]) for k in loads or {} if k.startswith("cp.async.")]
        if not loads or len(sizes) != len(loads) or min(sizes) < want:
            bad.append(f"gw {gw} {ty} {kernel_name}: {arg} loads {loads}, want cp.async of >= {want} B")
    return bad


@pytest.mark.parametrize("arch", [80, 90])
def test_grouped_conv_operand_loads_are_pipelined_vectors_for_every_zoo_width(arch, rows):
    # From the compiled PTX (kernels/aot.py, loop_global_loads): inside the K loops of the forward, data-grad and
    # weight-grad kernels, every load of an activation, weight or gradient tile is a cp.async copy (so Triton
    # software-pipelines it) of as many bytes as the tile gives a thread: 16 bytes for every zoo group width in
    # 16-bit and fp32, less only where a tiny tile has fewer elements per thread (group width 8: 16 x 16 weight
    # tiles, 2 elements per thread). The group width is a run-time value, so before the VEC constexpr the compiler
    # could not prove runs for widths that are not multiples of 16: gw 24 issued scalar 2-byte loads (the control
    # below). 16-bit variants are checked on sm_80 and sm_90; fp32 ones on sm_90 only (CI compiles fp32 for sm_90
    # alone to keep the suite short; bench/aot_report.py compiles both).
    import torch

    from fastregnet.design import MODEL_CONFIGS
    from fastregnet.kernels.aot import variant_name
    from fastregnet.kernels.grouped_conv import kernel_variants

    by_name = {(r["kernel"], r["dtype"]): r for r in rows if r["arch"] == arch and "error" not in r}
    widths = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})
    prev = torch.backends.cudnn.allow_tf32
    checked, bad = 0, []
    try:
        for dtype, tf32 in ((torch.bfloat16, True), (torch.float16, True), (torch.float32, True),
                            (torch.float32, False)):
            torch.backends.cudnn.allow_tf32 = tf32
            for gw in widths:
                for stride in (1, 2):
                    for kernel, sig, ce, warps in kernel_variants(gw, dtype, stride, arch=arch):
                        ty = next(iter(sig.values()))
                        row = by_name.get((variant_name(kernel, ce), ty))
                        if row is None:
                            assert ty == "*fp32" and arch == 80, (gw, variant_name(kernel, ce))  # fp32: sm_90 only
                            continue
                        checked += 1
                        bad += _load_shortfalls(kernel.fn.__name__, row["loop_loads"], ce, ty, warps, gw)
    finally:
        torch.backends.cudnn.allow_tf32 = prev
    assert checked > 300
    assert not bad, "\n".join(bad[:200]) + f"\n({len(bad)} in all)"


def test_load_check_flags_the_old_scalar_loads():
    # Negative control: the gw 24 forward compiled as before the VEC constexpr (VEC=1: no alignment the compiler can
    # prove) issues scalar 2-byte loads, and the check above must say so.
    import subprocess
    import sys

    code = ("import json, torch\n"
            "from fastregnet.kernels.aot import compile_variant\n"
            "from fastregnet.kernels.grouped_conv import kernel_variants\n"
            "k, sig, ce, warps = kernel_variants(24, torch.bfloat16, 1, arch=90)[0]\n"
            "row = compile_variant(k, sig, {**ce, 'VEC': 1}, 90, num_warps=warps)\n"
            "print(json.dumps([k.fn.__name__, row['loop_loads'], ce, warps]))\n")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    name, loop_loads, ce, warps = json.loads(proc.stdout.splitlines()[-1])
    bad = _load_shortfalls(name, loop_loads, ce, "*bf16", warps, 24)
    assert any(": X loads" in b for b in bad) and any(": Wk loads" in b for b in bad), (loop_loads, bad)
    assert all(k.startswith("ld.") for k in loop_loads["X"]), loop_loads  # plain loads, not cp.async


def test_committed_report_covers_the_tuning_space_without_16bit_spills():
    # bench/aot_report.py compiles the whole grouped-conv tuning space (every candidate configuration, both archs),
    # too long to redo in CI; its committed output must cover exactly today's space, with no 16-bit spill, so a
    # candidate that spills cannot be added without the report saying so.
    import os

    import torch

    from fastregnet.design import MODEL_CONFIGS
    from fastregnet.kernels.aot import variant_name, zoo_variants

    path = os.path.join(os.path.dirname(__file__), "..", "bench", "results", "aot-static-report.json")
    with open(path) as f:
        report = json.load(f)
    widths = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})
    prev = torch.backends.cudnn.allow_tf32
    space = {(variant_name(k, ce), next(iter(sig.values())), warps, arch)
             for arch in (80, 90) for k, sig, ce, warps, _ in zoo_variants(widths, True, arch)}
    torch.backends.cudnn.allow_tf32 = prev
    assert {(r["kernel"], r["dtype"], r["num_warps"], r["arch"]) for r in report} == space
    assert not [r for r in report if "error" in r]
    spills = [r for r in report if r["dtype"] != "*fp32" and (r["spill_store_bytes"] or r["spill_load_bytes"])]
    assert not spills, [(r["kernel"], r["dtype"], r["arch"]) for r in spills]
    assert all(r["dtype"] != "*fp32" or r["spill_store_bytes"] <= 64 for r in report)
