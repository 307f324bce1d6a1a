"""Which path runs an op: the Triton kernels or the PyTorch reference (cuDNN on GPU, oneDNN on CPU).

Modes: "auto" (default), "triton", "torch". The process default comes from the env var FASTREGNET_BACKEND (read
once, at import; a bad value raises on first use) or `set_backend(mode)`; `with use_backend(mode): ...` overrides it
for the current thread (and asyncio task) only, through a ContextVar: a context never leaks into another thread,
and overlapping contexts that exit out of order each remove only their own override.

- auto: Triton on a CUDA tensor when Triton imports and the GPU is sm_80 or newer; the reference otherwise, and for
  any shape the kernels don't cover.
- triton: always the kernels; raise if they cannot run. On CPU tensors the kernels run under Triton's interpreter,
  which needs TRITON_INTERPRET=1 set before triton is first imported (the tests' conftest does this).
- torch: always the reference.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections import Counter

import torch

__all__ = ["get_backend", "set_backend", "use_backend", "use_triton", "auto_without_kernels", "triton_available",
           "count_kernel_launches", "on_tensor_device", "refuse_double_backward", "BackendError"]

_MODES = ("auto", "triton", "torch")


class BackendError(RuntimeError):
    """The Triton backend was requested but cannot run here."""


def _check_mode(mode: str) -> str:
    mode = str(mode).strip().lower()
    if mode not in _MODES:
        raise ValueError(f"unknown fastregnet backend {mode!r}; expected one of {', '.join(_MODES)}")
    return mode


_env_mode = os.environ.get("FASTREGNET_BACKEND", "auto")
# A bad FASTREGNET_BACKEND (marked None) raises on first use rather than at import, so that the `fastregnet` command,
# which imports this module before it can catch anything, reports it as a one-line user error.
_default_mode: str | None = _env_mode.strip().lower()
if _default_mode not in _MODES:
    _default_mode = None
# The active use_backend() overrides of this context, innermost last: ((token, mode), ...). A tuple, replaced and
# never mutated, so a copied context (a new task, a generator) cannot change its parent's.
_overrides: contextvars.ContextVar[tuple] = contextvars.ContextVar("fastregnet_backend_overrides", default=())


def get_backend() -> str:
    """The backend in effect here: the innermost use_backend() of this thread/task, else the process default."""
    overrides = _overrides.get()
    if overrides:
        return overrides[-1][1]
    if _default_mode is None:
        raise ValueError(f"unknown fastregnet backend {_env_mode!r} in the environment variable FASTREGNET_BACKEND; "
                         f"expected one of {', '.join(_MODES)}")
    return _default_mode


def set_backend(mode: str) -> None:
    """Set the process-wide default (what threads without a use_backend() context see)."""
    global _default_mode
    _default_mode = _check_mode(mode)


@contextlib.contextmanager
def use_backend(mode: str):
    """Select a backend in this thread (or task) only: `with fastregnet.use_backend("torch"): model(x)`."""
    entry = (object(), _check_mode(mode))
    _overrides.set(_overrides.get() + (entry,))
    try:
        yield
    finally:
        _overrides.set(tuple(e for e in _overrides.get() if e is not entry))


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


def _interpret_requested() -> bool:
    """Whether the environment asks Triton for its interpreter, parsed as Triton parses it ("1", "true", ...)."""
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):  # older Triton: only "1" counts
        return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _is_interpreted(fn) -> bool:
    return type(fn).__name__ == "InterpretedFunction"


def triton_interpreting() -> bool:
    """Whether fastregnet's kernels run under Triton's interpreter. That is fixed when the kernels are defined
    (Triton reads TRITON_INTERPRET at @triton.jit time), so this asks the kernels, not the environment."""
    if "interpreted" not in _probe:
        if _triton_import_error() is not None:
            return False
        from .kernels import batch_norm

        _probe["interpreted"] = _is_interpreted(batch_norm._bn_stats_finalize_kernel)
    return _probe["interpreted"]


def _interpret_mismatch_reason() -> str | None:
    """Why the kernels cannot run when they and Triton's own @jit library (tl.sigmoid, tl.cdiv, ..., defined when
    triton is imported) disagree about the interpreter: TRITON_INTERPRET changed between the two imports."""
    if "mismatch" not in _probe:
        import triton.language as tl

        library = getattr(tl, "sigmoid", None)
        known = type(library).__name__ in ("JITFunction", "InterpretedFunction")  # else another Triton: no check
        reason = None
        if known and triton_interpreting() and not _is_interpreted(library):
            reason = ("TRITON_INTERPRET=1 was set after triton was imported, so triton's own library was compiled "
                      "for a GPU but fastregnet's kernels for the interpreter; set it before triton is first "
                      "imported")
        elif known and not triton_interpreting() and _is_interpreted(library):
            reason = ("TRITON_INTERPRET was unset after triton was imported, so triton's own library runs under the "
                      "interpreter but fastregnet's kernels were compiled for a GPU; set or unset it before triton "
                      "is first imported")
        _probe["mismatch"] = reason
    return _probe["mismatch"]


def _cpu_unavailable_reason() -> str:
    if _interpret_requested():
        return ("TRITON_INTERPRET is set now, but it was not set when fastregnet's kernels were defined, so they "
                "were compiled for a GPU; set TRITON_INTERPRET=1 before importing fastregnet (or triton)")
    return "CPU tensors need TRITON_INTERPRET=1 set before fastregnet (or triton) is imported"


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
    mismatch = _interpret_mismatch_reason()
    if mismatch is not None:
        return False, mismatch
    if device.type == "cuda":
        if triton_interpreting():
            return False, "the kernels were defined under TRITON_INTERPRET, which runs them on CPU tensors only"
        if not _cuda_capability_ok(device.index if device.index is not None else torch.cuda.current_device()):
            return False, f"{torch.cuda.get_device_name(device)} is older than sm_80"
        return True, ""
    if device.type == "cpu":
        if triton_interpreting():
            return True, ""
        return False, _cpu_unavailable_reason()
    return False, f"no Triton kernels for device type {device.type!r}"


def use_triton(x: torch.Tensor, supported: bool = True, why_not: str = "") -> bool:
    """Decide the path for one op call on input `x`.

    `supported` says whether the kernels cover this call's shape/dtype. In "triton" mode anything that keeps the
    kernels from running raises BackendError; in "auto" mode it quietly takes the reference.
    """
    mode = get_backend()
    if mode == "torch":
        return False
    if mode == "auto":
        return supported and x.device.type == "cuda" and triton_available(x.device)[0]
    ok, reason = triton_available(x.device)
    if not ok:
        raise BackendError(f"FASTREGNET_BACKEND=triton but the Triton kernels cannot run: {reason}")
    if not supported:
        raise BackendError(f"FASTREGNET_BACKEND=triton but the kernels do not cover this call: {why_not}")
    return True


def auto_without_kernels(x: torch.Tensor) -> bool:
    """Whether the backend is "auto" and the kernels cannot run on x (a CPU tensor, no Triton, a GPU older than
    sm_80). Then the parts run their own modules' ops, as torchvision's do (on the CPU oneDNN's conv -> BN -> ReLU in
    the user's layout), called directly where fusion allows (fastregnet.cpu_direct), folding an eval BN only where
    that pays (ConvNormActivation.fold_pays). The "torch" backend runs the reference ops, the kernels' oracle."""
    if not x.is_cuda:  # (per part and call: the cheap test first)
        return get_backend() == "auto"
    return get_backend() == "auto" and not triton_available(x.device)[0]


def refuse_double_backward(op: str) -> None:
    """Called first in a kernel op's backward. Autograd runs a backward with grad mode on only for create_graph=True
    (double backward: gradient penalties, Hessian-vector products); the kernels' backward is not itself
    differentiable, so say so, and what does it, rather than PyTorch's "no autograd formula"."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"fastregnet.{op}: backward with create_graph=True (double backward) is not supported through the "
            f"Triton kernels. Run that forward and backward on the PyTorch path, which supports it: "
            f"`with fastregnet.use_backend('torch'): ...`")


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


def on_tensor_device(t: torch.Tensor):
    """A context with t's CUDA device current (a no-op for CPU tensors): Triton launches on the current device, so
    a model on cuda:1 without torch.cuda.set_device(1) would otherwise get another GPU's addresses."""
    if t.is_cuda and t.device.index is not None:
        return torch.cuda.device(t.device)
    return contextlib.nullcontext()
