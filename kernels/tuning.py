"""Which tile configuration a kernel launches with: a shipped table of configurations tuned on real GPUs (filled by
`fastregnet gpu-campaign --part tune`), else opt-in runtime autotuning, else the kernel's documented heuristic.

    1. the table `tuned_configs.json` beside this file, keyed by GPU name, kernel family, dtype and shape key;
    2. with FASTREGNET_AUTOTUNE=1, on a CUDA device and never inside CUDA-graph capture: time every candidate once
       per key on the call's own inputs, keep the fastest, and cache it on disk (FASTREGNET_AUTOTUNE_CACHE, default
       ~/.cache/fastregnet/autotune.json), so later runs and processes reuse it;
    3. the heuristic the kernel module documents.

A configuration changes the order of floating-point accumulation, so results are deterministic for a given
configuration (the contract: same config, same bits); a table or cache entry fixes the configuration across runs.
Selection happens on the host before a launch, never inside a kernel, and a capture never triggers tuning.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import threading

import torch

__all__ = ["select", "table_key", "load_table", "autotune_enabled", "force"]

_TABLE_PATH = os.path.join(os.path.dirname(__file__), "tuned_configs.json")
_lock = threading.Lock()
_state: dict = {}
_forced: contextvars.ContextVar = contextvars.ContextVar("fastregnet_forced_config", default=None)


@contextlib.contextmanager
def force(config: tuple, family: str | None = None):
    """Launch with `config` inside the block (the GPU campaign's tuning sweep and the tests): every selection, or
    only that kernel `family`'s when given (blocks nest, one family each); it must be one of the kernel's
    candidates."""
    token = _forced.set({**(_forced.get() or {}), family: tuple(config)})
    try:
        yield
    finally:
        _forced.reset(token)


def table_key(family: str, dtype: torch.dtype, shape_key: str) -> str:
    return f"{family}|{str(dtype).replace('torch.', '')}|{shape_key}"


def load_table(path: str = _TABLE_PATH) -> dict:
    """{gpu name: {key: config list}} from the shipped table (empty until a GPU campaign fills it)."""
    with open(path) as f:
        doc = json.load(f)
    if doc.get("format") != 1 or not isinstance(doc.get("gpus"), dict):
        raise ValueError(f"{path}: not a fastregnet tuned-config table (format 1)")
    return doc["gpus"]


def autotune_enabled() -> bool:
    return os.environ.get("FASTREGNET_AUTOTUNE", "0") not in ("", "0", "false", "False")


def _cache_path() -> str:
    return os.environ.get("FASTREGNET_AUTOTUNE_CACHE",
                          os.path.join(os.path.expanduser("~"), ".cache", "fastregnet", "autotune.json"))


def _load_cache() -> dict:
    path = _cache_path()
    if _state.get("cache_path") != path:
        try:
            with open(path) as f:
                _state["cache"] = json.load(f)
        except (OSError, ValueError):
            _state["cache"] = {}
        _state["cache_path"] = path
    return _state["cache"]


def _save_cache(cache: dict) -> None:
    path = _cache_path()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(tmp, path)


def _time_candidate(run, config, device) -> float:
    """Median CUDA-event time of run(config) over a few calls, after a warm-up call (which also compiles)."""
    run(config)
    times = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(config)
        end.record()
        torch.cuda.synchronize(device)
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def select(family: str, dtype: torch.dtype, shape_key: str, candidates: list[tuple], heuristic: tuple,
           device: torch.device, run=None) -> tuple:
    """The configuration for one launch. `candidates` are the kernel's tuning space (heuristic among them), `run`
    launches the kernel with a given configuration on the call's inputs (needed only for autotuning)."""
    key = table_key(family, dtype, shape_key)
    forcing = _forced.get() or {}
    forced = forcing.get(family, forcing.get(None))
    if forced is not None:
        if forced not in candidates:
            raise ValueError(f"{family}: forced configuration {forced} is not a candidate for {shape_key} "
                             f"({str(dtype)}): {candidates}")
        return forced
    if device.type == "cuda":
        names = _state.setdefault("names", {})  # per device index: this runs on every launch
        index = device.index if device.index is not None else torch.cuda.current_device()
        gpu = names.get(index) or names.setdefault(index, torch.cuda.get_device_name(index))
        if "table" not in _state:
            _state["table"] = load_table()
        entry = _state["table"].get(gpu, {}).get(key)
        if entry is not None and tuple(entry) in candidates:
            return tuple(entry)
        if autotune_enabled():
            with _lock:
                cache = _load_cache()
                cached = cache.get(gpu, {}).get(key)
                if cached is not None and tuple(cached) in candidates:
                    return tuple(cached)
                if run is not None and not torch.cuda.is_current_stream_capturing():
                    best = min(candidates, key=lambda cfg: _time_candidate(run, cfg, device))
                    cache.setdefault(gpu, {})[key] = list(best)
                    _save_cache(cache)
                    return best
    return heuristic
