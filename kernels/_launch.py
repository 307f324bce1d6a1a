"""Launch bookkeeping shared by every launcher: counts Triton launches by kernel name for whoever is listening.

`fastregnet.count_kernel_launches()` pushes a Counter here; each launcher calls `record(kernel)` once per launch.
"""

from __future__ import annotations

from collections import Counter

_listeners: list[Counter] = []


def record(kernel, n: int = 1) -> None:
    """Note `n` launches of `kernel` (a @triton.jit function) in every active counter."""
    if _listeners:
        name = getattr(kernel, "__name__", None) or getattr(getattr(kernel, "fn", None), "__name__", str(kernel))
        for counter in _listeners:
            counter[name] += n


def push(counter: Counter) -> None:
    _listeners.append(counter)


def pop(counter: Counter) -> None:
    _listeners.remove(counter)
