"""Bad input gets a clear error before any kernel sees it."""

import pytest
import torch

import fastregnet


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
