"""`fastregnet cost`, the static cost model (fastregnet/cost.py): its launch list matches what the model really
launches, its L2 reuse model on a toy GEMM, and the issue's bounds for the hot spots, asserted at batch 256 in bf16
for regnet_y_400mf, regnet_y_1_6gf, regnet_y_16gf and regnet_x_400mf. All figures are modelled."""

import json
from collections import Counter

import pytest
import torch

import fastregnet
from fastregnet.cost import GPUS, Launch, _Step, gemm_launch, model_launches, summarize
from fastregnet.kernels.batch_norm import MERGE_STEPS

MODELS = ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf", "regnet_x_400mf")


@pytest.fixture(scope="module")
def launches():
    return {(m, mode): model_launches(m, 256, "bf16", mode) for m in MODELS for mode in ("infer", "train")}


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_launch_list_matches_the_kernels_the_model_launches(mode):
    torch.manual_seed(0)
    model = fastregnet.RegNet(depths=[1, 2], widths=[32, 64], group_widths=8, se_ratio=0.25, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    with fastregnet.use_backend("triton"), fastregnet.count_kernel_launches() as counted:
        if mode == "infer":
            with torch.no_grad():
                model.eval()(x)
        else:
            model.train()(x).sum().backward()
    modelled = Counter(x.kernel for x in model_launches(model.block_params, 2, "fp32", mode, resolution=32)
                       if not x.kernel.startswith("torch:"))
    assert modelled == counted


def test_l2_reuse_model_on_a_toy_gemm():
    step = _Step(GPUS["H100"], "bf16", True)
    half_l2 = GPUS["H100"].l2_bytes / 2
    # A small enough for L2: its re-reads by the 4 N blocks hit, DRAM sees it once
    m, k, n = 4096, 256, 256
    gemm_launch(step, "_pointwise_conv_kernel", "small", m, k, n, (64, 64, 32), m * k * 2)
    small = step.launches[-1]
    assert m * k * 2 <= half_l2 and small.dram_bytes == m * k * 2 + n * k * 2 + m * n * 2
    assert small.bytes == m * k * 2 * 4 + n * k * 2 * (m // 64) + m * n * 2  # as tiled: every re-read counted
    # A past half the L2 and launched row-block-major: every N block re-reads it from DRAM ...
    m = 1 << 18
    gemm_launch(step, "_pointwise_conv_kernel", "large", m, k, n, (64, 64, 32), m * k * 2)
    assert step.launches[-1].dram_bytes == m * k * 2 * 4 + n * k * 2 + m * n * 2
    # ... unless the launch order groups row blocks: then the re-read footprint is one group's rows
    gemm_launch(step, "_pointwise_conv_kernel", "large grouped", m, k, n, (64, 64, 32), m * k * 2, swizzle_rows=8)
    grouped = step.launches[-1]
    assert grouped.dram_bytes == grouped.min_bytes
    assert grouped.useful_mma_fraction == 1.0 and grouped.serial_steps == k // 32


def _block_of(model: str, layer: str) -> tuple[int, int, int]:
    """(group width, stride, output H=W) of the block a layer name like 'block7.f.b' belongs to (224 px input)."""
    index = int(layer.split(".")[0].removeprefix("block"))
    h = 112
    for i, (_, _, stride, gw, _) in enumerate(fastregnet.design.resolve_name(model).params().blocks()):
        h = (h - 1) // stride + 1
        if i + 1 == index:
            return gw, stride, h
    raise AssertionError(layer)


def test_grouped_conv_issues_mostly_useful_mma_work(launches):
    # The issue's bound: >= 70% useful MMA work for every zoo group width >= 16, the best achievable for 8 (45%:
    # tl.dot's N minimum of 16 halves it). Inference with SE no longer pads rows: its squeeze blocks straddle images
    # (image-aligned 64-row blocks held 49 useful rows at 7x7, 4 in the last block at 14x14). The stride-2 data grad
    # folds only each parity class's 1, 2 or 4 taps into K (from all 9 under masks, a quarter useful), so its short K
    # pads more: at group width 24 a one-tap class pads 24 to 32, giving 63% overall; it is held to 60%.
    checked = 0
    for (model, mode), ls in launches.items():
        for x in ls:
            if not x.kernel.startswith("_grouped_conv"):
                continue
            gw, stride, _ = _block_of(model, x.layer)
            bound = 0.7 if gw >= 16 else 0.45
            if x.kernel == "_grouped_conv_bwd_data_kernel" and stride == 2 and gw >= 16:
                bound = 0.6
            assert x.useful_mma_fraction >= 0.99 * bound, (model, mode, gw, x)  # 1%: rows padded to splits
            checked += 1
    assert checked > 100


def test_statistics_merge_and_se_serial_chains_do_not_grow_with_the_batch(launches):
    bigger = {m: model_launches(m, 1024, "bf16", "train") for m in ("regnet_y_1_6gf",)}
    for (model, mode), ls in launches.items():
        for x in ls:
            if x.kernel == "_bn_stats_finalize_kernel":
                assert x.serial_steps <= MERGE_STEPS, (model, x)
    for model, ls in bigger.items():
        base = {(x.kernel, x.layer): x.serial_steps for x in launches[(model, "train")]}
        for x in ls:
            if x.kernel in ("_bn_stats_finalize_kernel", "_se_hidden_kernel", "_se_gate_kernel"):
                assert x.serial_steps <= max(MERGE_STEPS, base[(x.kernel, x.layer)]), x


def test_se_excitation_chains_are_split_over_programs(launches):
    # One excitation launch walked C x S twice per program (1,008 steps in regnet_y_16gf's last stage), and so did
    # its one backward launch (1,056). Now the pool sums up to 64 row-block partials a step (1 step here), fc1 walks
    # at most a quarter of C in 128-deep steps, fc2 walks S in 64-deep steps, forward and backward.
    for (model, mode), ls in launches.items():
        for x in ls:
            if x.kernel == "_se_pool_kernel":
                assert x.serial_steps == 1, (model, x)
            if x.kernel in ("_se_hidden_kernel", "_se_gate_kernel"):
                assert x.serial_steps <= 12, (model, x)


def test_se_excitation_reads_its_weights_once_per_16_images(launches):
    checked = 0
    for (model, mode), ls in launches.items():
        for x in ls:
            if x.kernel in ("_se_hidden_kernel", "_se_gate_kernel"):
                assert x.grid[0] == 16  # batch 256: 16 image blocks, so the fc weights are read 16 times, not 256
                assert x.bytes <= x.min_bytes * 16
                checked += 1
    assert checked > 50


# The bounds below guard the launches' structure (re-reads through L2 and DRAM, MMA padding, serial chains), not the
# model's constants: they are asserted on the throughput terms evaluated at the reference constants they were set
# with (H100: DRAM 3 TB/s, L2 10 TB/s, bf16 MMA 800 TF/s, FMA 50 TF/s, 0.2 us per dependent step), without the
# occupancy, wave, latency and launch terms, which are guesses until a GPU campaign fits them. So a kernel that
# re-reads more, pads more or chains longer fails them, and a constant that moves does not. The model's own
# predictions (bench/cost_report.py, README) are reported, not bounded.
# One structural change is deliberate, and the bounds below are not loosened for it: the grouped conv's operand loads
# became 16-byte cp.async.cg copies (pipelined, 84 instead of 246 registers), which bypass L1, so 6 of the 9 taps'
# window reads that L1 served now come from L2 (Launch.l1_bypass_bytes, guarded exactly by
# test_grouped_taps_bypass_l1_exactly). structure_s counts them. The issue's bounds (1.5x per inference launch, the
# model totals) were set before, with those reads as L1 hits; they are asserted as they were on structure_without_
# bypass, so they keep guarding every other re-read, padding and chain, and the shortfall the bypass makes is
# asserted separately at today's figures (test_l1_bypass_shortfall_does_not_grow), which can only go down. It is
# real and not fixed: staging each program's input window in shared memory once for the 9 taps would remove it.
REFERENCE = {"dram": 3e12, "l2": 10e12, "mma": 800e12, "fma": 50e12, "step": 0.2e-6}


def structure_s(x: Launch, bypass: bool = True) -> float:
    work = x.issued_flops if x.issued_flops is not None else x.flops
    rate = REFERENCE["mma"] if x.issued_flops is not None else REFERENCE["fma"]
    l2_bytes = x.bytes if bypass else x.bytes - x.l1_bypass_bytes
    return max(x.dram_bytes / REFERENCE["dram"], l2_bytes / REFERENCE["l2"], work / rate,
               x.serial_steps * REFERENCE["step"])


def structure_without_bypass(x: Launch) -> float:
    return structure_s(x, bypass=False)


def _floor(x: Launch) -> float:
    rate = REFERENCE["mma"] if x.issued_flops is not None else REFERENCE["fma"]
    return max(x.min_bytes / REFERENCE["dram"], x.flops / rate, REFERENCE["step"])


def test_grouped_taps_bypass_l1_exactly(launches):
    # the grouped conv's extra L2 bytes are exactly 6 of 9 taps' window reads (x2 in the data grad, which gathers
    # grad_out and the saved tensor) where its compiled loads are 16-byte cp.async.cg copies, none where they can hit
    # L1 (the gw-8 data grad's 4-byte cp.async.ca), and no other launch has any
    from fastregnet.cost import kernel_facts

    checked = bypassing = 0
    for (model, mode), ls in launches.items():
        for x in ls:
            if x.kernel in ("_grouped_conv_fwd_kernel", "_grouped_conv_bwd_data_kernel"):
                gw, stride, ho = _block_of(model, x.layer)
                c = x.grid[1] // -(-gw // x.blocks["BLOCK_N"]) * gw
                chunks = -(-gw // x.blocks["BLOCK_N"])
                if x.kernel == "_grouped_conv_fwd_kernel":
                    rows = 256 * ho * ho
                    window = rows * c * 2 * chunks
                else:
                    rows = 256 * (ho * stride) ** 2
                    window = 2 * rows * c * 2 / (stride * stride) * chunks
                bypass = kernel_facts(x.kernel, "*bf16", 90, x.blocks, x.warps)["l1_bypass"]
                assert x.l1_bypass_bytes == pytest.approx(6 * window if bypass else 0), (model, x)
                checked += 1
                bypassing += bypass
            else:
                assert x.l1_bypass_bytes == 0, (model, x)
    assert checked > 100 and bypassing > 100


def test_every_inference_launch_within_1_5x_of_its_floor(launches):
    # The issue's bound, per launch, on the structure (above): <= 1.5 x the layer's floor. The last three over it
    # were conv c + projection launches (1.59-1.70x) that parked the projection's bn2 in their output tile; they
    # hold it in registers now.
    checked = 0
    for model in MODELS:
        for x in launches[(model, "infer")]:
            assert structure_without_bypass(x) <= 1.5 * _floor(x), (model, x)
            if not x.l1_bypass_bytes:
                assert structure_s(x) <= 1.5 * _floor(x), (model, x)
            checked += not x.kernel.startswith("torch:")
    assert checked > 400


def test_l1_bypass_shortfall_does_not_grow(launches):
    # With the L1-bypassing tap reads counted, the issue's 1.5x per-launch bound is NOT met: 71 grouped forwards
    # exceed it at the reference constants (worst 2.14x, regnet_y_16gf), and the modelled inference totals are
    # 1.074 / 1.157 / 1.479 / 1.101 of the floor (1.008 / 1.015 / 1.209 / 1.012 without), training 1.093 / 1.300 /
    # 2.082 / 1.192 (1.082 / 1.212 / 1.927 / 1.124). These figures are today's, asserted so that they cannot grow
    # unnoticed; lower them when the window is staged in shared memory.
    over = {model: [x for x in launches[(model, "infer")] if structure_s(x) > 1.5 * _floor(x)] for model in MODELS}
    assert all(x.kernel == "_grouped_conv_fwd_kernel" and x.l1_bypass_bytes for xs in over.values() for x in xs)
    assert {m: len(xs) for m, xs in over.items()} == {"regnet_y_400mf": 12, "regnet_y_1_6gf": 23,
                                                      "regnet_y_16gf": 18, "regnet_x_400mf": 18}
    assert max(structure_s(x) / _floor(x) for xs in over.values() for x in xs) <= 2.15
    today = {("regnet_y_400mf", "infer"): 1.075, ("regnet_y_1_6gf", "infer"): 1.158,
             ("regnet_y_16gf", "infer"): 1.48, ("regnet_x_400mf", "infer"): 1.102,
             ("regnet_y_400mf", "train"): 1.094, ("regnet_y_1_6gf", "train"): 1.301,
             ("regnet_y_16gf", "train"): 2.083, ("regnet_x_400mf", "train"): 1.193}
    for (model, mode), bound in today.items():
        ls = launches[(model, mode)]
        assert sum(map(structure_s, ls)) / sum(map(_floor, ls)) <= bound, (model, mode)


def test_whole_model_inference_stays_near_its_floor(launches):
    # A regression guard on the modelled totals. Measured (modelled) with 128-row 16-bit eval tiles for the 1x1 and
    # grouped convs, the split excitation and the projection held in registers: 1.01 / 1.02 / 1.21 / 1.01 (were
    # 1.09 / 1.18 / 1.78 / 1.07).
    bound = {"regnet_y_400mf": 1.03, "regnet_y_1_6gf": 1.04, "regnet_y_16gf": 1.25, "regnet_x_400mf": 1.04}
    for model in MODELS:
        ls = launches[(model, "infer")]
        ratio = sum(map(structure_without_bypass, ls)) / sum(map(_floor, ls))
        assert ratio <= bound[model], (model, ratio)


def test_weight_grads_reread_from_l2_not_dram(launches):
    # The weight grads split their rows so that one split's rows fit a 16 MiB slab (kernels/_launch.WGRAD_SLAB_BYTES)
    # and their K blocks' re-reads hit L2: DRAM sees each input about once plus the per-split fp32 partials (they
    # went to DRAM once per K block before: up to ~70x the compulsory bytes in regnet_y_16gf). The modelled training
    # totals are guarded too: 1.08 / 1.21 / 1.93 / 1.12 with 128-wide 16-bit training 1x1 tiles (1.14 / 1.35 / 2.38 /
    # 1.17 at 64 x 64; 1.63 / 2.37 / 4.98 / 1.52 before the slabs and before the model counted the 1x1 data grad's
    # grouped launch order, which the kernel already had).
    for model in MODELS:
        for x in launches[(model, "train")]:
            if "bwd_weight" in x.kernel:
                # the SE-gated conv c also writes its gate's partial grads, one (images x channels) slab per N block
                # (regnet_y_16gf's last conv c: 149 MB beside 695 MB of fp32 weight partials for 343 MB compulsory)
                gated = model.startswith("regnet_y") and x.layer.endswith(".f.c")
                assert x.dram_bytes <= (3.5 if gated else 3) * x.min_bytes, (model, x)
    bound = {"regnet_y_400mf": 1.15, "regnet_y_1_6gf": 1.3, "regnet_y_16gf": 2.05, "regnet_x_400mf": 1.15}
    for model in MODELS:
        ls = launches[(model, "train")]
        ratio = sum(map(structure_without_bypass, ls)) / sum(map(_floor, ls))
        assert ratio <= bound[model], (model, ratio)


def test_cost_cli_json(capsys):
    from fastregnet.cli import main

    assert main(["cost", "--model", "regnet_x_400mf", "--batch", "8", "--mode", "train", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["settings"]["figures"].startswith("modelled")
    for launch in doc["launches"]:
        for key in ("kernel", "layer", "bytes", "min_bytes", "useful_mma_fraction", "serial_steps", "predicted_s",
                    "ctas_per_sm", "waves", "pipelined", "latency_s", "launch_s", "host_s"):
            assert key in launch
    assert main(["cost", "--model", "regnet_y_400mf"]) == 0
    out = capsys.readouterr().out
    assert "MODELLED on H100 (graph launches)" in out
    assert all(column in out.splitlines()[0] for column in ("cta/SM", "waves", "pipe", "lat us", "launch", "host"))
    assert main(["cost", "--model", "regnet_y_400mf", "--launch", "eager"]) == 0
    assert "MODELLED on H100 (eager launches)" in capsys.readouterr().out
    assert main(["cost", "--model", "nope"]) == 2


# ---------------------------------------------------------------------------------------------------------------
# the terms the model adds to its throughput terms (occupancy, waves, latency, launch, host)
# ---------------------------------------------------------------------------------------------------------------


def _one_grouped_launch(monkeypatch, pipelined: bool, registers: int = 128) -> Launch:
    """The grouped forward of regnet_y_1_6gf's stage-2 block at batch 256, with its compiled facts replaced."""
    from fastregnet import cost

    real = cost.kernel_facts

    def facts(kernel, dtype, arch, blocks, warps):
        out = real(kernel, dtype, arch, blocks, warps)
        return dict(out, pipelined=pipelined, registers=registers) if kernel == "_grouped_conv_fwd_kernel" else out

    monkeypatch.setattr(cost, "kernel_facts", facts)
    step = _Step(GPUS["H100"], "bf16", True)
    cost.grouped_conv_launch(step, "_grouped_conv_fwd_kernel", "f.b", 256, 120, 24, 28, 1, False, False)
    return step.launches[-1]


def test_scalar_loads_predict_slower_than_pipelined_ones(monkeypatch):
    # a loop whose loads are not asynchronous copies exposes their latency, hidden only by the other CTAs on the SM
    pipelined = _one_grouped_launch(monkeypatch, True)
    scalar = _one_grouped_launch(monkeypatch, False)
    assert pipelined.pipelined and scalar.pipelined is False
    assert pipelined.exposed_s == 0 < scalar.exposed_s and scalar.predicted_s > pipelined.predicted_s
    # fewer resident CTAs (more registers) hide less of it
    fat = _one_grouped_launch(monkeypatch, False, registers=255)
    assert fat.ctas_per_sm < scalar.ctas_per_sm and fat.exposed_s > scalar.exposed_s


def test_occupancy_and_waves_from_the_compiled_facts():
    from fastregnet.cost import ctas_per_sm

    h100 = GPUS["H100"]
    # 128 registers x 256 threads: two CTAs fill the register file; 100 KiB of shared memory: two fit
    assert ctas_per_sm({"registers": 128, "shared_bytes": 0, "warps": 8}, h100) == 2
    assert ctas_per_sm({"registers": 32, "shared_bytes": 100 * 1024, "warps": 4}, h100) == 2
    assert ctas_per_sm({"registers": 16, "shared_bytes": 0, "warps": 1}, h100) == 32  # the CTA limit
    from fastregnet.cost import _FACTS

    fact = next(f for f in _FACTS[("_pointwise_conv_kernel", "*bf16", 90)] if f["blocks"]["BLOCK_M"] == 64)
    bm, bn, bk = (fact["blocks"][k] for k in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
    step = _Step(h100, "bf16", True)
    k = 512
    slots = 132 * ctas_per_sm(fact, h100)
    for m in (bm * slots * 2, bm * (slots * 2 + 1)):  # exactly two full waves, then one CTA more
        gemm_launch(step, "_pointwise_conv_kernel", "toy", m, k, bn, (bm, bn, bk, fact["warps"]), m * k * 2)
    full, spill = step.launches[-2:]
    assert full.ctas_per_sm <= ctas_per_sm(fact, h100)  # worst case over the variants sharing the tile
    slots = 132 * full.ctas_per_sm
    assert full.waves == -(-full.grid[0] // slots) and spill.waves == -(-spill.grid[0] // slots)
    assert full.wave_efficiency == full.grid[0] / (full.waves * slots)
    assert spill.waves > full.waves or full.ctas_per_sm < ctas_per_sm(fact, h100)
    if spill.waves > full.waves:  # the extra CTA opens a wave of its own
        assert spill.wave_efficiency < full.wave_efficiency and spill.latency_s > full.latency_s


def test_no_launch_is_predicted_at_its_floor_while_it_has_a_launch_term(launches):
    # every launch (PyTorch ops included) carries the launch gap, so none is predicted at exactly its floor
    for (model, mode), ls in launches.items():
        for x in ls:
            assert x.launch_s > 0 and x.predicted_s > x.floor_s, (model, mode, x)
            if not x.kernel.startswith("torch:"):
                assert x.ctas_per_sm and x.waves, (model, x)


def test_eager_launches_wait_for_the_measured_host_time():
    from fastregnet.cost import host_s_per_launch

    host = host_s_per_launch()
    assert set(host["s_per_launch"]) == {"infer", "train"} and host["machine"]
    graph = summarize(model_launches("regnet_y_400mf", 256, "bf16", "infer"))
    eager = summarize(model_launches("regnet_y_400mf", 256, "bf16", "infer", launch="eager"))
    assert graph["host_s"] == 0 and eager["host_s"] > 0
    assert eager["predicted_s"] > graph["predicted_s"]


def test_committed_kernel_facts_come_from_the_committed_aot_report():
    import os

    from fastregnet.kernels.aot import static_facts

    root = os.path.join(os.path.dirname(__file__), "..")
    with open(os.path.join(root, "bench", "results", "aot-static-report.json")) as f:
        report = json.load(f)
    with open(os.path.join(root, "fastregnet", "data", "kernel_facts.json")) as f:
        facts = json.load(f)["facts"]
    assert facts == static_facts(report)
    grouped = [f for f in facts if f["kernel"].startswith("_grouped_conv")]
    # every grouped operand load is a cp.async copy, except on the 16 x 16 tuning candidates on 8 warps, whose
    # 16-bit weight tile gives a thread one 2-byte element (cp.async copies 4 bytes at least)
    tiny = [f for f in grouped if f["blocks"]["BLOCK_N"] == f["blocks"]["BLOCK_K"] == 16 and f["warps"] == 8]
    assert grouped and all(f["pipelined"] for f in grouped if f not in tiny)
    # L1 bypass is read from the gathered operands of the kernels that gather windows, and only there
    gathering = [f for f in grouped if not f["kernel"].startswith("_grouped_conv_bwd_weight")]
    assert sum(f["l1_bypass"] for f in gathering) > len(gathering) / 2
    assert all(f["l1_bypass"] is None for f in facts if f not in gathering)
