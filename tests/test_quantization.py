"""Quantization recipes run on fastregnet as on torchvision: eager fuse_modules / QAT, and FX prepare_fx / convert_fx,
where the quantizer must see (and quantize) the convs rather than fastregnet's parts as opaque leaves."""

import copy
import warnings

import pytest
import torch
import torchvision
from torch.ao.quantization import fuse_modules, fuse_modules_qat, get_default_qat_qconfig, get_default_qconfig_mapping
from torch.ao.quantization import prepare_qat
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

import fastregnet

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


def _twins(name="regnet_y_400mf"):
    torch.manual_seed(0)
    tv = getattr(torchvision.models, name)()
    for m in tv.modules():  # non-trivial BN statistics, so a wrong fold would show
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return tv, fastregnet.from_torchvision(tv)


def _fusion_groups(model) -> list[list[str]]:
    """What a user lists for fuse_modules: each conv-BN(-ReLU) (torchvision's names, which fastregnet keeps)."""
    groups = [["stem.0", "stem.1", "stem.2"]]
    for name, m in model.named_modules():
        if type(m).__name__ == "ResBottleneckBlock":
            groups += [[f"{name}.f.{p}.0", f"{name}.f.{p}.1", f"{name}.f.{p}.2"] for p in ("a", "b")]
            groups.append([f"{name}.f.c.0", f"{name}.f.c.1"])
            if m.proj is not None:
                groups.append([f"{name}.proj.0", f"{name}.proj.1"])
    return groups


def test_eager_fuse_modules_and_qat_run_as_on_torchvision():
    tv, ours = _twins()
    x = torch.randn(2, 3, 64, 64)
    fused_tv = fuse_modules(tv.eval(), _fusion_groups(tv))
    fused_ours = fuse_modules(ours.eval(), _fusion_groups(tv))
    assert type(fused_ours.stem[0]).__name__ == "ConvReLU2d"  # the fold happened, as on torchvision
    with torch.no_grad():
        torch.testing.assert_close(fused_ours(x), fused_tv(x), rtol=1e-5, atol=1e-5)

    # QAT: fuse in train mode, fake-quantize, one training step
    outs = []
    for model in (copy.deepcopy(tv).train(), copy.deepcopy(ours).train()):
        model = fuse_modules_qat(model, _fusion_groups(tv))
        model.qconfig = get_default_qat_qconfig("x86")
        model = prepare_qat(model)
        torch.manual_seed(1)
        out = model(x)
        out.sum().backward()
        outs.append((out, model.stem[0].weight.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=1e-3, atol=1e-4)


def _quantized_modules(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in model.modules():
        if ".quantized." in type(m).__module__:
            counts[type(m).__name__] = counts.get(type(m).__name__, 0) + 1
    return counts


@pytest.mark.parametrize("name", ["regnet_y_400mf", "regnet_x_400mf"])
def test_fx_prepare_and_convert_quantize_every_conv_as_on_torchvision(name):
    tv, ours = _twins(name)
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (tv.eval(), ours.eval()):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_fx(copy.deepcopy(model), get_default_qconfig_mapping("x86"), (x,))
        observers = sum("Observer" in type(m).__name__ for m in prepared.modules())
        with torch.no_grad():
            prepared(x)  # calibrate
        quantized = convert_fx(prepared)
        with torch.no_grad():
            results.append((observers, _quantized_modules(quantized), quantized(x)))
    (tv_observers, tv_counts, tv_out), (observers, counts, out) = results
    assert counts.get("Conv2d", 0) + counts.get("ConvReLU2d", 0) > 50  # the convs themselves were quantized
    assert (observers, counts) == (tv_observers, tv_counts)
    torch.testing.assert_close(out, tv_out, rtol=0, atol=1e-6)


def test_pt2e_export_prepare_convert_quantizes_as_on_torchvision():
    # the current flow: torch.export, then torchao's prepare_pt2e / convert_pt2e with the x86 quantizer
    pytest.importorskip("torchao", reason="torchao (the pt2e flow) is not installed")
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer, get_default_x86_inductor_quantization_config)

    tv, ours = _twins()
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (tv.eval(), ours.eval()):
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            prepared = prepare_pt2e(torch.export.export(copy.deepcopy(model), (x,)).module(), quantizer)
            prepared(x)  # calibrate
            converted = convert_pt2e(prepared)
        ops: dict[str, int] = {}
        for node in converted.graph.nodes:
            if node.op == "call_function" and ("quantize" in str(node.target) or "conv" in str(node.target)):
                ops[str(node.target)] = ops.get(str(node.target), 0) + 1
        with torch.no_grad():
            results.append((ops, converted(x)))
    (tv_ops, tv_out), (ops, out) = results
    assert ops.get("quantized_decomposed.dequantize_per_channel.default", 0) == 86  # every conv's and fc's weight
    assert ops == tv_ops
    torch.testing.assert_close(out, tv_out, rtol=0, atol=1e-6)


def test_fx_qat_keeps_drop_path_one_node_that_follows_train_and_eval():
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    torch.manual_seed(0)
    model = fastregnet.create_model("regnetx_002", num_classes=10, drop_path_rate=0.2).train()
    x = torch.randn(2, 3, 64, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = prepare_qat_fx(model, get_default_qat_qconfig_mapping("x86"), (x,))
    drop_nodes = [n for n in prepared.graph.nodes if n.op == "call_module" and "drop_path" in str(n.target)]
    assert drop_nodes and not any("drop_path" in str(n.target) for n in prepared.graph.nodes
                                  if n.op == "call_function")
    prepared(x).sum().backward()  # a QAT step through the fake-quantized convs
    assert all(p.grad is not None for n, p in prepared.named_parameters() if n.endswith("weight"))
