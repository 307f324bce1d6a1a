"""Whole-model CUDA-graph inference: one call that captures a model's forward once per input signature and replays
it afterwards, so the host work of ~100 kernel launches (fastregnet's Python, custom-op dispatch, Triton's launch
glue: milliseconds per forward, bench/host_overhead.py) is paid once instead of per call.

    graphed = fastregnet.cuda_graph_inference(model)   # model on a CUDA device
    with torch.no_grad():
        out = graphed(x)                               # captures on the first call of x's shape, then replays

What a replay computes is what eager computes: the model's kernels read the live parameters and buffers (BN is
folded in each kernel's epilogue from the live tensors, nothing derived from them is cached), so in-place edits of
weights or running statistics after capture are seen by the next replay. Everything a capture bakes in is part of
the key a graph is looked up by, so a change of any of it captures afresh instead of replaying a stale graph: the
input's shape, dtype and memory format, autocast, the fastregnet backend in effect, the TF32 switches, and every
parameter's and buffer's storage address, dtype and shape (a parameter *replaced* by a new tensor, e.g.
`load_state_dict(..., assign=True)` or `model.half()`, is a new graph, not a replay that reads freed memory). The
capture needs a forward whose host code never reads tensor values (no `.item()`, no data-dependent branches):
tests/test_graphs.py checks that of the Triton path on the CPU.
"""

from __future__ import annotations

import torch

from .backend import get_backend

__all__ = ["cuda_graph_inference", "CUDAGraphInference"]


class CUDAGraphInference(torch.nn.Module):
    """Replays `model(x)` from a CUDA graph captured on the first call of each input (shape, dtype, memory format);
    inference only (eval mode, gradients off). Returns a fresh tensor each call (a copy of the graph's output
    buffer, which the next replay overwrites)."""

    def __init__(self, model: torch.nn.Module, warmup: int = 3):
        super().__init__()
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"cuda_graph_inference: expected an nn.Module, got {type(model).__name__}")
        devices = {t.device for t in (*model.parameters(), *model.buffers())}
        if not devices or any(d.type != "cuda" for d in devices) or len(devices) > 1:
            raise ValueError(f"cuda_graph_inference: the model must be on one CUDA device (CUDA graphs are a CUDA "
                             f"feature), got parameters and buffers on {sorted(str(d) for d in devices) or 'none'}")
        self.model = model
        self.warmup = warmup
        self.device = devices.pop()
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._captured_storage: tuple = ()

    def reset(self) -> None:
        """Drop every captured graph (frees their memory pools; the next call captures again)."""
        self._graphs.clear()

    def _check(self, x: torch.Tensor) -> tuple:
        if self.model.training:
            raise RuntimeError("cuda_graph_inference: the model is in training mode; call model.eval() (a captured "
                               "graph would replay one batch's statistics and never update the running ones)")
        if torch.is_grad_enabled():
            raise RuntimeError("cuda_graph_inference runs inference only: call it under torch.no_grad() or "
                               "torch.inference_mode()")
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"cuda_graph_inference: expected a tensor input, got {type(x).__name__}")
        if x.device != self.device:
            raise ValueError(f"cuda_graph_inference: input on {x.device}, model on {self.device}")
        layout = "channels_last" if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
            and not x.is_contiguous() else "contiguous"
        autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
        tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
                torch.get_float32_matmul_precision())
        return tuple(x.shape), x.dtype, layout, autocast, get_backend(), tf32

    def _storage(self) -> tuple:
        """The addresses, dtypes and shapes every graph reads: a swapped or re-cast parameter must not be replayed
        from freed storage."""
        return tuple((t.data_ptr(), t.dtype, tuple(t.shape)) for t in (*self.model.parameters(),
                                                                       *self.model.buffers()))

    def _capture(self, x: torch.Tensor) -> tuple:
        static_in = x.clone(memory_format=torch.preserve_format)
        # autocast's weight-cast cache is freed when the caller's autocast block exits, while the graph would go on
        # reading those addresses: capture with the cache off, so the casts are part of the graph and read the
        # live fp32 weights on every replay
        recast = torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"),
                                enabled=torch.is_autocast_enabled("cuda"), cache_enabled=False)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side), recast:
            for _ in range(self.warmup):  # compiles the kernels and settles the allocator outside the capture
                self.model(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=torch.cuda.Stream(self.device)), recast:
            static_out = self.model(static_in)
        return graph, static_in, static_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = self._check(x)
        storage = self._storage()
        if storage != self._captured_storage:  # graphs of the old tensors would read freed memory: drop them all
            self._graphs.clear()
            self._captured_storage = storage
        with torch.cuda.device(self.device):  # capture and replay on the model's device, whatever the current one is
            if key not in self._graphs:
                self._graphs[key] = self._capture(x)
            graph, static_in, static_out = self._graphs[key]
            static_in.copy_(x)
            graph.replay()
            return static_out.clone()


def cuda_graph_inference(model: torch.nn.Module, warmup: int = 3) -> CUDAGraphInference:
    """`model` wrapped for CUDA-graph inference (CUDAGraphInference): the documented way to take the host out of
    small-batch inference. The model must be on a CUDA device and in eval mode when called."""
    return CUDAGraphInference(model, warmup)
