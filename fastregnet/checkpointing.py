"""Per-block activation checkpointing that updates BatchNorm running statistics exactly once.

torch.utils.checkpoint re-runs the block in backward. A BatchNorm in training would count that batch again
(torchvision's blocks under checkpoint update every running statistic twice), and with early stopping the last
norms of a block may or may not be re-run. Here the re-run computes exactly what the first forward did, and
every running statistic it touched is restored afterwards, so each is updated once per forward, as without
checkpointing.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["checkpoint_block", "running_stats_frozen"]


@contextlib.contextmanager
def running_stats_frozen(module: nn.Module):
    """Within, BatchNorms compute and save exactly what they did the first time (the same ops, so checkpoint sees
    the same saved tensors); on exit each running statistic and batch count is restored bit for bit. The restore
    writes through .data, so it does not bump the version of a buffer the recomputed graph saved."""
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
    saved = [b.detach().clone() for b in buffers]
    try:
        yield
    finally:
        for b, s in zip(buffers, saved):
            b.data.copy_(s)


def checkpoint_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """block(x) under non-reentrant torch.utils.checkpoint (RNG state replayed, so drop-path masks match); the
    backward's recomputation runs with running statistics frozen."""
    calls = 0

    def run(inp: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        if calls == 1:
            return block(inp)
        with running_stats_frozen(block):
            return block(inp)

    return checkpoint(run, x, use_reentrant=False)
