"""fastregnet's models selected through torchvision's and timm's own registries after `import fastregnet`, as their
training scripts select models, under names that cannot shadow theirs."""

import pathlib
import subprocess
import sys

import pytest
import torch

import fastregnet
from fastregnet.registry import PREFIX, timm_names, torchvision_names


def test_torchvision_get_model_builds_fastregnet():
    import torchvision

    model = torchvision.models.get_model("fastregnet_regnet_y_400mf", num_classes=10)
    assert isinstance(model, fastregnet.RegNet) and model.fc.out_features == 10
    assert set(torchvision_names()) <= set(torchvision.models.list_models())
    weights_enum = torchvision.models.get_model_weights("fastregnet_regnet_y_400mf")  # torchvision's, which we load
    assert weights_enum is torchvision.models.RegNet_Y_400MF_Weights
    # torchvision's own builders are untouched
    assert type(torchvision.models.get_model("regnet_y_400mf")).__module__.startswith("torchvision")
    with torch.no_grad():
        assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 10)


def test_timm_create_model_builds_fastregnet():
    import timm

    model = timm.create_model("fastregnet_regnety_004", pretrained=False, num_classes=7, drop_path_rate=0.1)
    assert isinstance(model, fastregnet.RegNet) and model.fc.out_features == 7
    features = timm.create_model("fastregnet_regnetx_004_tv", features_only=True, out_indices=(2, 4))
    assert isinstance(features, fastregnet.models.RegNetFeatures)
    as_dict = timm.create_model("fastregnet_regnety_004", features_only=True, feature_cls="dict", out_indices=(1,),
                                act_layer="silu")
    with torch.no_grad():
        assert list(as_dict.eval()(torch.randn(1, 3, 64, 64))) == ["1"]
    assert set(timm_names()) <= set(timm.list_models("fastregnet_*"))
    assert type(timm.create_model("regnety_004")).__module__.startswith("timm")  # timm's own name is timm's
    with pytest.raises(TypeError, match="pretrained_cfg_overlay"):
        timm.create_model("fastregnet_regnety_004", pretrained_cfg_overlay={"num_classes": 3})


def test_every_name_is_prefixed():
    names = torchvision_names() + timm_names()
    assert len(names) == len(set(names)) and all(n.startswith(PREFIX) for n in names)
    assert "fastregnet_regnet_x_32gf" in names and "fastregnet_regnety_320" in names


@pytest.mark.parametrize("order", ["fastregnet first", "libraries first"])
def test_registration_in_either_import_order_and_import_fastregnet_imports_neither(order):
    # torchvision imports triton: `import fastregnet` must not (the GPU campaign's dry run sets TRITON_INTERPRET
    # before triton's import), and registering must not depend on which was imported first
    code = """
import sys
{first}
{second}
import timm, torchvision
print(type(timm.create_model("fastregnet_regnety_002", num_classes=3)).__module__)
print(type(torchvision.models.get_model("fastregnet_regnet_x_400mf", num_classes=3)).__module__)
"""
    fastregnet_first = ("import fastregnet; assert not {'timm', 'torchvision', 'triton'} & set(sys.modules), "
                        "sorted({'timm', 'torchvision', 'triton'} & set(sys.modules))")
    libraries_first = "import torchvision, timm"
    first, second = ((fastregnet_first, libraries_first) if order == "fastregnet first"
                     else (libraries_first, "import fastregnet"))
    proc = subprocess.run([sys.executable, "-c", code.format(first=first, second=second)], capture_output=True,
                          text=True, cwd=pathlib.Path(__file__).parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["fastregnet.models", "fastregnet.models"]
