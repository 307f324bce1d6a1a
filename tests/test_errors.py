"""Bad input gets a clear error before any kernel sees it."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch

import fastregnet
from fastregnet import fitting, sampling


@pytest.fixture(scope="module")
def model():
    return fastregnet.regnet_x_400mf().eval()


@pytest.mark.parametrize("x,err,match", [
    (torch.randn(3, 32, 32), ValueError, r"expected a 4-D input .* got shape \(3, 32, 32\)"),
    (torch.randn(1, 1, 32, 32), ValueError, "expected 3 input channels, got 1"),
    (torch.randint(0, 255, (1, 3, 32, 32), dtype=torch.uint8), TypeError, "floating-point input, got torch.uint8"),
    (torch.randn(1, 3, 0, 64), ValueError, r"empty spatial size \(0, 64\)"),
    (torch.randn(1, 3, 32, 32, dtype=torch.float64), TypeError, "does not match the model's torch.float32"),
    ("not a tensor", TypeError, "expected a torch.Tensor"),
])
def test_bad_input_raises_clear_error(model, x, err, match):
    with pytest.raises(err, match=match):
        model(x)


def test_batch_one_training_on_1x1_maps_is_refused(model):
    with pytest.raises(ValueError, match="BatchNorm needs more than one value per channel"):
        model.train()(torch.randn(1, 3, 32, 32))
    model.eval()


def test_unknown_model_and_bad_backend():
    with pytest.raises(ValueError, match="unknown RegNet model 'resnet50'"):
        fastregnet.create_model("resnet50")
    with pytest.raises(ValueError, match="unknown fastregnet backend 'cuda'"):
        fastregnet.set_backend("cuda")


def test_forward_intermediates_and_reset_classifier_reject_bad_arguments(model):
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert len(model.forward_intermediates(x, indices=[-1, 0], intermediates_only=True)) == 2
        for bad in ([5], [0, 7], [-6]):
            with pytest.raises(ValueError, match="indices entry"):
                model.forward_intermediates(x, indices=bad)
        with pytest.raises(ValueError, match="indices=6: there are 5 feature levels"):
            model.forward_intermediates(x, indices=6)
        with pytest.raises(ValueError, match="output_fmt must be 'NCHW' or 'NHWC'"):
            model.forward_intermediates(x, output_fmt="NLC")
        with pytest.raises(TypeError, match="indices entry must be an integer"):
            model.forward_intermediates(x, indices=[1.0])
        with pytest.raises(TypeError, match="indices must be None, an int or a sequence of ints, got bool"):
            model.forward_intermediates(x, indices=True)
    for bad, err in ((-1, ValueError), (2.5, TypeError)):
        with pytest.raises(err, match="num_classes"):
            fastregnet.regnet_x_400mf().reset_classifier(bad)


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(depth=16.5), TypeError, "depth must be an integer"),
    (dict(depth=0), ValueError, "depth must be >= 1"),
    (dict(w0=float("nan")), ValueError, "w0 must be finite"),
    (dict(wa=float("inf")), ValueError, "wa must be finite"),
    (dict(wa=-1.0), ValueError, "wa must be >= 0"),
    (dict(wm=1.0), ValueError, "wm must be > 1"),
    (dict(wm=float("nan")), ValueError, "wm must be finite"),
    (dict(group_width=0), ValueError, "group_width must be >= 1"),
    (dict(group_width=-8), ValueError, "group_width must be >= 1"),
    (dict(group_width=8.0), TypeError, "group_width must be an integer"),
    (dict(bottleneck_multiplier=0.0), ValueError, "bottleneck_multiplier must be > 0"),
    (dict(bottleneck_multiplier=-1.0), ValueError, "bottleneck_multiplier must be > 0"),
    (dict(se_ratio=-0.25), ValueError, "se_ratio must be >= 0"),
    (dict(se_ratio=float("nan")), ValueError, "se_ratio must be finite"),
])
def test_design_parameters_are_checked_before_building(kwargs, err, match):
    args = dict(depth=16, w0=48, wa=27.89, wm=2.09, group_width=8) | kwargs
    with pytest.raises(err, match=match):
        fastregnet.RegNetY(**args)
    with pytest.raises(err, match=match):
        fastregnet.regnet_params(**args)


def test_stage_lists_and_resolution_are_checked():
    with pytest.raises(TypeError, match=r"depths\[1\] must be an integer"):
        fastregnet.RegNet(depths=[1, 2.5], widths=[16, 32], group_widths=8)
    with pytest.raises(ValueError, match=r"group_widths\[0\] must be >= 1"):
        fastregnet.RegNet(depths=[1], widths=[16], group_widths=0)
    with pytest.raises(ValueError, match=r"strides\[0\] must be 1 or 2"):
        fastregnet.RegNet(depths=[1], widths=[16], group_widths=8, strides=3)
    with pytest.raises(ValueError, match="se_ratio must be >= 0"):
        fastregnet.RegNet(depths=[1], widths=[16], group_widths=8, se_ratio=-1)
    params = fastregnet.resolve_name("regnety_002").params()
    for bad, err in ((-224, ValueError), (0, ValueError), (22.4, TypeError)):
        with pytest.raises(err, match="resolution"):
            fastregnet.count_complexity(params, bad)
        with pytest.raises(err, match="resolution"):
            fastregnet.stage_complexity(params, bad)


def _run_python(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=300)


def test_bad_backend_variable_is_a_one_line_cli_error():
    result = _run_python(["-m", "fastregnet.cli", "list"], {"FASTREGNET_BACKEND": "junk"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr[-2000:]
    assert "unknown fastregnet backend 'junk'" in result.stderr and "FASTREGNET_BACKEND" in result.stderr


@pytest.mark.parametrize("content", ["[]", '{"NVIDIA X": []}', '{"NVIDIA X": {"k": "notalist"}}', "{not json"])
def test_wrong_shaped_autotune_cache_is_ignored_like_a_corrupt_one(tmp_path, monkeypatch, content):
    # Ignored with a warning naming the file (the next tuning result rewrites it), as an unparseable file is.
    from fastregnet.kernels import tuning

    path = tmp_path / "autotune.json"
    path.write_text(content)
    monkeypatch.setenv("FASTREGNET_AUTOTUNE_CACHE", str(path))
    monkeypatch.setattr(tuning, "_state", {})
    with pytest.warns(UserWarning, match=re.escape(str(path))):
        assert tuning._load_cache() == {}


def test_autotune_cache_path_that_is_a_directory_is_refused(tmp_path, monkeypatch):
    from fastregnet.kernels import tuning

    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv("FASTREGNET_AUTOTUNE_CACHE", str(folder))
    monkeypatch.setattr(tuning, "_state", {})
    match = f"{re.escape(str(folder))}.*is a directory.*FASTREGNET_AUTOTUNE_CACHE"
    with pytest.raises(IsADirectoryError, match=match):
        tuning._load_cache()
    with pytest.raises(IsADirectoryError, match=match):
        tuning._save_cache({"NVIDIA X": {"k": [1, 2]}})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]  # no .tmp file left behind


def test_explain_fusion_refuses_what_it_cannot_explain():
    import torchvision

    with pytest.raises(TypeError, match="explain_fusion expects an nn.Module, got NoneType"):
        fastregnet.explain_fusion(None)
    with pytest.raises(ValueError, match="ResNet contains no fastregnet RegNet blocks: nothing to fuse"):
        fastregnet.explain_fusion(torchvision.models.resnet18())
    model = fastregnet.regnet_y_400mf()
    assert len(fastregnet.explain_fusion(model)) == 1 + 16 * 4 + 4  # stem, blocks and their parts, projections
    assert [r["module"] for r in fastregnet.explain_fusion(model.trunk_output.block1)][:2] == ["block1-0",
                                                                                              "block1-0.proj"]
    assert fastregnet.explain_fusion(model.trunk_output.block1[0])[0]["module"] == ""


def test_from_torchvision_refuses_timm_models_and_replaced_heads():
    import timm
    import torchvision

    with pytest.raises(TypeError, match=r"timm.*fastregnet.create_model\('regnety_004'\).*convert_timm_state_dict"):
        fastregnet.from_torchvision(timm.create_model("regnety_004", pretrained=False))
    tv = torchvision.models.regnet_y_400mf()
    tv.fc = torch.nn.Identity()
    with pytest.raises(TypeError, match="fc is Identity, not an nn.Linear"):
        fastregnet.from_torchvision(tv)


@pytest.mark.parametrize("call,err,match", [
    (lambda: fastregnet.design.adjust_widths_groups([16, 32, 64], [1.0, 1.0], [8, 8, 8]), ValueError,
     "bottleneck_multipliers has 2 entries, widths has 3"),
    (lambda: fastregnet.count_complexity(fastregnet.resolve_name("regnety_002").params(), num_classes=-5),
     ValueError, "num_classes must be >= 0, got -5"),
    (lambda: fastregnet.stage_complexity(fastregnet.resolve_name("regnety_002").params(), in_channels=0),
     ValueError, "in_channels must be >= 1, got 0"),
    (lambda: sampling.sample_space("regnetx", 2.5), TypeError, "n must be an integer, got 2.5"),
    (lambda: sampling.parse_range("inf"), ValueError, "cannot read an amount from 'inf'"),
    (lambda: sampling.parse_range((1, 2, 3)), ValueError, r"a complexity range is \(low, high\), got \(1, 2, 3\)"),
    (lambda: sampling.parse_range((1, float("nan"))), ValueError, "high must be finite"),
    (lambda: fitting.fit_widths([16.7, 32]), TypeError, r"widths\[0\] must be an integer, got 16.7"),
    (lambda: sampling.sample_space("anynetx_a", 1, params=(1, 2)), ValueError,
     r"no anynetx_a model has params in \[1, 2\]"),
])
def test_design_space_helpers_reject_bad_values(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_sample_cli_refuses_an_unreachable_range_up_front(capsys):
    from fastregnet.cli import main

    # AnyNetX_A's smallest model (4 stages of one 8-wide block) has tens of thousands of parameters.
    assert main(["sample", "--space", "anynetx_a", "--params", "1:2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no anynetx_a model has params in [1, 2]" in err
    lo, hi = (int(v.replace(",", "")) for v in re.search(r"between ([\d,]+) and ([\d,]+)", err).groups())
    assert 1e4 < lo < 1e5 and hi > 1e7
    for s in sampling.sample_space("anynetx_a", 20, seed=0):
        assert lo <= s.num_params <= hi


def test_edf_cli_refuses_a_non_finite_error(tmp_path, capsys):
    from fastregnet.cli import main

    path = tmp_path / "records.json"
    path.write_text(json.dumps([{"space": "a", "error": 30.0}, {"space": "a", "error": float("nan")}]))
    assert main(["edf", str(path)]) == 2
    assert f"record 1 of {path}: error must be finite, got nan" in capsys.readouterr().err
    csv = tmp_path / "records.csv"
    csv.write_text("space,error\na,30\nb,inf\n")
    assert main(["edf", str(csv)]) == 2
    assert f"record 1 of {csv}: error must be finite, got inf" in capsys.readouterr().err
    path.write_text(json.dumps([{"space": "a", "error": 30.0, "flops": 4e8}, {"space": "a", "error": 31.0}]))
    assert main(["edf", str(path), "--normalize-by", "flops"]) == 2  # was a KeyError traceback
    assert "record 1 needs a positive flops to normalize by, got nothing" in capsys.readouterr().err


@pytest.mark.skipif(fastregnet.backend._triton_import_error() is not None, reason="triton does not import")
def test_triton_interpret_set_after_triton_was_imported_is_a_clear_error():
    # Triton's own @jit library (tl.sigmoid, tl.cdiv, ...) is defined when triton is imported, so the kernels,
    # defined later under the variable, would run interpreted against a compiled library and fail inside Triton.
    code = textwrap.dedent("""
        import os
        import triton
        os.environ["TRITON_INTERPRET"] = "1"
        import torch, fastregnet
        from fastregnet.backend import BackendError
        try:
            with fastregnet.use_backend("triton"), torch.no_grad():
                fastregnet.regnet_x_400mf().eval()(torch.randn(1, 3, 32, 32))
            print("ran")
        except BackendError as e:
            print("BackendError:", e)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert "BackendError:" in result.stdout, result.stderr[-2000:]
    assert "TRITON_INTERPRET=1 was set after triton was imported" in result.stdout
    assert "set it before triton is first imported" in result.stdout
