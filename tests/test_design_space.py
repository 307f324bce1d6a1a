"""Design-space tools: samplers, width fitting, EDFs, and the tiny end-to-end study."""

import json

import numpy as np
import pytest
import torch

from fastregnet.cli import main
from fastregnet.design import MODEL_CONFIGS, generate_widths
from fastregnet.edf import compare_edfs, complexity_weights, edf, plot_edfs, summarize
from fastregnet.explore import reference_run
from fastregnet.fitting import block_widths, fit_widths
from fastregnet.sampling import SPACES, check_sample, parse_range, sample_space


@pytest.mark.parametrize("space", SPACES)
def test_samples_respect_their_space_over_many_seeds(space):
    flops = parse_range("400M")
    for seed in range(8):
        for s in sample_space(space, 5, seed=seed, flops=flops):
            assert check_sample(s) == [], (space, seed, s.to_dict())
            assert flops[0] <= s.flops <= flops[1]


@pytest.mark.parametrize("space", ["anynetx_a", "anynetx_e", "regnety"])
def test_same_seed_same_models_other_seed_other_models(space):
    a = [s.to_dict() for s in sample_space(space, 6, seed=7, params=parse_range("2M:8M"))]
    b = [s.to_dict() for s in sample_space(space, 6, seed=7, params=parse_range("2M:8M"))]
    c = [s.to_dict() for s in sample_space(space, 6, seed=8, params=parse_range("2M:8M"))]
    assert a == b and a != c
    assert all(2e6 <= r["params"] <= 8e6 for r in a)


def test_sampled_model_builds_and_runs():
    s = sample_space("regnety", 1, seed=0, flops=parse_range("50M:150M"))[0]
    model = s.build(num_classes=5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 5)
    assert sum(p.numel() for p in s.build().parameters()) == s.num_params  # the counter agrees with the model


def test_impossible_constraint_is_a_clear_error():
    with pytest.raises(ValueError, match=r"no regnetx model has flops in \[1, 2\] at 224x224: every regnetx model"):
        sample_space("regnetx", 1, flops=(1, 2))
    with pytest.raises(ValueError, match="found only 0 of 1 regnetx models"):  # reachable, but rarely drawn
        sample_space("regnetx", 1, flops=(4e8, 4e8 + 1), max_tries=200)
    with pytest.raises(ValueError, match="unknown design space"):
        sample_space("resnet", 1)


@pytest.mark.parametrize("name", [n for n in MODEL_CONFIGS if n.startswith("RegNet")])
def test_fit_recovers_parameters_that_regenerate_the_widths(name):
    cfg = MODEL_CONFIGS[name]
    widths, _, _ = generate_widths(cfg.w0, cfg.wa, cfg.wm, cfg.depth)
    fit = fit_widths(widths)
    assert fit.fit_error == 0.0
    assert generate_widths(fit.w0, fit.wa, fit.wm, fit.depth)[0] == widths


def test_fit_of_an_anynet_has_positive_error_and_sane_parameters():
    s = sample_space("anynetx_a", 1, seed=3)[0]
    fit = fit_widths(block_widths(s.params))
    assert fit.fit_error > 0 and fit.w0 % 8 == 0 and fit.wm > 1


def test_edf_by_hand():
    xs, fs = edf([3.0, 1.0, 2.0, 2.0], at=[0.5, 1.0, 1.5, 2.0, 2.5, 3.5])
    # F(e) = fraction of errors strictly below e
    assert fs.tolist() == [0.0, 0.0, 0.25, 0.25, 0.75, 1.0]
    _, fw = edf([1.0, 2.0], at=[1.5], weights=[3.0, 1.0])
    assert fw.tolist() == [0.75]
    assert complexity_weights([1, 1, 1, 100], bins=2).tolist() == [1 / 3, 1 / 3, 1 / 3, 1.0]
    cmp = compare_edfs([1.0, 1.0], [2.0, 2.0], grid=3)  # grid 1, 1.5, 2: F_a = 0, 1, 1; F_b = 0, 0, 0
    assert cmp["ks"] == 1.0 and cmp["area"] > 0


def test_edf_summary_plot_and_cli(tmp_path, capsys):
    rng = np.random.default_rng(0)
    records = [{"space": "good", "error": float(e), "flops": 4e8} for e in rng.normal(30, 2, 50)]
    records += [{"space": "bad", "error": float(e), "flops": 4e8} for e in rng.normal(35, 2, 50)]
    summary = summarize(records)
    assert summary["spaces"]["good"]["n"] == 50 and summary["comparisons"][0]["area"] > 0
    png = tmp_path / "edf.png"
    plot_edfs(records, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    path = tmp_path / "records.json"
    path.write_text(json.dumps(records))
    assert main(["edf", str(path), "--plot", str(tmp_path / "cli.png"), "--normalize-by", "flops"]) == 0
    assert "good vs bad" in capsys.readouterr().out and (tmp_path / "cli.png").exists()


def test_sample_and_fit_cli(capsys):
    assert main(["sample", "--space", "regnety", "--flops", "400M", "--n", "3", "--seed", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 3 and all(360e6 <= r["flops"] <= 440e6 and r["se_ratio"] == 0.25 for r in rows)
    assert main(["fit", "--model", "RegNetX-200MF", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["fit_error"] == 0.0


def test_reference_run_end_to_end_reduced(tmp_path):
    result = reference_run(spaces=("anynetx_e", "regnetx"), n=2, flops=(10e6, 40e6), steps=3, seed=0)
    recs = result["records"]
    assert [r["space"] for r in recs] == ["anynetx_e"] * 2 + ["regnetx"] * 2
    assert all(0 <= r["error"] <= 100 for r in recs)
    plot_edfs(recs, str(tmp_path / "ref.png"))
    assert (tmp_path / "ref.png").stat().st_size > 1000
