"""timm's model contract, checked on fastregnet names in the spirit of timm's generic model tests (written here
against the contract, not copied): forward and backward, pretrained_cfg consistency, features_only, 
forward_intermediates, reset_classifier with every pool type, fx, tagged names, in_chans, pruning; and
agreement with timm's own RegNet where timm defines the answer (feature levels, preprocessing, intermediates)."""

import pytest
import torch
from torch import nn

import fastregnet
from fastregnet.features import RegNetFeatures
from conftest import rel_err

NAMES = ["regnety_004", "regnety_008", "regnetx_002"]
SIZE = 64  # small images keep the suite fast; the 224 cfg checks run once per model


def _get(model, dotted):
    for part in dotted.split("."):
        model = getattr(model, part)
    return model


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


def test_forward_and_backward(name):
    torch.manual_seed(0)
    model = fastregnet.create_model(name, num_classes=7).train()
    x = torch.randn(2, 3, SIZE, SIZE, requires_grad=True)
    out = model(x)
    assert out.shape == (2, 7) and not torch.isnan(out).any()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_pretrained_cfg_is_consistent(name):
    model = fastregnet.create_model(name).eval()
    cfg = model.pretrained_cfg
    assert model.default_cfg is cfg
    for key in ("architecture", "tag", "num_classes", "input_size", "pool_size", "crop_pct", "interpolation",
                "mean", "std", "first_conv", "classifier"):
        assert key in cfg, key
    assert cfg["architecture"] == name and cfg["num_classes"] == model.num_classes == 1000
    first_conv = _get(model, cfg["first_conv"])
    assert isinstance(first_conv, nn.Conv2d) and first_conv.in_channels == cfg["input_size"][0]
    classifier = _get(model, cfg["classifier"])
    assert isinstance(classifier, nn.Linear) and classifier.out_features == cfg["num_classes"]
    assert model.head_hidden_size == model.num_features == classifier.in_features
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        assert model.forward_features(x).shape[-2:] == cfg["pool_size"]
        model.reset_classifier(0)
        assert model(x).shape == (1, model.num_features)
        model.reset_classifier(0, "")
        assert model(x).shape == (1, model.num_features, *cfg["pool_size"])


def test_preprocessing_and_feature_levels_match_timm(name):
    timm = pytest.importorskip("timm")
    ours = fastregnet.create_model(name)
    theirs = timm.create_model(name)
    for key in ("mean", "std", "input_size", "pool_size"):
        assert tuple(ours.pretrained_cfg[key]) == tuple(theirs.pretrained_cfg[key]), key
    assert [f["num_chs"] for f in ours.feature_info] == [f["num_chs"] for f in theirs.feature_info]
    assert [f["reduction"] for f in ours.feature_info] == [f["reduction"] for f in theirs.feature_info]


def test_forward_intermediates_equal_timm_s_with_the_same_weights(name):
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    theirs = timm.create_model(name).eval()
    ours = fastregnet.create_model(name, weights=theirs.state_dict()).eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        for indices in (None, 2, [0, 2, -1]):
            ref_final, ref_feats = theirs.forward_intermediates(x, indices=indices)
            final, feats = ours.forward_intermediates(x, indices=indices)
            assert len(feats) == len(ref_feats)
            for f, r in zip(feats, ref_feats):
                assert rel_err(f, r) < 1e-5
        assert rel_err(final, ref_final) < 1e-5
        level1 = ours.forward_intermediates(x, indices=[1], intermediates_only=True)[0]
        nhwc = ours.forward_intermediates(x, indices=[1], output_fmt="NHWC", intermediates_only=True)[0]
        assert torch.equal(nhwc, level1.permute(0, 2, 3, 1)) and nhwc.shape[-1] == ours.feature_info[1]["num_chs"]
        early_final, early = ours.forward_intermediates(x, indices=[1], stop_early=True)
        assert early_final.shape[1] == ours.feature_info[1]["num_chs"] and len(early) == 1


def test_features_only(name):
    torch.manual_seed(2)
    full = fastregnet.create_model(name).eval()
    feat = fastregnet.create_model(name, features_only=True, weights=full.state_dict()).eval()
    assert isinstance(feat, RegNetFeatures)
    assert feat.feature_info.channels() == [f["num_chs"] for f in full.feature_info]
    assert feat.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert feat.feature_info.module_name()[0] == "stem"
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        outs = feat(x)
        expected = full.forward_intermediates(x, intermediates_only=True)
    assert [o.shape[1] for o in outs] == feat.feature_info.channels()
    for o, e in zip(outs, expected):
        assert torch.equal(o, e)
    assert feat.pretrained_cfg["architecture"] == name
    assert fastregnet.create_model(name, features_only=True, out_indices=2).out_indices == (3, 4)  # the last 2
    some = fastregnet.create_model(name, features_only=True, out_indices=(1, 3))
    assert some.feature_info.channels() == [full.feature_info[1]["num_chs"], full.feature_info[3]["num_chs"]]
    assert len(some.trunk_output) == 3  # stage 4 is not built into the body
    assert set(some.state_dict()) < set(full.state_dict())
    some.load_state_dict({k: v for k, v in full.state_dict().items() if k in some.state_dict()})
    with torch.no_grad():
        assert [o.shape[-1] for o in some.eval()(x)] == [SIZE // 4, SIZE // 16]


@pytest.mark.parametrize("pool,mult", [("avg", 1), ("max", 1), ("avgmax", 1), ("catavgmax", 2)])
def test_reset_classifier_with_every_pool_type(pool, mult):
    torch.manual_seed(3)
    model = fastregnet.create_model("regnetx_002").eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    model.reset_classifier(5, pool)
    assert model.fc.in_features == mult * model.num_features and model.global_pool == pool
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        expected = {"avg": feats.mean((2, 3)), "max": feats.amax((2, 3)),
                    "avgmax": 0.5 * (feats.mean((2, 3)) + feats.amax((2, 3))),
                    "catavgmax": torch.cat((feats.mean((2, 3)), feats.amax((2, 3))), 1)}[pool]
        assert rel_err(pooled, expected) < 1e-6 and model(x).shape == (2, 5)
    built = fastregnet.create_model("regnetx_002", global_pool=pool, num_classes=3)
    assert built.fc.in_features == mult * built.num_features
    with pytest.raises(ValueError, match="global_pool must be one of"):
        model.reset_classifier(5, "mean")
    with pytest.raises(ValueError, match='use num_classes=0'):
        model.reset_classifier(5, "")


def test_tagged_names_and_their_cfgs():
    tv2 = fastregnet.create_model("regnety_004.tv2_in1k").pretrained_cfg
    assert tv2["tag"] == "tv2_in1k" and tv2["weights"] == "RegNet_Y_400MF_Weights.IMAGENET1K_V2"
    assert tv2["interpolation"] == "bilinear" and abs(tv2["crop_pct"] - 224 / 232) < 1e-9
    assert fastregnet.create_model("regnety_004").pretrained_cfg["tag"] == "tv2_in1k"  # the first tag, as timm
    pycls = fastregnet.create_model("regnetx_002.pycls_in1k").pretrained_cfg
    assert pycls["tag"] == "pycls_in1k" and pycls["hf_hub_id"] == "timm/regnetx_002.pycls_in1k"
    assert fastregnet.create_model("regnetx_002").pretrained_cfg["tag"] == "pycls_in1k"  # no torchvision twin
    assert fastregnet.create_model("regnetx_004_tv.tv_in1k").pretrained_cfg["torchvision_builder"] == \
        "regnet_x_400mf"
    assert fastregnet.create_model("RegNetY-1.6GF").pretrained_cfg["architecture"] == "RegNetY-1.6GF"
    with pytest.raises(ValueError, match="regnetx_002 has no 'tv2_in1k' weights; its tags: pycls_in1k"):
        fastregnet.create_model("regnetx_002.tv2_in1k")
    with pytest.raises(ValueError, match="give either weights="):
        fastregnet.create_model("regnetx_002", weights={}, pretrained=True)


def test_in_chans_builds_and_adapts_weights():
    torch.manual_seed(4)
    rgb = fastregnet.create_model("regnetx_002").eval()
    gray = fastregnet.create_model("regnetx_002", in_chans=1, weights=rgb.state_dict()).eval()
    assert gray.pretrained_cfg["input_size"] == (1, 224, 224)
    assert torch.allclose(gray.stem[0].weight, rgb.stem[0].weight.sum(1, keepdim=True))
    five = fastregnet.create_model("regnetx_002", in_chans=5, weights=rgb.state_dict()).eval()
    w = rgb.stem[0].weight
    assert torch.allclose(five.stem[0].weight, torch.cat((w, w[:, :2]), 1) * 0.6)  # tiled RGB, scaled by 3/5
    six = fastregnet.create_model("regnetx_002", in_chans=6, weights=rgb.state_dict()).eval()
    x = torch.full((1, 3, SIZE, SIZE), 0.7)
    with torch.no_grad():
        # a constant image gives the same activations on 1 or 3k channels
        assert rel_err(gray(x[:, :1]), rgb(x)) < 1e-5
        assert rel_err(six(torch.full((1, 6, SIZE, SIZE), 0.7)), rgb(x)) < 1e-5
        assert five(torch.randn(1, 5, SIZE, SIZE)).shape == (1, 1000)
    with pytest.raises(ValueError, match="expected 1 input channels, got 3"):
        gray(x)


def test_pretrained_keeps_a_fresh_classifier_for_other_num_classes():
    from fastregnet.weights import apply_weights

    torch.manual_seed(5)
    source = fastregnet.create_model("regnetx_002")
    target = fastregnet.create_model("regnetx_002", num_classes=10)
    fresh = target.fc.weight.detach().clone()
    apply_weights(target, ("state_dict", source.state_dict()), fresh_classifier=True)
    assert torch.equal(target.fc.weight, fresh)
    assert torch.equal(target.stem[0].weight, source.stem[0].weight)
    with pytest.raises(Exception, match="fc.weight"):
        apply_weights(fastregnet.create_model("regnetx_002", num_classes=10), ("state_dict", source.state_dict()))


def test_prune_intermediate_layers():
    torch.manual_seed(6)
    model = fastregnet.create_model("regnety_004").eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert model.prune_intermediate_layers([1, 2]) == [1, 2]
    assert not any(k.startswith(("trunk_output.block3", "trunk_output.block4", "fc")) for k in model.state_dict())
    assert model.num_features == model.feature_info[2]["num_chs"]
    with torch.no_grad():
        out = model(x)
        got = model.forward_intermediates(x, indices=[1, 2], intermediates_only=True)
    assert torch.equal(out, expected[1])
    for g, e in zip(got, expected):
        assert torch.equal(g, e)


@pytest.mark.parametrize("indices", [1, [4], [1, 2]])
def test_prune_intermediate_layers_keeping_the_head_as_timm(indices):
    # prune_head=False keeps a working classifier while every stage stays; once a stage goes the head goes too
    # (it was sized for the last stage), as in timm's RegNet
    import timm

    x = torch.randn(2, 3, SIZE, SIZE)
    shapes = []
    for model in (fastregnet.create_model("regnety_004"), timm.create_model("regnety_004")):
        model.eval()
        with torch.no_grad():
            before = model(x)
        taken = model.prune_intermediate_layers(indices, prune_head=False)
        with torch.no_grad():
            after = model(x)
        if after.shape == before.shape:
            assert torch.equal(after, before)
        shapes.append((taken, tuple(after.shape), model.num_classes, model.num_features))
    assert shapes[0] == shapes[1]


def test_misc_timm_hooks():
    model = fastregnet.create_model("regnety_004")
    assert model.no_weight_decay() == set()
    assert model.group_matcher()["stem"] == r"^stem"
    assert not model.grad_checkpointing
    model.set_grad_checkpointing()
    assert model.grad_checkpointing and all(stage.grad_checkpointing for stage in model.trunk_output)
    model.set_grad_checkpointing(False)
    assert not model.grad_checkpointing


def test_fx_feature_extraction_on_timm_names(name):
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    model = fastregnet.create_model(name).eval()
    train_nodes, eval_nodes = get_graph_node_names(model)
    assert train_nodes == eval_nodes and "trunk_output.block4.block4-0.f.b" in eval_nodes
    levels = [f["module"] for f in model.feature_info]
    extractor = create_feature_extractor(model, {m: str(i) for i, m in enumerate(levels)})
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        got = extractor(x)
        expected = model.forward_intermediates(x, intermediates_only=True)
    for i, e in enumerate(expected):
        assert rel_err(got[str(i)], e) < 1e-6


@pytest.mark.parametrize("feature_cls", ["list", "hook", "getter", "dict"])
def test_feature_cls_and_feature_cfg_as_timm(feature_cls):
    import timm

    x = torch.randn(1, 3, SIZE, SIZE)
    outputs = []
    for create in (fastregnet.create_model, timm.create_model):
        plain = create("regnety_004", features_only=True, feature_cls=feature_cls, out_indices=(0, 2, 4)).eval()
        via_cfg = create("regnety_004", features_only=True,
                         feature_cfg={"feature_cls": feature_cls, "out_indices": (0, 2, 4)}).eval()
        with torch.no_grad():
            a, b = plain(x), via_cfg(x)
        assert type(a) is type(b)
        outputs.append(a)
    ours, theirs = outputs
    if feature_cls == "dict":
        assert list(ours) == list(theirs) == ["0", "2", "4"]
        ours, theirs = list(ours.values()), list(theirs.values())
    assert isinstance(ours, list) and [t.shape for t in ours] == [t.shape for t in theirs]


def test_act_layer_builds_every_activation_as_timm():
    import timm

    ours = fastregnet.create_model("regnety_004", act_layer="silu")
    theirs = timm.create_model("regnety_004", act_layer="silu")
    count = lambda m, cls: sum(type(mod) is cls for mod in m.modules())  # noqa: E731
    assert count(ours, nn.SiLU) == count(theirs, nn.SiLU) > 0 and count(ours, nn.ReLU) == count(theirs, nn.ReLU)
    assert fastregnet.explain_fusion(ours)[0]["path"] == "modules"  # SiLU is not the fused ReLU
    with torch.no_grad():
        assert torch.isfinite(ours.eval()(torch.randn(1, 3, SIZE, SIZE))).all()
    assert count(fastregnet.create_model("regnety_004", act_layer=nn.ReLU6), nn.ReLU6) == count(theirs, nn.SiLU)
    gelu_ours, gelu_theirs = (create("regnety_004", act_layer=nn.GELU) for create in (fastregnet.create_model,
                                                                                        timm.create_model))
    assert count(gelu_ours, nn.GELU) == count(gelu_theirs, nn.GELU) > 0  # built without inplace, as timm does
    with pytest.raises(ValueError, match="unknown act_layer 'gelu_tanh'"):
        fastregnet.create_model("regnety_004", act_layer="gelu_tanh")
    with pytest.raises(ValueError, match="unknown feature_cls 'bogus'"):
        fastregnet.create_model("regnety_004", features_only=True, feature_cls="bogus")
    with pytest.raises(TypeError, match="feature_cfg keys"):
        fastregnet.create_model("regnety_004", features_only=True, feature_cfg={"flatten_sequential": True})


def test_feature_keyword_arguments_overwrite_feature_cfg_as_timm():
    import timm

    x = torch.randn(1, 3, SIZE, SIZE)
    kinds = []
    for create in (fastregnet.create_model, timm.create_model):
        model = create("regnety_004", features_only=True, feature_cls="DICT", out_indices=(1, 3),
                       feature_cfg={"feature_cls": "list", "out_indices": (0,)}).eval()
        with torch.no_grad():
            out = model(x)
        kinds.append((type(out).__name__, list(out)))
    assert kinds[0] == kinds[1] == ("OrderedDict", ["1", "3"])
