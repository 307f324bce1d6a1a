"""torchvision's norm_layer / activation arguments, frozen BatchNorm (fused as an eval BN in every mode), and the
detection recipe: a fastregnet body with FrozenBatchNorm2d in torchvision's FPN + Faster R-CNN, equal to the same
recipe on torchvision's RegNet."""

from functools import partial

import pytest
import torch
from torch import nn

import fastregnet
from conftest import DEVICE, TINY_SPEC, rel_err

BACKENDS = ["auto", "triton"]


def _frozen_twins(seed=0):
    from torchvision.models.regnet import BlockParams
    from torchvision.models.regnet import RegNet as TorchvisionRegNet
    from torchvision.ops.misc import FrozenBatchNorm2d

    spec = TINY_SPEC
    n = len(spec["depths"])
    params = BlockParams(spec["depths"], spec["widths"], [spec["group_widths"]] * n, [1.0] * n, [2] * n,
                         spec["se_ratio"])
    torch.manual_seed(seed)
    tv = TorchvisionRegNet(params, num_classes=spec["num_classes"], stem_width=spec["stem_width"],
                           norm_layer=FrozenBatchNorm2d)
    for m in tv.modules():
        if isinstance(m, FrozenBatchNorm2d):
            m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2), m.running_var.uniform_(0.5, 1.5)
    ours = fastregnet.RegNet(**spec, norm_layer=FrozenBatchNorm2d)
    ours.load_state_dict(tv.state_dict())
    return tv.to(DEVICE), ours.to(DEVICE)


def test_builders_take_norm_layer_and_activation():
    eps3 = fastregnet.regnet_x_400mf(norm_layer=partial(nn.BatchNorm2d, eps=1e-3))
    assert {m.eps for m in eps3.modules() if isinstance(m, nn.BatchNorm2d)} == {1e-3}
    sync = fastregnet.regnet_y_400mf(norm_layer=nn.SyncBatchNorm)
    assert not any(type(m) is nn.BatchNorm2d for m in sync.modules())
    assert sum(type(m) is nn.SyncBatchNorm for m in sync.modules()) == 1 + 16 * 3 + 4  # stem, a/b/c, projections
    silu = fastregnet.create_model("regnety_004", activation=nn.SiLU)
    block = silu.trunk_output.block1[0]
    assert type(block.activation) is nn.SiLU and type(block.f.se.activation) is nn.SiLU
    assert type(block.f.a[2]) is nn.SiLU and len(block.f.c) == 2
    assert fastregnet.explain_fusion(silu)[1]["path"] == "modules"


def test_norm_layer_and_activation_match_torchvision():
    from torchvision.models import regnet_y_400mf

    kwargs = dict(norm_layer=partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01), activation=nn.SiLU)
    torch.manual_seed(0)
    tv = regnet_y_400mf(**kwargs).train()
    ours = fastregnet.regnet_y_400mf(**kwargs).train()
    ours.load_state_dict(tv.state_dict())
    x = torch.randn(2, 3, 32, 32)
    assert rel_err(ours(x), tv(x)) < 1e-5
    for a, b in zip(ours.buffers(), tv.buffers()):
        assert rel_err(a.float(), b.float()) < 1e-5


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_batch_norm_runs_fused_in_train_mode(backend):
    tv, ours = _frozen_twins()
    tv.train(), ours.train()
    assert all(r["path"] == "fused" for r in fastregnet.explain_fusion(ours))
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with fastregnet.use_backend(backend), fastregnet.count_kernel_launches() as launches:
        out = ours(x)
        out.square().mean().backward()
    expected = tv(x)
    expected.square().mean().backward()
    assert rel_err(out, expected) < 1e-5
    for (name, p), q in zip(ours.named_parameters(), tv.parameters()):
        assert rel_err(p.grad, q.grad) < 1e-4, name
    for (name, b), c in zip(ours.named_buffers(), tv.buffers()):
        assert torch.equal(b, c), name  # frozen: nothing updated
    if backend == "triton":
        assert any("grouped_conv" in k for k in launches), launches


def _detector(body_model, recipe):
    from collections import OrderedDict

    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.rpn import AnchorGenerator
    from torchvision.models.feature_extraction import create_feature_extractor
    from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

    class BodyWithFPN(nn.Module):  # torchvision's documented recipe for a create_feature_extractor backbone
        def __init__(self):
            super().__init__()
            self.body = create_feature_extractor(body_model, {"trunk_output.block1": "0",
                                                              "trunk_output.block2": "1"})
            self.fpn = FeaturePyramidNetwork([16, 24], 16, extra_blocks=LastLevelMaxPool())
            self.out_channels = 16

        def forward(self, x):
            return self.fpn(self.body(x))

    if recipe == "feature_extractor":
        backbone = BodyWithFPN()
    else:  # BackboneWithFPN: IntermediateLayerGetter over the stem and the stages as top-level children
        layers = nn.Sequential(OrderedDict([("stem", body_model.stem), *body_model.trunk_output.named_children()]))
        backbone = BackboneWithFPN(layers, {"block1": "0", "block2": "1"}, [16, 24], 16)
    torch.manual_seed(11)
    anchors = AnchorGenerator(((8,), (16,), (32,)), ((0.5, 1.0, 2.0),) * 3)
    return FasterRCNN(backbone, num_classes=3, min_size=64, max_size=64, rpn_anchor_generator=anchors,
                      rpn_batch_size_per_image=32, box_batch_size_per_image=16)


@pytest.mark.parametrize("recipe", ["feature_extractor", "backbone_with_fpn"])
def test_detection_recipe_with_frozen_bn_matches_torchvision(recipe):
    tv, ours = _frozen_twins()
    det_tv, det_ours = _detector(tv, recipe), _detector(ours, recipe)
    det_ours.load_state_dict(det_tv.state_dict())
    images = [torch.rand(3, 64, 64, device=DEVICE), torch.rand(3, 64, 48, device=DEVICE)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[10.0, 2.0, 30.0, 20.0], [0.0, 0.0, 44.0, 60.0]]),
                "labels": torch.tensor([2, 1])}]
    losses = []
    for det in (det_tv, det_ours):
        det.train()
        torch.manual_seed(5)  # the samplers draw the same proposals
        loss = det(images, targets)
        sum(loss.values()).backward()
        losses.append(loss)
    for key in losses[0]:
        assert rel_err(losses[1][key], losses[0][key]) < 1e-4, key
    tv_grads = {n: p.grad for n, p in det_tv.named_parameters() if p.grad is not None}
    for name, p in det_ours.named_parameters():
        if name in tv_grads:
            assert rel_err(p.grad, tv_grads[name]) < 1e-3, name
    det_tv.eval(), det_ours.eval()
    with torch.no_grad():
        for a, b in zip(det_tv(images), det_ours(images)):
            assert a["boxes"].shape == b["boxes"].shape
            if a["boxes"].numel():
                assert rel_err(b["boxes"], a["boxes"]) < 1e-4 and rel_err(b["scores"], a["scores"]) < 1e-4
