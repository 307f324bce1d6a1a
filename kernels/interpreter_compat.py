"""The one place fastregnet works around a Triton interpreter bug (imported by `kernels/__init__.py`).

Triton 3.6's interpreter turns a scalar into a Python int with `int(self.handle.data)`, where `data` is a
1-element numpy array; numpy >= 2.4 refuses that ("only 0-dimensional arrays can be converted to Python scalars"),
so every `range()` over a run-time bound fails there (the GPU image has triton 3.6 with numpy 2.5). Triton 3.8
converts with `int(data.squeeze())`; this makes 3.6 do the same. It touches only the interpreter's patching of
`tl.tensor` (which runs when an interpreted kernel launches), never compiled kernels.
"""

from __future__ import annotations


def patch_scalar_index() -> bool:
    """Make the interpreter's `tl.tensor.__index__` squeeze its 1-element array first. Idempotent; returns whether
    the interpreter was patched (False where this Triton has no such hook)."""
    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - a Triton without an interpreter
        return False
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None:  # pragma: no cover - a Triton that patches tensors differently
        return False
    if getattr(original, "fastregnet_squeezes_index", False):
        return True

    def patch_lang_tensor(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    patch_lang_tensor.fastregnet_squeezes_index = True
    interpreter._patch_lang_tensor = patch_lang_tensor
    return True
