"""`fastregnet gpu-campaign --dry-run`: every part of the GPU campaign runs on the CPU through the Triton
interpreter at tiny shapes, so the command a GPU session runs first cannot rot between GPU sessions."""

import json
import os
import subprocess
import sys

import pytest

from fastregnet.campaign import PARTS, Campaign, summary


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("campaign")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the command must set it itself
    proc = subprocess.run([sys.executable, "-m", "fastregnet.cli", "gpu-campaign", "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    return proc, out


def test_dry_run_runs_every_part_green(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    doc = json.loads((out / "campaign.json").read_text())
    assert doc["campaign"]["dry_run"] is True
    assert list(doc["parts"]) == list(PARTS)
    assert sorted(os.listdir(out)) == ["campaign.json", "tuned_configs.json"]
    for part, entry in doc["parts"].items():
        assert entry["status"] == "done", (part, entry)
        bad = [r for r in entry["records"] if r["status"] not in ("ok", "skipped")]
        assert not bad, bad
    records = {r["case"]: r for e in doc["parts"].values() for r in e["records"]}
    # a CUDA-only check is recorded as skipped with its reason, never dropped
    skipped = [r for r in records.values() if r["status"] == "skipped"]
    assert {r["case"] for r in skipped} == {"CUDA graph: inference capture and replay",
                                            "CUDA graph: training step (make_graphed_callables)"}
    assert all(r["reason"] for r in skipped)
    cases = " ".join(records)
    for expected in ("environment", "device rates bf16", "grouped conv on > 2^31 elements", "bitwise determinism",
                     "model tiny fp16 autocast train", "model tiny fp32 eval", "block regnet_y_400mf stage 1",
                     "f.b eval", "block train", "model bench regnet_y_400mf", "tune grouped conv gw=16"):
        assert expected in cases, expected
    tune = next(r for c, r in records.items() if c.startswith("tune grouped conv"))
    assert len(tune["seconds_per_config (eval fwd + train fwd + bwd)"]) == 2  # every candidate timed
    table = json.loads((out / "tuned_configs.json").read_text())
    assert table["format"] == 1 and table["gpus"]["cpu (dry run)"]["grouped_conv|float32|gw=16"] == tune["best"]
    for family in ("pointwise_eval", "pointwise_train_fwd", "pointwise_bwd_data", "pointwise_bwd_weight", "bn_apply",
                   "bn_bwd_reduce"):
        entries = [k for k in table["gpus"]["cpu (dry run)"] if k.startswith(family + "|float16|")]
        assert len(entries) == 1, (family, entries)  # every 1x1 and BatchNorm family swept and entered in the table
    block = next(r for c, r in records.items() if c.startswith("block ") and c.endswith("fp32 train"))
    assert block["tensors_checked"] > 10  # output, input grad, every parameter grad, running statistics
    assert 0 < block["worst_error_over_bound"] <= 1
    assert proc.stdout.splitlines()[-1].endswith("campaign.json")


def test_a_time_box_cuts_and_still_leaves_valid_json(tmp_path):
    c = Campaign(str(tmp_path), budget_s=0.001, parts=["microbench", "env"], dry_run=True, log=lambda s: None)
    doc = c.run()
    assert list(doc["parts"]) == ["env", "microbench"]  # priority order, whatever order they were asked in
    saved = json.loads((tmp_path / "campaign.json").read_text())
    for entry in saved["parts"].values():
        assert entry["status"] == "cut by its time box"
        assert entry["records"][-1]["status"] == "cut" and entry["records"][-1]["cases_not_run"] >= 1
    assert "cut by its time box" in summary(saved)


def test_unknown_part_and_missing_gpu_are_user_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown campaign parts"):
        Campaign(str(tmp_path), 10, ["tuning"], dry_run=True)
    from fastregnet.cli import main

    if not __import__("torch").cuda.is_available():
        assert main(["gpu-campaign", "--out", str(tmp_path)]) == 2


def test_tune_sweep_interleaves_the_kernel_families():
    # a time box that cuts the tune part still leaves each family's first shapes tuned
    from fastregnet.campaign import _interleave

    assert _interleave(["g1", "g2", "g3"], ["e1"], ["t1", "t2"]) == ["g1", "e1", "t1", "g2", "t2", "g3"]
    assert _interleave() == [] and _interleave([], ["e1"]) == ["e1"]
