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
    (torch.randn(1, 3, 16, 64), ValueError, r"too small: height and width must be at least 32"),
    (torch.randn(1, 3, 32, 32, dtype=torch.float64), TypeError, "does not match the model's torch.float32"),
    (torch.randn(0, 3, 32, 32), ValueError, "empty batch"),
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
