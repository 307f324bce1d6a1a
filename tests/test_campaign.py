"""The GPU campaign, checked without a GPU so that the command a GPU session runs first cannot rot.

The README's "On a GPU" line runs verbatim (extracted from README.md, `--dry-run` appended, $OUT a temporary
folder) from a copy of the source checkout, in a clean environment that has the dependencies but not fastregnet's
editable install: every part runs on the CPU through the Triton interpreter at tiny shapes, each in its own process.
CI runs this file a second time under the GPU machine's versions (torch 2.11, triton 3.6, numpy >= 2.4).
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import sysconfig
import time

import pytest

from fastregnet.campaign import PARTS

ROOT = pathlib.Path(__file__).resolve().parents[1]
# the README's `--dist loadfile` gives this file to one pytest-xdist worker, so the dry run (a minute and a half)
# runs once


def gpu_line() -> str:
    """The one bash line of the README's "On a GPU" section."""
    body = (ROOT / "README.md").read_text().split("\n## On a GPU\n", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", body, re.S)
    lines = [line for line in block.strip().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def clean_python(tmp: pathlib.Path) -> pathlib.Path:
    """A virtual environment whose python sees this one's site-packages as plain folders on sys.path: the
    dependencies import, but no .pth file there runs, so fastregnet's editable install is not on the path."""
    venv = tmp / "clean-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, check=True).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    pathlib.Path(site, "outer-site-packages.pth").write_text("\n".join(sorted(ours)) + "\n")
    return venv / "bin"


def source_checkout(tmp: pathlib.Path) -> pathlib.Path:
    """The files a checkout has (the package, its link to kernels/, the README), without build or cache folders."""
    dest = tmp / "checkout"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("fastregnet", "kernels"):
        shutil.copytree(ROOT / folder, dest / folder, symlinks=True, ignore=ignore)
    for name in ("README.md", "pyproject.toml"):
        shutil.copy(ROOT / name, dest / name)
    assert (dest / "fastregnet" / "kernels").is_symlink()
    return dest


def clean_env(bin_dir: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


# session-scoped, so that no ordering of this file's tests with others' (plain pytest, other xdist modes) can tear it
# down and run the minute-and-a-half dry run again
@pytest.fixture(scope="session")
def clean(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clean")
    return clean_python(tmp), source_checkout(tmp)


@pytest.fixture(scope="session")
def dry_run(clean, tmp_path_factory):
    bin_dir, checkout = clean
    out = tmp_path_factory.mktemp("out")
    line = gpu_line() + " --dry-run"
    t0 = time.monotonic()
    proc = subprocess.run(["bash", "-c", line], cwd=checkout, capture_output=True, text=True, timeout=600,
                          env=dict(clean_env(bin_dir), OUT=str(out)))
    return proc, out / "campaign", time.monotonic() - t0


def test_the_clean_environment_has_no_fastregnet_but_the_checkout_runs(clean, tmp_path):
    bin_dir, checkout = clean
    env = clean_env(bin_dir)
    outside = subprocess.run(["python3", "-c", "import fastregnet"], cwd=tmp_path, capture_output=True, text=True,
                             env=env)
    assert outside.returncode != 0 and "No module named 'fastregnet'" in outside.stderr
    # from the repository root, with nothing installed: `fastregnet.kernels` is the top-level kernels/ folder
    inside = subprocess.run(["python3", "-m", "fastregnet.cli", "--help"], cwd=checkout, capture_output=True,
                            text=True, env=env)
    assert inside.returncode == 0, inside.stderr[-2000:]
    assert "gpu-campaign" in inside.stdout and "campaign-apply" in inside.stdout
    where = subprocess.run(["python3", "-c", "import fastregnet.kernels.grouped_conv as g; print(g.__file__)"],
                           cwd=checkout, capture_output=True, text=True, env=env)
    assert where.returncode == 0, where.stderr[-2000:]
    assert pathlib.Path(where.stdout.strip()).resolve() == (checkout / "kernels" / "grouped_conv.py").resolve()


def test_the_readme_gpu_line_needs_no_install():
    line = gpu_line()
    assert line.startswith("python3 -m fastregnet.cli gpu-campaign ") and "pip" not in line
    assert '--out "$OUT/campaign"' in line


def test_readme_gpu_line_dry_run_runs_every_part_green(dry_run):
    proc, out, seconds = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    doc = json.loads((out / "campaign.json").read_text())
    budget = doc["campaign"]["budget_s"]
    assert seconds <= budget + 30  # the budget holds (a dry run finishes well inside it)
    assert doc["campaign"]["dry_run"] is True
    assert list(doc["parts"]) == list(PARTS)
    assert sorted(os.listdir(out)) == ["campaign.json", "campaign.log", "tuned_configs.json"]  # journals merged
    assert "===== part correctness =====" in (out / "campaign.log").read_text()
    for part, entry in doc["parts"].items():
        assert entry["status"] == "done", (part, entry)
        bad = [r for r in entry["records"] if r["status"] not in ("ok", "skipped")]
        assert not bad, bad
    records = {r["case"]: r for e in doc["parts"].values() for r in e["records"]}
    # a CUDA-only check is recorded as skipped with its reason, never dropped
    skipped = {r["case"] for r in records.values() if r["status"] == "skipped"}
    assert skipped == {"CUDA graph: inference capture and replay", "CUDA graph: training step (make_graphed_callables)",
                       "compile and CUDA-graph providers"}
    assert all(r["reason"] for r in records.values() if r["status"] == "skipped")
    cases = " ".join(records)
    for expected in ("environment", "device rates bf16", "grouped conv on > 2^31 elements", "bitwise determinism",
                     "model tiny fp16 autocast train", "model tiny fp32 eval", "block regnet_y_400mf stage 1",
                     "f.b eval", "block train", "model bench regnet_y_400mf", "tune grouped conv gw=16",
                     "warm-up worker 1 of 2", "compile time"):
        assert expected in cases, expected
    # every kernel family's tile candidates checked against the fp64 reference, each forced for one launch
    candidates = [r for e in doc["parts"].values() for r in e["records"] if r["case"].startswith("tile candidates")]
    assert {r["family"] for r in candidates} == {"grouped_conv", "pointwise_eval", "pointwise_train_fwd",
                                                 "pointwise_bwd_data", "pointwise_bwd_weight", "bn_apply",
                                                 "bn_bwd_reduce"}
    assert all(0 < r["worst_error_over_bound"] <= 1 and r["tensors_checked"] >= 1 for r in candidates)
    assert any(not r["heuristic"] for r in candidates)  # not only the heuristics
    warm = [r for r in doc["parts"]["warmup"]["records"] if r["case"].startswith("warm-up worker")]
    assert all(r["cases_run"] >= 1 and not r["cases_failed"] for r in warm), warm
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
    bench = [r for r in doc["parts"]["models"]["records"] if r.get("provider") == "fastregnet"]
    assert bench and all(r["img_per_s"] > 0 and not r["wrong"] for r in bench)
    micro = doc["parts"]["microbench"]["records"]
    assert all(r["cost_model"]["launch_terms"] and r["fastregnet_s"] > 0 for r in micro)
    assert proc.stdout.splitlines()[-1].endswith("campaign.json")


def _campaign(tmp_path, *args, fault=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "FASTREGNET_CAMPAIGN_FAULT")}
    if fault:
        env["FASTREGNET_CAMPAIGN_FAULT"] = fault
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "fastregnet.cli", "gpu-campaign", "--dry-run", "--out",
                           str(tmp_path), *args], capture_output=True, text=True, timeout=timeout, env=env)
    return proc, json.loads((tmp_path / "campaign.json").read_text()), time.monotonic() - t0


def test_a_time_box_stops_a_part_between_cases_and_names_what_was_not_run(tmp_path):
    # a 20 s budget over env and correctness: correctness (about 35 s in a dry run) stops when its box is over; the
    # run ends within 30 s of the budget, and campaign.json names the cases it did not run
    proc, doc, seconds = _campaign(tmp_path, "--budget-s", "20", "--part", "correctness", "env")
    assert seconds <= 20 + 30, proc.stderr[-3000:]
    assert list(doc["parts"]) == ["env", "correctness"]  # priority order, whatever order they were asked in
    entry = doc["parts"]["correctness"]
    assert entry["status"] == "cut by its time box", entry["status"]
    (cut,) = [r for r in entry["records"] if r["status"] == "cut"]
    assert cut["case"] == "time box over"
    assert cut["cases_not_run"][-1] == "grouped conv on > 2^31 elements (dry run: small)"
    ran = {r["case"] for r in entry["records"] if r["status"] != "cut"}  # a case may give several records
    assert len(ran) + len(cut["cases_not_run"]) == entry["cases_planned"]
    assert proc.returncode == 0  # cut is not failed
    assert "cut by its time box" in proc.stdout


def test_a_hung_part_is_killed_at_its_box_and_a_crashed_one_costs_only_itself(tmp_path):
    # the runner kills a part that overruns its box by GRACE_S (its whole process group), records it as cut, and
    # goes on; a part whose process dies is recorded as an error with its stderr, and the next part still runs
    from fastregnet.campaign_runner import GRACE_S

    proc, doc, seconds = _campaign(tmp_path / "hang", "--budget-s", "12", "--part", "env", "models",
                                   fault="env:hang")
    env, models = doc["parts"]["env"], doc["parts"]["models"]
    assert env["status"] == "cut by its time box (process killed)"
    assert env["records"][-1]["status"] == "cut" and "killed" in env["records"][-1]["reason"]
    assert seconds <= 12 + GRACE_S + 30
    assert models["status"] in ("done", "cut by its time box", "cut by its time box (process killed)",
                                "cut by its time box (not started: the budget was spent)")
    proc, doc, _ = _campaign(tmp_path / "crash", "--part", "env", "models", fault="env:crash")
    env, models = doc["parts"]["env"], doc["parts"]["models"]
    assert env["status"] == "error" and "exited with status 3" in env["error"]
    assert models["status"] == "done" and models["records"]
    assert proc.returncode == 1  # an error is a failure


def test_unknown_part_missing_gpu_and_absurd_budget_are_user_errors(tmp_path, capsys):
    from fastregnet.campaign_runner import Runner
    from fastregnet.cli import main

    with pytest.raises(ValueError, match="unknown campaign parts"):
        Runner(str(tmp_path), 10, ["tuning"], dry_run=True)
    if not __import__("torch").cuda.is_available():
        assert main(["gpu-campaign", "--out", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as e:
        main(["gpu-campaign", "--out", str(tmp_path), "--budget-s", "9" * 400])
    assert e.value.code == 2 and "at most 86400" in capsys.readouterr().err


def test_tune_sweep_interleaves_the_kernel_families():
    # a time box that cuts the tune part still leaves each family's first shapes tuned
    from fastregnet.campaign import _interleave

    assert _interleave(["g1", "g2", "g3"], ["e1"], ["t1", "t2"]) == ["g1", "e1", "t1", "g2", "t2", "g3"]
    assert _interleave() == [] and _interleave([], ["e1"]) == ["e1"]


def test_campaign_apply_on_the_dry_run_writes_the_four_outputs(dry_run, tmp_path):
    from fastregnet.campaign_apply import apply

    _, out, _ = dry_run
    root = _project_copy(tmp_path)
    with pytest.raises(ValueError, match="dry run"):
        apply(str(out), str(root))
    written = apply(str(out), str(root), allow_dry_run=True)
    table = json.loads((root / "kernels" / "tuned_configs.json").read_text())
    assert table["gpus"]["cpu (dry run)"]["grouped_conv|float32|gw=16"]
    constants = json.loads((root / "fastregnet" / "data" / "cost_constants.json").read_text())
    # a GPU the model does not know (here the dry run's CPU) gets an entry of its own: H100's stays as it was
    assert "DRY RUN" in constants["gpus"]["cpu-dry-run"]["source"] and written["cost_constants"]["cases"] == 3
    assert constants["gpus"]["H100"] == json.loads((ROOT / "fastregnet/data/cost_constants.json").read_text())[
        "gpus"]["H100"]
    readme = (root / "README.md").read_text()
    assert "NOT GPU figures" in readme.split("<!-- gpu-table:begin -->")[1].split("<!-- gpu-table:end -->")[0]
    results = sorted(p.name for p in (root / "bench" / "results").iterdir())
    assert results == [f"gpu-campaign-dry-run-{written['results'][-15:-5]}-tuned.json",
                       f"gpu-campaign-dry-run-{written['results'][-15:-5]}.json"]


def _project_copy(tmp: pathlib.Path) -> pathlib.Path:
    root = tmp / "project"
    for rel in ("README.md", "kernels/tuned_configs.json", "fastregnet/data/cost_constants.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, root / rel)
    return root


def test_campaign_apply_fits_known_constants_from_a_synthetic_campaign(tmp_path):
    # microbench records whose times come from the model itself with known L2 bandwidth, step and launch terms:
    # the fit must recover them, and the cost model must then predict with them
    import dataclasses

    import numpy as np

    from fastregnet import calibration, cost
    from fastregnet.campaign_apply import apply

    # (a step of 0.5 us, with the chains now repeated per wave, decided every case: the L2 term never did, so the
    # fitter rightly called it unidentifiable; 0.2 us, the model's own default, leaves each term deciding some)
    true = {"l2_bytes_per_s": 6.0e12, "step_s": 0.2e-6, "launch_s": 4e-6}
    dram = 4.0e12
    records = []
    for what in ("f.b eval", "block eval", "block train"):
        for batch, hw, w_in, w_out, gw in ((256, 56, 32, 48, 8), (256, 28, 48, 104, 8), (256, 7, 208, 440, 8),
                                           (8, 56, 32, 48, 8), (1, 7, 208, 440, 8), (256, 14, 216, 576, 24)):
            terms = cost.launch_terms(cost.block_launches(what, batch, hw, w_in, w_out, 2, gw, 0.25, gpu="H200"))
            seconds = float(calibration.predict([np.asarray(terms)], dram, **true)[0])
            records.append({"case": f"{what} {batch} {hw}", "status": "ok", "fastregnet_s": seconds,
                            "cost_model": {"gpu": "H200", "launch_terms": terms}})
    doc = {"campaign": {"date": "2026-12-04T00:00:00+00:00", "dry_run": False},
           "parts": {"env": {"records": [
               {"case": "environment", "status": "ok", "gpu": "NVIDIA H200", "capability": "9.0",
                "torch": "2.11.0", "triton": "3.6.0",
                "sm_limits": {"sms": 132, "regs_per_sm": 65536, "smem_per_sm_bytes": 233472,
                              "threads_per_sm": 2048, "l2_bytes": 62914560}},
               {"case": "device rates bf16", "status": "ok", "copy_bandwidth_bytes_per_s": dram,
                "matmul_flops_per_s": 7e14, "matmul_dtype": "bfloat16", "measured_on": "cuda"}]},
               "models": {"records": [
                   {"case": "m", "status": "ok", "provider": p, "model": "regnet_y_400mf", "batch": 256,
                    "mode": "infer", "img_per_s": v, "spread_img_per_s": [v * 0.9, v * 1.1],
                    "peak_memory_bytes": 2**31, "wrong": False} for p, v in (("fastregnet", 30000.0),
                                                                            ("tv_channels_last", 20000.0))]},
               "microbench": {"records": records},
               "correctness": {"records": [{"case": "x", "status": "ok"}, {"case": "y", "status": "FAIL"}]}}}
    campaign = tmp_path / "campaign"
    campaign.mkdir()
    (campaign / "campaign.json").write_text(json.dumps(doc))
    (campaign / "tuned_configs.json").write_text(json.dumps(
        {"format": 1, "gpus": {"NVIDIA H200": {"grouped_conv|bfloat16|gw=24": [32, 64, 8]}}}))
    root = _project_copy(tmp_path)
    written = apply(str(campaign), str(root))

    fit = written["cost_constants"]
    assert fit["gpu"] == "H200" and all(fit["identifiable"].values())
    for name, value in true.items():
        assert fit["constants"][name] == pytest.approx(value, rel=0.05), name
    # the H200's tuning also serves any sm_90 GPU without its own section (an H100)
    table = json.loads((root / "kernels" / "tuned_configs.json").read_text())
    assert table["gpus"]["NVIDIA H200"] == table["gpus"]["sm_90"] == {"grouped_conv|bfloat16|gw=24": [32, 64, 8]}
    readme = (root / "README.md").read_text()
    section = readme.split("<!-- gpu-table:begin -->")[1].split("<!-- gpu-table:end -->")[0]
    assert "| regnet_y_400mf | 256 | infer | fastregnet | 30000 (27000-33000) | 2.0 | 1.50x |" in section
    assert "NVIDIA H200" in section and "1 FAIL, 1 ok" in section
    # the cost model reads the written constants: the fitted H200 now predicts with them
    gpus = cost.load_gpus(str(root / "fastregnet" / "data" / "cost_constants.json"))
    h200 = gpus["H200"]
    assert h200.dram_bytes_per_s == dram and h200.launch_s == pytest.approx(true["launch_s"], rel=0.05)
    assert "fitted by campaign-apply" in h200.source
    assert h200.l2_bytes == 62914560 and h200.sms == 132  # the device's reported limits, not H100's copied
    launches = cost.block_launches("block eval", 256, 28, 48, 104, 2, 8, 0.25, gpu="H200")
    step = cost._Step(h200, "bf16", True)
    for x in launches:  # the same launches, finished again with the fitted H200's constants
        step.add(dataclasses.replace(x))
    expected = float(calibration.predict([np.asarray(cost.launch_terms(launches))], dram, **true)[0])
    assert sum(x.predicted_s for x in step.launches) == pytest.approx(expected, rel=0.05)


def test_tuning_force_by_shape_key_and_observe():
    import torch

    from fastregnet.kernels import tuning

    cands = [(1, 2), (3, 4)]
    with tuning.observe() as seen:
        with tuning.force((3, 4), "fam", "k=1"):
            assert tuning.select("fam", torch.float16, "k=1", cands, (1, 2), torch.device("cpu")) == (3, 4)
            assert tuning.select("fam", torch.float16, "k=2", cands, (1, 2), torch.device("cpu")) == (1, 2)
    assert seen == {("fam", "float16", "k=1"): (cands, (1, 2)), ("fam", "float16", "k=2"): (cands, (1, 2))}
    with pytest.raises(ValueError, match="not a candidate"), tuning.force((9, 9), "fam", "k=1"):
        tuning.select("fam", torch.float16, "k=1", cands, (1, 2), torch.device("cpu"))


def test_a_gpu_without_its_own_tuned_entries_uses_its_architectures(monkeypatch):
    # campaign-apply writes an H200's tuning under "NVIDIA H200" and "sm_90"; an H100 (sm_90, no section of its own)
    # then launches with those entries, a GPU of another architecture with its heuristic
    import torch

    from fastregnet.kernels import tuning

    cands = [(1, 2), (3, 4)]
    monkeypatch.setitem(tuning._state, "table", {"NVIDIA H200": {"fam|bfloat16|k=1": [3, 4]},
                                                 "sm_90": {"fam|bfloat16|k=1": [3, 4]}})
    for name, capability, expected in (("NVIDIA H100 80GB HBM3", (9, 0), (3, 4)), ("NVIDIA A100", (8, 0), (1, 2)),
                                       ("NVIDIA H200", (9, 0), (3, 4))):
        monkeypatch.setitem(tuning._state, "names", {0: (name, tuning.arch_name(capability))})
        assert tuning.select("fam", torch.bfloat16, "k=1", cands, (1, 2), torch.device("cuda", 0)) == expected, name
