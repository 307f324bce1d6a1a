"""Which tile configuration a kernel launches with: a shipped table of configurations tuned on real GPUs (filled by
`fastregnet gpu-campaign --part tune`), else opt-in runtime autotuning, else the kernel's documented heuristic.

    1. the table `tuned_configs.json` beside this file, keyed by GPU name, kernel family, dtype and shape key; a
       GPU with no section of its own uses its architecture's ("sm_90": entries tuned on an H200 serve an H100;
       `fastregnet campaign-apply` writes both);
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
import warnings

import torch

__all__ = ["select", "table_key", "load_table", "autotune_enabled", "force", "observe"]

_TABLE_PATH = os.path.join(os.path.dirname(__file__), "tuned_configs.json")
_lock = threading.Lock()
_state: dict = {}
_forced: contextvars.ContextVar = contextvars.ContextVar("fastregnet_forced_config", default=None)
_observers: list[dict] = []


@contextlib.contextmanager
def force(config: tuple, family: str | None = None, shape_key: str | None = None):
    """Launch with `config` inside the block (the GPU campaign's tuning sweep and the tests): every selection, or
    only that kernel `family`'s when given, or only its launches at `shape_key` (blocks nest, one family or
    (family, shape key) each); it must be one of those launches' candidates."""
    target = family if shape_key is None else (family, shape_key)
    token = _forced.set({**(_forced.get() or {}), target: tuple(config)})
    try:
        yield
    finally:
        _forced.reset(token)


@contextlib.contextmanager
def observe():
    """Collect every selection made inside the block: {(family, dtype name, shape key): (candidates, heuristic)}
    (the GPU campaign runs a block once this way to learn which tuning spaces its launches draw from)."""
    seen: dict = {}
    _observers.append(seen)
    try:
        yield seen
    finally:
        _observers.remove(seen)


def arch_name(capability: tuple[int, int]) -> str:
    """The table section that serves every GPU of one architecture: "sm_90" for (9, 0)."""
    return f"sm_{capability[0]}{capability[1]}"


def table_key(family: str, dtype: torch.dtype, shape_key: str) -> str:
    return f"{family}|{str(dtype).replace('torch.', '')}|{shape_key}"


def load_table(path: str = _TABLE_PATH) -> dict:
    """{gpu name or arch ("sm_90"): {key: config list}} from the shipped table (empty until a GPU campaign fills
    it)."""
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


def _check_cache_path(path: str) -> None:
    if os.path.isdir(path):
        raise IsADirectoryError(f"the autotune cache {path} is a directory; set FASTREGNET_AUTOTUNE_CACHE to a file "
                                f"path (default ~/.cache/fastregnet/autotune.json)")


def _cache_shape_error(cache) -> str | None:
    """Why `cache` is not {gpu name: {key: config list}}, or None."""
    if not isinstance(cache, dict):
        return f"a JSON {type(cache).__name__}, not an object"
    for gpu, entries in cache.items():
        if not isinstance(entries, dict):
            return f"section {gpu!r} is a JSON {type(entries).__name__}, not an object"
        for key, config in entries.items():
            if not isinstance(config, list):
                return f"entry {gpu!r} / {key!r} is {config!r}, not a list"
    return None


def _load_cache() -> dict:
    path = _cache_path()
    if _state.get("cache_path") != path:
        _check_cache_path(path)
        try:
            with open(path) as f:
                cache = json.load(f)
            problem = _cache_shape_error(cache)
        except FileNotFoundError:
            cache, problem = {}, None
        except (OSError, ValueError) as e:
            problem = f"{type(e).__name__}: {e}"
        if problem is not None:  # an unreadable cache only costs re-tuning; the next result overwrites it
            warnings.warn(f"ignoring the autotune cache {path} ({problem}); it will be rewritten")
            cache = {}
        _state["cache"] = cache
        _state["cache_path"] = path
    return _state["cache"]


def _save_cache(cache: dict) -> None:
    path = _cache_path()
    _check_cache_path(path)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(cache, f, indent=1)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):  # a failed write or replace leaves no partial file behind
            os.remove(tmp)


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
    for seen in _observers:
        seen.setdefault((family, str(dtype).replace("torch.", ""), shape_key), (list(candidates), tuple(heuristic)))
    forcing = _forced.get() or {}
    forced = forcing.get((family, shape_key), forcing.get(family, forcing.get(None)))
    if forced is not None:
        if forced not in candidates:
            raise ValueError(f"{family}: forced configuration {forced} is not a candidate for {shape_key} "
                             f"({str(dtype)}): {candidates}")
        return forced
    if device.type == "cuda":
        names = _state.setdefault("names", {})  # per device index: this runs on every launch
        index = device.index if device.index is not None else torch.cuda.current_device()
        if index not in names:
            names[index] = (torch.cuda.get_device_name(index), arch_name(torch.cuda.get_device_capability(index)))
        gpu, arch = names[index]
        if "table" not in _state:
            _state["table"] = load_table()
        # this GPU's own entry, else one tuned on another GPU of the same architecture (an H200's for an H100)
        entry = _state["table"].get(gpu, {}).get(key, _state["table"].get(arch, {}).get(key))
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
