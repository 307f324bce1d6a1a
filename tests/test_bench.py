"""The benchmark harness on CPU: JSON schema, roofline arithmetic by hand, wrong providers flagged, the CLI."""

import json

import pytest
import torch

from fastregnet import bench, roofline
from fastregnet.cli import main
from fastregnet.complexity import count_complexity
from fastregnet.design import RegNetParams

# 64x64: at 32x32 the last stage is 1x1 and train-mode BN normalizes 2 values per channel, which amplifies
# rounding without bound; 64x64 keeps 8.
TINY = dict(models=["regnet_y_400mf"], batches=[2], dtype="fp32", resolution=64, device=torch.device("cpu"),
            warmup=1, repeats=2, log=lambda s: None,
            rates={"copy_bandwidth_bytes_per_s": 1e10, "matmul_flops_per_s": 1e11, "matmul_dtype": "float32",
                   "measured_on": "test"})


def test_roofline_arithmetic_by_hand():
    # stem 3->8 (3x3 s2) on 4x4 -> 2x2; one block 8->8 stride 2 with projection; head 8->2.
    p = RegNetParams(depths=(1,), widths=(8,), group_widths=(8,), bottleneck_multipliers=(1.0,), strides=(2,),
                     se_ratio=None, stem_width=8)
    # flops: stem 9*3*8*4=864, proj 8*8*1=64, a 8*8*4=256, b 9*8*8*1=576, c 64, head 8*2+2=18
    # params: stem 216+16, proj 64+16, a 64+16, b 576+16, c 64+16, head 18; acts: 32+8+32+8+8+2
    assert count_complexity(p, resolution=4, num_classes=2) == {"flops": 1842, "params": 1082, "acts": 90}
    infer = roofline.work(p, batch=2, resolution=4, element_size=4, mode="infer", num_classes=2)
    # 2 FLOPs per MAC x batch 2; bytes = 4 * (params + 2 * (input 48 + 2 * acts 180 + logits 2))
    assert infer == {"flops": 7368, "bytes": 4 * (1082 + 2 * (48 + 180 + 2))}
    train = roofline.work(p, batch=2, resolution=4, element_size=4, mode="train", num_classes=2)
    assert train == {"flops": 3 * 7368, "bytes": 4 * (2 * 1082 + 2 * (48 + 5 * 90)) + 20 * 1082}
    assert roofline.floor_seconds(infer, bandwidth=1000.0, matmul_rate=1e4) == pytest.approx(6.168)  # memory bound
    assert roofline.floor_seconds(infer, bandwidth=1e9, matmul_rate=1000.0) == pytest.approx(7.368)  # compute bound


def test_report_schema_and_every_sample_recorded():
    report = bench.run(modes=["infer", "train"], providers=["tv_nchw", "fastregnet"], **TINY)
    assert set(report) == {"settings", "env", "device_rates", "results"}
    assert report["env"]["device"] == "cpu" and report["env"]["torch"] == torch.__version__
    assert {"cpu_threads", "triton", "python"} <= set(report["env"])
    assert report["settings"]["timing"] == "wall clock" and report["settings"]["repeats"] == 2
    assert len(report["results"]) == 4
    for r in report["results"]:
        assert "error" not in r, r
        assert len(r["times_s"]) == 2 and r["median_s"] > 0 and r["img_per_s"] == pytest.approx(2 / r["median_s"])
        assert r["spread_img_per_s"][0] <= r["img_per_s"] <= r["spread_img_per_s"][1]
        assert r["wrong"] is False and r["max_rel_dev_vs_fp32_ref"] < 1e-3
        assert r["fraction_of_floor"] == pytest.approx(r["floor_s"] / r["median_s"])
    json.dumps(report)  # JSON-ready throughout
    assert "of floor" in bench.format_table(report)


def test_a_wrong_provider_is_flagged():
    def broken(model_name, state_dict, device, compile_mode):
        model, fmt = bench.PROVIDERS["fastregnet"](model_name, state_dict, device, compile_mode)
        with torch.no_grad():
            model.fc.bias.add_(1.0)  # a fast wrong answer
        return model, fmt

    report = bench.run(modes=["infer"], providers=["tv_nchw", "broken"], extra_providers={"broken": broken}, **TINY)
    flags = {r["provider"]: r["wrong"] for r in report["results"]}
    assert flags == {"tv_nchw": False, "broken": True}
    assert "WRONG" in bench.format_table(report)


def test_a_failing_provider_is_reported_not_hidden():
    def crash(*args):
        raise RuntimeError("boom")

    report = bench.run(modes=["infer"], providers=["crash"], extra_providers={"crash": crash}, **TINY)
    assert report["results"][0]["error"] == "RuntimeError: boom"


def test_cli_writes_table_json_and_png(tmp_path, capsys):
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    # (the CPU default set adds torch.compile and the runtimes: minutes here; test_export covers the runtimes)
    assert main(["bench", "--model", "regnet_x_400mf", "--batch", "2", "--resolution", "32", "--warmup", "1",
                 "--repeats", "2", "--providers", "tv_nchw", "tv_channels_last", "fastregnet", "--out", str(out),
                 "--plot", str(png)]) == 0
    text = capsys.readouterr().out
    assert "tv_channels_last" in text and "fastregnet" in text and "JSON written" in text
    report = json.loads(out.read_text())
    assert report["device_rates"]["copy_bandwidth_bytes_per_s"] > 0  # measured by the harness itself
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert main(["bench", "--model", "RegNetY-400MF"]) == 2  # not a torchvision name: a clear error


def test_infer_at_batch_one_needs_no_training_reference(tmp_path, capsys):
    """A train-mode forward of batch 1 at 32 px cannot run (one value per BN channel); infer must not need one."""
    out = tmp_path / "b1.json"
    assert main(["bench", "--model", "regnet_x_400mf", "--batch", "1", "--resolution", "32", "--mode", "infer",
                 "--providers", "fastregnet", "--warmup", "0", "--repeats", "1", "--out", str(out)]) == 0
    (record,) = json.loads(out.read_text())["results"]
    assert "error" not in record and record["max_rel_dev_vs_fp32_ref"] < 1e-4


def test_providers_are_interleaved_round_by_round_after_a_shared_warm_up():
    # timed one after another, the first provider pays for the machine's warm-up; the harness alternates them
    calls = []

    def traced(label):
        def build(model_name, state_dict, device, compile_mode):
            model, fmt = bench.PROVIDERS["tv_channels_last"](model_name, state_dict, device, compile_mode)
            model.register_forward_pre_hook(lambda *_: calls.append(label))
            return model, fmt
        return build

    settings = dict(TINY, warmup=2, repeats=6)
    report = bench.run(modes=["infer"], providers=["a", "b", "c"],
                       extra_providers={p: traced(p) for p in "abc"}, **settings)
    # one checked call each at build time, then 2 warm-up rounds and 6 timed rounds, each round every provider once,
    # in an order shuffled each round: no provider always runs right after the same one (a rotation would keep
    # b behind a)
    assert calls[:9] == ["a", "b", "c"] * 3
    rounds = [calls[i:i + 3] for i in range(9, len(calls), 3)]
    assert len(rounds) == 6 and all(sorted(r) == ["a", "b", "c"] for r in rounds)
    behind = {p: {r[r.index(p) - 1] for r in rounds if r.index(p)} for p in "abc"}
    assert any(len(before) > 1 for before in behind.values()), behind
    assert [r["round_positions"] for r in report["results"]] == [[r.index(p) for r in rounds] for p in "abc"]
    assert all(len(r["times_s"]) == 6 for r in report["results"])
    assert report["settings"]["order"].startswith("interleaved")


def _cpu_report_module():
    """bench/cpu_report.py, a script outside the package, loaded as a module."""
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "bench" / "cpu_report.py"
    spec = importlib.util.spec_from_file_location("cpu_report", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_report_renders_the_readme_tables_from_a_run():
    cpu_report = _cpu_report_module()
    report = bench.run(modes=["infer", "train"], providers=["tv_nchw", "tv_channels_last", "fastregnet",
                                                             "fastregnet_fold"],
                       extra_providers={"fastregnet_fold": cpu_report._fastregnet_fold}, **TINY)
    section = cpu_report.readme_section(report)
    rows = [line for line in section.splitlines() if line.startswith("| regnet_y_400mf | 2 |")]
    assert len(rows) == 3 and all(len(r.split("|")) == 8 for r in rows[:2])  # infer, train: model, batch, 4 providers
    assert "fastregnet / torchvision in its faster layout" in section
    assert len(rows[2].split("|")) == 10  # the ratios: model, batch, 3 columns per mode
    assert "fastregnet: eval " in section and "; training " in section
    assert section.count(" of 1 cases >= 1.0x by the medians") == 2  # (no compile providers in this run)
    assert "torch.compile(fastregnet)" not in section


def test_cpu_report_ratios_against_torchvisions_faster_layout():
    # (ratio of the median speeds, median over rounds of torchvision's time / fastregnet's), each against the layout
    # faster by that measure; made-up times, batch 1
    cpu_report = _cpu_report_module()
    times = {"tv_nchw": [2.0, 2.0, 2.0], "tv_channels_last": [1.0, 1.2, 1.0], "fastregnet": [0.5, 1.0, 1.0]}
    by_key = {("m", 1, "infer", p): {"times_s": t, "img_per_s": 1 / sorted(t)[1]} for p, t in times.items()}
    of_medians, paired, (low, high) = cpu_report.case_ratios(by_key, "m", 1, "infer")
    assert (of_medians, paired) == (1.0, 1.2)  # paired: [2, 1.2, 1] against channels_last
    assert 1.0 <= low <= paired <= high <= 2.0
    assert cpu_report.case_ratios(by_key, "m", 8, "infer") is None


def test_cpu_report_says_what_the_bootstrap_interval_resolves():
    cpu_report = _cpu_report_module()
    faster = [1.05, 1.04, 1.06, 1.05, 1.03, 1.07, 1.05, 1.04, 1.06, 1.05]
    mixed = [1.05, 0.95, 1.02, 0.98, 1.0, 1.01, 0.99, 1.03, 0.97, 1.0]
    assert cpu_report.bootstrap_interval(faster) == cpu_report.bootstrap_interval(faster)  # seeded
    assert [cpu_report._verdict(cpu_report.bootstrap_interval(r)) for r in (faster, mixed, [2 - r for r in faster])] \
        == ["faster", "within noise", "slower"]
