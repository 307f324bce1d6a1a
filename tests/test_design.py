"""Design-space math: the width rule, both rounding rules, the registry, and pycls' published complexity."""

import json
import pathlib

import pytest
from conftest import torchvision_model
from fastregnet import count_complexity, generate_widths, list_models, resolve_name
from fastregnet.design import MODEL_CONFIGS, adjust_widths_groups, make_divisible, regnet_params

REFERENCE = json.loads((pathlib.Path(__file__).parent / "pycls_reference.json").read_text())["models"]
TV_BUILDERS = list_models("regnet_*")


def test_registry_sizes():
    assert len(REFERENCE) == 24
    assert len(TV_BUILDERS) == 15
    assert set(REFERENCE) <= set(MODEL_CONFIGS)
    assert "regnet_y_128gf" in TV_BUILDERS


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_pycls_complexity_and_widths_exact(name):
    ref = REFERENCE[name]
    params = resolve_name(name).params()
    assert list(params.widths) == ref["widths"]
    assert list(params.depths) == ref["depths"]
    assert list(params.group_widths) == ref["group_widths"]
    cx = count_complexity(params, resolution=224)
    assert cx == {"flops": ref["flops"], "params": ref["params"], "acts": ref["acts"]}


def _torchvision_stages(name):
    tv = torchvision_model(name, init=False)
    out = []
    for stage in tv.trunk_output:
        first = stage[0]
        out.append((len(stage), first.f.c[0].out_channels, first.f.b[0].out_channels // first.f.b[0].groups,
                    first.f.b[0].stride[0]))
    return out


@pytest.mark.parametrize("name", TV_BUILDERS)
def test_builder_stages_equal_torchvision(name):
    p = resolve_name(name).params()
    assert list(zip(p.depths, p.widths, p.group_widths, p.strides)) == _torchvision_stages(name)


@pytest.mark.parametrize("name", ["regnet_x_400mf", "regnet_y_800mf", "regnet_y_8gf"])
def test_rounding_rules_differ_where_documented(name):
    cfg = resolve_name(name)
    tv = regnet_params(cfg.depth, cfg.w0, cfg.wa, cfg.wm, cfg.group_width, rule="torchvision")
    pycls = regnet_params(cfg.depth, cfg.w0, cfg.wa, cfg.wm, cfg.group_width, rule="pycls")
    assert tv.widths != pycls.widths


def test_rounding_rules_agree_elsewhere():
    differ = []
    for name in TV_BUILDERS:
        cfg = resolve_name(name)
        args = (cfg.depth, cfg.w0, cfg.wa, cfg.wm, cfg.group_width)
        if regnet_params(*args, rule="torchvision") != regnet_params(*args, rule="pycls"):
            differ.append(name)
    assert sorted(differ) == ["regnet_x_400mf", "regnet_y_800mf", "regnet_y_8gf"]


def test_width_rule_by_hand():
    # d=4, w0=24, wa=24, wm=2: u = 24, 48, 72, 96 -> s = 0, 1, 2 (log2 3 = 1.58), 2 -> w = 24, 48, 96, 96
    block, widths, depths = generate_widths(24, 24, 2.0, 4)
    assert block == [24, 48, 96, 96] and widths == [24, 48, 96] and depths == [1, 1, 2]


def test_make_divisible_and_pycls_rounding():
    assert make_divisible(100, 8) == 104          # nearest multiple
    assert make_divisible(10, 8) == 16           # 8 < 0.9 * 10, so bumped up a step
    assert make_divisible(20, 16) == 32           # 16 < 0.9 * 20 -> bumped up
    # pycls rounds 20 to the nearest multiple of 16 (16); torchvision's never drops more than 10% (32)
    assert adjust_widths_groups([20], [1.0], [16], "pycls") == ([16], [16])
    assert adjust_widths_groups([20], [1.0], [16], "torchvision") == ([32], [16])
    # the group width is capped at the bottleneck width
    assert adjust_widths_groups([24], [1.0], [64], "pycls") == ([24], [24])


@pytest.mark.parametrize("bad,match", [(dict(w0=20), "w0 must be a multiple of 8"), (dict(wm=1.0), "wm must be > 1"),
                                       (dict(wa=-1.0), "wa must be >= 0"), (dict(depth=0), "depth must be >= 1")])
def test_generate_widths_rejects_bad_settings(bad, match):
    args = dict(w0=24, wa=24.0, wm=2.0, depth=4) | bad
    with pytest.raises(ValueError, match=match):
        generate_widths(**args)


@pytest.mark.parametrize("alias,canonical", [("regnety_040", "RegNetY-4.0GF"), ("RegNetY-4.0GF", "RegNetY-4.0GF"),
                                             ("regnet_y_400mf", "regnet_y_400mf"), ("regnetx_004_tv", "regnet_x_400mf"),
                                             ("timm/regnety_032.pycls_in1k", "RegNetY-3.2GF")])
def test_name_resolution(alias, canonical):
    assert resolve_name(alias).name == canonical


def test_unknown_name_suggests():
    with pytest.raises(ValueError, match="unknown RegNet model 'regnet_y_400m'.*regnet_y_400mf"):
        resolve_name("regnet_y_400m")
