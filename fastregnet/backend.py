"""Which path runs an op: the Triton kernels or the PyTorch reference (cuDNN on GPU, oneDNN on CPU).

Modes: "auto" (default), "triton", "torch". Set with the env var FASTREGNET_BACKEND (read once, at import),
`set_backend(mode)`, or `with use_backend(mode): ...`.

- auto: Triton on a CUDA tensor when Triton imports and the GPU is sm_80 or newer; the reference otherwise, and for
  any shape the kernels don't cover.
- triton: always the kernels; raise if they cannot run. On CPU tensors the kernels run under Triton's interpreter,
  which needs TRITON_INTERPRET=1 set before triton is first imported (the tests' conftest does this).
- torch: always the reference.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter

import torch

__all__ = ["get_backend", "set_backend", "use_backend", "use_triton", "triton_available", "count_kernel_launches",
           "BackendError"]

_MODES = ("auto", "triton", "torch")


class BackendError(RuntimeError):
    """The Triton backend was requested but cannot run here."""


def _check_mode(mode: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in _MODES:
        raise ValueError(f"unknown fastregnet backend {mode!r}; expected one of {', '.join(_MODES)}")
    return mode


_mode = _check_mode(os.environ.get("FASTREGNET_BACKEND", "auto"))


def get_backend() -> str:
    return _mode


def set_backend(mode: str) -> None:
    global _mode
    _mode = _check_mode(mode)


@contextlib.contextmanager
def use_backend(mode: str):
    """Temporarily select a backend: `with fastregnet.use_backend("torch"): model(x)`."""
    global _mode
    previous, _mode = _mode, _check_mode(mode)
    try:
        yield
    finally:
        _mode = previous


# Probed once per process, in plain module state (torch.compile traces through these without lru_cache warnings).
_probe: dict = {}


def _triton_import_error() -> str | None:
    if "import" not in _probe:
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401

            _probe["import"] = None
        except Exception as e:  # pragma: no cover - depends on the install
            _probe["import"] = f"{type(e).__name__}: {e}"
    return _probe["import"]


def triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _cuda_capability_ok(index: int) -> bool:
    key = ("sm80", index)
    if key not in _probe:
        _probe[key] = torch.cuda.get_device_capability(index) >= (8, 0)
    return _probe[key]


def triton_available(device: torch.device) -> tuple[bool, str]:
    """Whether the kernels can run on tensors of `device`, and if not, why."""
    err = _triton_import_error()
    if err is not None:
        return False, f"triton does not import ({err})"
    if device.type == "cuda":
        if triton_interpreting():
            return False, "TRITON_INTERPRET=1 is set, which runs kernels on the CPU only"
        if not _cuda_capability_ok(device.index if device.index is not None else torch.cuda.current_device()):
            return False, f"{torch.cuda.get_device_name(device)} is older than sm_80"
        return True, ""
    if device.type == "cpu":
        if triton_interpreting():
            return True, ""
        return False, "CPU tensors need TRITON_INTERPRET=1 set before triton is imported"
    return False, f"no Triton kernels for device type {device.type!r}"


def use_triton(x: torch.Tensor, supported: bool = True, why_not: str = "") -> bool:
    """Decide the path for one op call on input `x`.

    `supported` says whether the kernels cover this call's shape/dtype. In "triton" mode anything that keeps the
    kernels from running raises BackendError; in "auto" mode it quietly takes the reference.
    """
    if _mode == "torch":
        return False
    if _mode == "auto":
        return supported and x.device.type == "cuda" and triton_available(x.device)[0]
    ok, reason = triton_available(x.device)
    if not ok:
        raise BackendError(f"FASTREGNET_BACKEND=triton but the Triton kernels cannot run: {reason}")
    if not supported:
        raise BackendError(f"FASTREGNET_BACKEND=triton but the kernels do not cover this call: {why_not}")
    return True


@contextlib.contextmanager
def count_kernel_launches():
    """Count Triton kernel launches by kernel name: `with count_kernel_launches() as n: model(x)`; then `n` is a
    collections.Counter such as {"_grouped_conv_fwd_kernel": 13}."""
    from .kernels import _launch

    counter: Counter = Counter()
    _launch.push(counter)
    try:
        yield counter
    finally:
        _launch.pop(counter)
