"""torch.fx and TorchScript capture: torchvision's feature extraction sees torchvision's graph (same node names,
same features) and the extracted module still runs fastregnet's fused parts; symbolic_trace and jit.trace work;
jit.script refuses with one clear error that names the supported capture paths."""

import pytest
import torch

import fastregnet
from conftest import DEVICE, rel_err, torchvision_twins

RETURN_NODES = {"stem": "stem", "trunk_output.block1": "c2", "trunk_output.block2.block2-1.f.b": "f_b",
                "trunk_output.block2.block2-0.add": "add", "trunk_output.block2": "c3"}


def test_graph_node_names_are_torchvision_s_on_the_zoo_model():
    from torchvision.models import regnet_y_400mf
    from torchvision.models.feature_extraction import get_graph_node_names

    ours, tv = fastregnet.regnet_y_400mf(), regnet_y_400mf()
    for mode in ("train", "eval"):
        ours.train(mode == "train"), tv.train(mode == "train")
        assert get_graph_node_names(ours) == get_graph_node_names(tv)


@pytest.mark.parametrize("backend", ["auto", "triton"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_create_feature_extractor_gives_torchvision_features(backend, mode):
    from torchvision.models.feature_extraction import create_feature_extractor

    tv, ours = torchvision_twins()
    tv.train(mode == "train"), ours.train(mode == "train")
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    ext_tv, ext = create_feature_extractor(tv, RETURN_NODES), create_feature_extractor(ours, RETURN_NODES)
    with fastregnet.use_backend(backend), fastregnet.count_kernel_launches() as launches:
        feats = ext(x)
    expected = ext_tv(x)
    assert set(feats) == set(RETURN_NODES.values()) == set(expected)
    for name in feats:
        assert rel_err(feats[name], expected[name]) < 1e-5, name
    if backend == "triton":
        # the graph calls fastregnet's conv-norm-act parts as modules, and they run their fused kernels
        assert sum(launches.values()) > 0 and any("grouped_conv" in k for k in launches), launches
    if mode == "train":
        sum(f.float().sum() for f in feats.values()).backward()
        sum(f.float().sum() for f in expected.values()).backward()
        tv_params = dict(tv.named_parameters())
        for name, p in ours.named_parameters():
            if p.grad is not None:
                assert rel_err(p.grad, tv_params[name].grad) < 1e-4, name
        for (name, b), tb in zip(ours.named_buffers(), tv.buffers()):
            assert rel_err(b.float(), tb.float()) < 1e-5, name


def test_symbolic_trace_runs_the_model():
    _, ours = torchvision_twins()
    ours.eval()
    graph_module = torch.fx.symbolic_trace(ours)
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.no_grad():
        assert rel_err(graph_module(x), ours(x)) < 1e-6
    targets = {n.target for n in graph_module.graph.nodes if n.op == "call_module"}
    assert "trunk_output.block1.block1-0.f.b" in targets and "stem" in targets


def test_symbolic_trace_with_drop_path_records_one_node_per_block():
    model = fastregnet.RegNet(depths=[1, 2], widths=[16, 24], group_widths=8, se_ratio=0.25, stem_width=8,
                              num_classes=10, drop_path_rate=0.2)
    graph_module = torch.fx.symbolic_trace(model)
    drop_nodes = [n for n in graph_module.graph.nodes if n.op == "call_module" and "drop_path" in str(n.target)]
    assert len(drop_nodes) == 2  # blocks 2 and 3 of the linear rule (the first block's rate is 0)
    model.eval(), graph_module.eval()  # the traced graph follows eval(): drop path is the identity
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert rel_err(graph_module(x), model(x)) < 1e-6


@pytest.mark.parametrize("grad", [True, False])
def test_jit_trace_passes_its_default_check_in_eval(grad):
    _, ours = torchvision_twins()
    ours.eval()
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(ours, x)  # check_trace=True re-traces under no_grad and compares the graphs
        assert rel_err(traced(x), ours(x)) < 1e-6


def test_jit_script_refuses_with_the_supported_paths():
    _, ours = torchvision_twins()
    for module in (ours, ours.trunk_output.block1, ours.stem):
        with pytest.raises(RuntimeError, match="torch.export.export or torch.compile"):
            torch.jit.script(module)
