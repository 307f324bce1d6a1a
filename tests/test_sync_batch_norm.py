"""SyncBatchNorm across processes (gloo on CPU, where nn.SyncBatchNorm refuses to run): a model converted with
nn.SyncBatchNorm.convert_sync_batchnorm, trained on each rank's slice of a batch, equals single-process BatchNorm
over the whole batch: outputs, input grads, parameter grads (summed over ranks, as DDP would) and every rank's
running statistics. Uneven per-rank batches, sub-group process groups, the PyTorch path and the Triton path
(interpreter: the exchange between fastregnet's conv-statistics and apply kernels)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from conftest import TINY_SPEC, randomize_bn, rel_err

BATCH = 5


def _model():
    import fastregnet

    torch.manual_seed(0)
    model = fastregnet.RegNet(**TINY_SPEC)
    randomize_bn(model, 0)
    return model.train()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, 3, 16, 16, generator=g)
    loss_weights = torch.randn(BATCH, TINY_SPEC["num_classes"], generator=g)
    return x, loss_weights


def _worker(rank, world, init_file, out_dir, groups, splits, backend):
    os.environ["TRITON_INTERPRET"] = "1"  # a fresh process: set before fastregnet's kernels are defined
    import fastregnet

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        handles = [dist.new_group(g) for g in groups]  # every rank creates every group, as torch requires
        mine = next(h for g, h in zip(groups, handles) if rank in g)
        members = next(g for g in groups if rank in g)
        model = nn.SyncBatchNorm.convert_sync_batchnorm(_model(), process_group=mine)
        x, loss_weights = _data()
        start = sum(splits[r] for r in members[:members.index(rank)])
        part = slice(start, start + splits[rank])
        xi = x[part].clone().requires_grad_()
        with fastregnet.use_backend(backend), fastregnet.count_kernel_launches() as launches:
            out = model(xi)
            (out * loss_weights[part]).sum().backward()
        torch.save({"out": out.detach(), "grad_x": xi.grad, "part": (part.start, part.stop), "launches": launches,
                    "grads": {n: p.grad for n, p in model.named_parameters()},
                    "buffers": {n: b for n, b in model.named_buffers()}}, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _run(tmp_path, groups, splits, backend):
    world = sum(len(g) for g in groups)
    mp.spawn(_worker, args=(world, str(tmp_path / "init"), str(tmp_path), groups, splits, backend), nprocs=world,
             join=True)
    return [torch.load(tmp_path / f"{r}.pt") for r in range(world)]


def _check_group(results, members):
    """The group's ranks together equal one process with plain BatchNorm over their concatenated slices."""
    x, loss_weights = _data()
    start, stop = results[members[0]]["part"][0], results[members[-1]]["part"][1]
    ref = _model()
    xr = x[start:stop].clone().requires_grad_()
    out = ref(xr)
    (out * loss_weights[start:stop]).sum().backward()
    got_out = torch.cat([results[r]["out"] for r in members])
    got_grad_x = torch.cat([results[r]["grad_x"] for r in members])
    assert rel_err(got_out, out) < 1e-5
    assert rel_err(got_grad_x, xr.grad) < 1e-4
    for name, p in ref.named_parameters():
        summed = sum(results[r]["grads"][name] for r in members)
        assert rel_err(summed, p.grad) < 1e-4, name
    for name, b in ref.named_buffers():
        for r in members:
            assert rel_err(results[r]["buffers"][name].float(), b.float()) < 1e-5, (r, name)


@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_sync_batch_norm_over_two_ranks_with_uneven_batches(tmp_path, backend):
    results = _run(tmp_path, groups=[[0, 1]], splits=[4, 1], backend=backend)
    _check_group(results, [0, 1])
    if backend == "triton":  # the exchange runs between fastregnet's own conv, statistics and apply kernels
        for r in results:
            assert {"_grouped_conv_fwd_kernel", "_pointwise_conv_kernel", "_bn_act_apply_kernel",
                    "_grouped_conv_bwd_data_kernel", "_pointwise_conv_bwd_data_kernel"} <= set(r["launches"])


def test_sync_batch_norm_honours_sub_group_process_groups(tmp_path):
    # 4 ranks in two groups of 2: each group normalizes over its own ranks only
    results = _run(tmp_path, groups=[[0, 1], [2, 3]], splits=[2, 3, 3, 2], backend="auto")
    _check_group(results, [0, 1])
    _check_group(results, [2, 3])


def test_a_group_of_one_rank_trains_on_the_cpu(tmp_path):
    # single-process torchrun: nn.SyncBatchNorm refuses CPU tensors once torch.distributed is initialized, whatever
    # the group's size; fastregnet's auto path keeps its reference there, so the step runs as plain BatchNorm
    results = _run(tmp_path, groups=[[0]], splits=[BATCH], backend="auto")
    _check_group(results, [0])
