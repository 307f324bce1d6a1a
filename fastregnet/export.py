"""The CPU deployment path: a fastregnet model as an ONNX file (served by ONNX Runtime) or an OpenVINO IR, written
from the model's own module path and checked against fastregnet's outputs.

On a CPU fastregnet runs torchvision's modules (oneDNN), so it is torchvision's speed; a runtime that compiles the
whole graph for the CPU serves the same weights faster. `export_model` writes the file, `load_runtime` runs it
like a module (NCHW float32 tensors in, logits out), and `fastregnet export` does both, checks the outputs on a
random batch and measures the two.

Each runtime gets torch's thread count. ONNX Runtime is told not to spin its threads after a call, so that it does
not take the cores from whatever runs next (the benchmark interleaves providers round by round); OpenVINO's CPU
plugin has no such switch (its threads wait in TBB's own way), nor has PyTorch's OpenMP pool from inside a process.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import os
import tempfile
import warnings

import torch

from .backend import use_backend

__all__ = ["FORMATS", "RUNTIMES", "RuntimeMissing", "export_model", "load_runtime", "runtime_missing"]

FORMATS = ("onnx", "openvino")
# the packages each format needs, and the extra that installs them
RUNTIMES = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "openvino": ("onnx", "onnxscript", "openvino")}


class RuntimeMissing(ImportError):
    """A package the format needs is not installed."""


def runtime_missing(fmt: str) -> str | None:
    """Why `fmt` cannot be exported or run here (a package missing), or None."""
    if fmt not in RUNTIMES:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    missing = [p for p in RUNTIMES[fmt] if importlib.util.find_spec(p) is None]
    if missing:
        return f"{fmt} needs {', '.join(missing)}: pip install 'fastregnet[export]'"
    return None


def _check_format(fmt: str) -> None:
    reason = runtime_missing(fmt)
    if reason is not None:
        raise RuntimeMissing(reason)


def _write_onnx(model: torch.nn.Module, example: torch.Tensor, path: str) -> None:
    """torch.onnx.export (torch.export based) of a CPU copy of the model in eval mode, with a dynamic batch."""
    model = copy.deepcopy(model).cpu().float().eval()
    example = example.detach().cpu().float()
    # On the CPU the parts call their modules ("auto" without kernels): what is exported is torchvision's graph
    with use_backend("auto"), torch.no_grad(), warnings.catch_warnings(), \
            contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (example,), dynamo=True, verbose=False, input_names=["images"],
                                    output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},))
        program.save(path)


def export_model(model: torch.nn.Module, path: str, fmt: str = "onnx", resolution: int = 224) -> str:
    """Write `model` (eval mode, float32, CPU) to `path`: an .onnx file, or for "openvino" an IR (.xml and .bin
    beside it). The batch size stays dynamic; `resolution` is the example image size the graph is traced at."""
    _check_format(fmt)
    if fmt == "openvino" and not path.endswith(".xml"):
        raise ValueError(f"an OpenVINO IR is an .xml file (its weights go to the .bin beside it), got {path!r}")
    example = torch.randn(2, getattr(model, "in_channels", 3), resolution, resolution)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    if fmt == "onnx":
        _write_onnx(model, example, path)
        return path
    import openvino

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "model.onnx")
        _write_onnx(model, example, onnx_path)
        # compress_to_fp16 (save_model's default) would round every weight to fp16
        openvino.save_model(openvino.convert_model(onnx_path), path, compress_to_fp16=False)
    return path


class _Runtime:
    """A runtime's compiled model, called like a module: float32 NCHW tensor in, float32 logits tensor out."""

    def __init__(self, fmt: str, run):
        self.format = fmt
        self._run = run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"expected a 4-D NCHW image tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        batch = x.detach().cpu().float().contiguous().numpy()
        return torch.from_numpy(self._run(batch))


def load_runtime(path: str, fmt: str, threads: int | None = None) -> _Runtime:
    """The exported model at `path` compiled by its runtime for this CPU, with `threads` threads (default:
    torch.get_num_threads()); ONNX Runtime's do not spin between calls."""
    _check_format(fmt)
    threads = threads or torch.get_num_threads()
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return _Runtime(fmt, lambda batch: session.run(None, {name: batch})[0])
    import openvino

    core = openvino.Core()
    # f32: on CPUs with bf16 units OpenVINO would otherwise run in bf16 (deviations ~1e-2, not this model's math)
    compiled = core.compile_model(core.read_model(path), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                   "INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(batch):
        return request.infer({0: batch})[compiled.output(0)].copy()

    return _Runtime(fmt, run)
