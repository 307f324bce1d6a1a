"""Weights: timm and pycls conversion, from_torchvision, builders' weights= argument, mismatch errors."""

import re

import pytest
import timm
import torch

import fastregnet
from conftest import randomize_bn, rel_err, torchvision_model
from fastregnet.convert import StateDictMismatchError
from fastregnet.weights import resolve_weights


@pytest.mark.parametrize("timm_name", ["regnety_002", "regnety_004", "regnetx_002", "regnety_008_tv",
                                       "regnetx_004_tv", "regnety_016"])
def test_timm_state_dict_converts_and_matches_outputs(timm_name):
    torch.manual_seed(0)
    tm = timm.create_model(timm_name).eval()
    randomize_bn(tm)
    model = fastregnet.create_model(timm_name).eval()
    model.load_state_dict(fastregnet.convert_timm_state_dict(tm.state_dict()))
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():  # float64: timm's init makes deep random nets amplify fp32 rounding to ~1e-4
        assert rel_err(model.double()(x), tm.double()(x)) < 1e-10


def _to_pycls(state_dict):
    """torchvision keys -> pycls keys (the inverse of the converter's table), to fabricate a pycls checkpoint."""
    inv = {"proj.0": "proj", "proj.1": "bn", "f.a.0": "f.a", "f.a.1": "f.a_bn", "f.b.0": "f.b", "f.b.1": "f.b_bn",
           "f.c.0": "f.c", "f.c.1": "f.c_bn", "f.se.fc1": "f.se.f_ex.0", "f.se.fc2": "f.se.f_ex.2"}
    out = {}
    for k, v in state_dict.items():
        m = re.match(r"trunk_output\.block(\d+)\.block\d+-(\d+)\.(.+)\.(\w+)$", k)
        if m:
            s, b, part, leaf = m.groups()
            out[f"s{s}.b{int(b) + 1}.{inv[part]}.{leaf}"] = v
        else:
            out[k.replace("stem.0", "stem.conv").replace("stem.1", "stem.bn").replace("fc.", "head.fc.")] = v
    return {"model_state": out, "epoch": 100}


def test_pycls_checkpoint_converts_with_and_without_bgr_flip():
    torch.manual_seed(1)
    src = fastregnet.create_model("RegNetY-200MF").eval()
    randomize_bn(src)
    ckpt = _to_pycls(src.state_dict())
    assert fastregnet.convert.detect_format(ckpt) == "pycls"
    x = torch.randn(2, 3, 32, 32)
    bgr = fastregnet.create_model("RegNetY-200MF").eval()
    bgr.load_state_dict(fastregnet.convert_pycls_state_dict(ckpt, bgr_to_rgb=False))
    rgb = fastregnet.create_model("RegNetY-200MF").eval()
    rgb.load_state_dict(fastregnet.convert_pycls_state_dict(ckpt))
    with torch.no_grad():
        assert rel_err(bgr(x), src(x)) < 1e-6
        assert rel_err(rgb(x.flip(1)), src(x)) < 1e-5  # RGB input to the flipped model == BGR to the original


def test_from_torchvision_copies_weights_mode_and_dtype():
    torch.manual_seed(2)
    tv = torchvision_model("regnet_x_400mf").eval().double()
    model = fastregnet.from_torchvision(tv)
    assert not model.training and model.fc.weight.dtype == torch.float64
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(model(x), tv(x)) < 1e-12


def test_builder_weights_from_path_and_state_dict(tmp_path):
    torch.manual_seed(3)
    tv = torchvision_model("regnet_y_400mf", num_classes=10)
    path = tmp_path / "w.pth"
    torch.save(tv.state_dict(), path)
    for weights in (str(path), path, tv.state_dict()):
        m = fastregnet.regnet_y_400mf(weights=weights)
        assert m.fc.out_features == 10  # taken from the weights
        assert torch.equal(m.fc.weight, tv.fc.weight)
    with pytest.raises(ValueError, match="num_classes=5 but the weights have 10 classes"):
        fastregnet.regnet_y_400mf(weights=path, num_classes=5)


def test_builder_weights_names_resolve_to_torchvision_enums():
    import torchvision.models as tvm

    assert resolve_weights("regnet_y_400mf", "IMAGENET1K_V2") == ("enum", tvm.RegNet_Y_400MF_Weights.IMAGENET1K_V2)
    assert resolve_weights("regnet_y_400mf", "RegNet_Y_400MF_Weights.DEFAULT")[1] == \
        tvm.RegNet_Y_400MF_Weights.DEFAULT
    enum = tvm.RegNet_X_1_6GF_Weights.IMAGENET1K_V1
    assert resolve_weights("regnet_x_1_6gf", enum) == ("enum", enum)
    with pytest.raises(ValueError, match="neither an existing file nor a RegNet_Y_400MF_Weights member"):
        fastregnet.regnet_y_400mf(weights="IMAGENET_V9")
    with pytest.raises(ValueError, match="for another model"):
        fastregnet.regnet_y_400mf(weights="RegNet_X_400MF_Weights.IMAGENET1K_V1")
    with pytest.raises(ValueError, match="not a torchvision model"):
        fastregnet.create_model("RegNetY-200MF", weights="IMAGENET1K_V1")


def test_mismatched_state_dict_lists_every_bad_key():
    model = fastregnet.regnet_x_400mf()
    sd = model.state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["stem.0.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(StateDictMismatchError) as e:
        model.load_state_dict(sd)
    msg = str(e.value)
    assert "missing keys (1): fc.bias" in msg
    assert "unexpected keys (1): extra.weight" in msg
    assert "stem.0.weight (checkpoint (8, 3, 3, 3), model (32, 3, 3, 3))" in msg
    with pytest.raises(StateDictMismatchError, match="timm checkpoint"):
        fastregnet.regnet_x_400mf().load_state_dict(timm.create_model("regnetx_004_tv").state_dict())
    with pytest.raises(StateDictMismatchError, match="no place in a RegNet.*s1.b1.weird.weight"):
        fastregnet.convert_timm_state_dict({"s1.b1.weird.weight": torch.zeros(1)})
    with pytest.raises(TypeError, match="weights must be"):
        fastregnet.regnet_x_400mf(weights=123)


def test_weights_files_that_are_missing_empty_or_not_checkpoints(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file '.*missing.pth' does not exist"):
        fastregnet.regnet_x_400mf(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fastregnet.regnet_x_400mf(weights="ckpt.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        fastregnet.regnet_x_400mf(weights=tmp_path / "empty.pth")
    (tmp_path / "notes.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        fastregnet.regnet_x_400mf(weights=tmp_path / "notes.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="holds a list, not a state_dict"):
        fastregnet.regnet_x_400mf(weights=tmp_path / "list.pth")
    with pytest.raises(ValueError, match="is a directory"):
        fastregnet.regnet_x_400mf(weights=tmp_path)


def test_another_models_torchvision_enum_is_refused_by_name(monkeypatch):
    import torchvision.models as tvm

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(tvm.RegNet_X_400MF_Weights.IMAGENET1K_V1.__class__, "get_state_dict", no_download)
    with pytest.raises(ValueError, match="RegNet_X_400MF_Weights.IMAGENET1K_V1 are for another model; "
                                         "regnet_y_400mf takes RegNet_Y_400MF_Weights"):
        fastregnet.regnet_y_400mf(weights=tvm.RegNet_X_400MF_Weights.IMAGENET1K_V1)


def test_converters_say_what_they_expected():
    for convert in (fastregnet.convert_timm_state_dict, fastregnet.convert_pycls_state_dict):
        with pytest.raises(TypeError, match=r"expected a (timm|pycls) state_dict .* got NoneType"):
            convert(None)
    with pytest.raises(TypeError, match="expected a torchvision RegNet .* got NoneType"):
        fastregnet.from_torchvision(None)
    with pytest.raises(TypeError, match="expected a torchvision RegNet .* got ResNet"):
        fastregnet.from_torchvision(torchvision_model("resnet18", init=False))


def test_state_dict_without_num_batches_tracked_loads_as_into_torchvision():
    tv = torchvision_model("regnet_x_400mf", init=False)
    plain = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}
    model = fastregnet.regnet_x_400mf()
    model.load_state_dict(plain)  # no metadata: BatchNorm fills the count in, as torchvision's model does
    tv.load_state_dict(plain)
    assert all(int(b) == 0 for n, b in model.named_buffers() if n.endswith("num_batches_tracked"))
    versioned = tv.state_dict()  # carries _metadata with BatchNorm version 2: the key is then required
    del versioned["stem.1.num_batches_tracked"]
    with pytest.raises(RuntimeError, match="stem.1.num_batches_tracked"):
        tv.load_state_dict(versioned)
    with pytest.raises(StateDictMismatchError, match="missing keys \\(1\\): stem.1.num_batches_tracked"):
        model.load_state_dict(versioned)
