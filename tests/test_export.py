"""The CPU deployment path: `fastregnet export` writes a model a CPU runtime serves, checks the runtime's outputs
against fastregnet's and measures both; the benchmark lists the runtimes beside torchvision, or skips them by name
when they are not installed."""

import importlib.util
import json
import os

import pytest
import torch

import fastregnet
from fastregnet import bench
from fastregnet.cli import main
from fastregnet.export import export_model, load_runtime

from test_bench import TINY


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("openvino", ".xml")])
def test_export_command_round_trips_with_a_parity_check_and_both_speeds(fmt, suffix, tmp_path, capsys):
    pytest.importorskip("onnxruntime" if fmt == "onnx" else "openvino")
    out = tmp_path / f"model{suffix}"
    code = main(["export", "--model", "regnetx_002", "--format", fmt, "--out", str(out), "--batch", "2",
                 "--resolution", "64", "--repeats", "2", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"] and out.exists()
    assert report["max_rel_dev"] < 1e-5  # float32 end to end: the runtime computes the model's own math
    assert set(report["speed"]) == {"fastregnet", fmt}
    assert all(s["img_per_s"] > 0 and len(s["times_s"]) == 2 for s in report["speed"].values())
    if fmt == "openvino":
        assert out.with_suffix(".bin").exists()


def test_an_exported_model_serves_other_batch_sizes_with_the_model_s_weights(tmp_path):
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = fastregnet.create_model("regnetx_002", num_classes=5).eval()
    bench.randomize_bn(model, 3)  # BN statistics that matter, so a wrong fold or stale weight would show
    path = export_model(model, str(tmp_path / "m.onnx"), "onnx", resolution=64)
    runtime = load_runtime(path, "onnx", threads=1)
    for batch in (1, 3):
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            expected = model(x)
        torch.testing.assert_close(runtime(x), expected, rtol=1e-5, atol=1e-5)


def test_a_missing_runtime_is_a_one_line_error_and_a_skipped_benchmark_provider(monkeypatch, tmp_path, capsys):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("onnxruntime", "openvino") else real_find_spec(name, *a))
    code = main(["export", "--model", "regnetx_002", "--format", "onnx", "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "pip install 'fastregnet[export]'" in err
    assert not os.listdir(tmp_path)

    report = bench.run(modes=["infer"], providers=["fastregnet", "onnxruntime", "openvino"], **TINY)
    skipped = {r["provider"]: r.get("skipped") for r in report["results"]}
    assert skipped["fastregnet"] is None
    assert "onnxruntime" in skipped["onnxruntime"] and "openvino" in skipped["openvino"]
    assert not any("error" in r for r in report["results"])
    assert "skipped: " in bench.format_table(report)


def test_the_runtime_providers_skip_training_and_other_devices():
    build = bench.PROVIDERS["onnxruntime"]
    with pytest.raises(bench.ProviderSkipped, match="CPU runtime"):
        build("regnet_y_400mf", {}, torch.device("meta"), None)
    if importlib.util.find_spec("onnxruntime") is None:
        pytest.skip("onnxruntime is not installed")
    report = bench.run(modes=["train"], providers=["onnxruntime"], **TINY)
    assert "inference runtime" in report["results"][0]["skipped"]
