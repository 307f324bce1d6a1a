"""Error empirical distribution functions (EDFs) of design spaces (paper, section 2.2).

The EDF of n models' errors e_i is F(e) = (1/n) * sum_i 1[e_i < e]: the fraction of models with error below e.
The paper compares spaces by their EDFs, optionally normalized for complexity: models are weighted so each
complexity bin carries equal total weight, so a space is not favoured for sampling bigger models. Comparison
statistics: the maximum gap between two EDFs (Kolmogorov-Smirnov) and the area between them (positive when the
first space's curve lies above, i.e. it has more good models).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np

__all__ = ["edf", "complexity_weights", "compare_edfs", "load_records", "plot_edfs", "summarize"]


def edf(errors: Sequence[float], at: Sequence[float] | None = None, weights: Sequence[float] | None = None):
    """(at, F(at)) with F(e) = weighted fraction of errors strictly below e; `at` defaults to the sorted errors."""
    e = np.asarray(errors, dtype=float)
    if e.size == 0:
        raise ValueError("an EDF needs at least one error")
    w = np.ones_like(e) if weights is None else np.asarray(weights, dtype=float)
    w = w / w.sum()
    xs = np.sort(e) if at is None else np.asarray(at, dtype=float)
    order = np.argsort(e)
    cum = np.concatenate([[0.0], np.cumsum(w[order])])
    return xs, cum[np.searchsorted(e[order], xs, side="left")]


def complexity_weights(complexities: Sequence[float], bins: int = 10) -> np.ndarray:
    """Weights that give each of `bins` log-spaced complexity bins equal total weight (normalized EDF)."""
    c = np.log(np.asarray(complexities, dtype=float))
    edges = np.linspace(c.min(), c.max() + 1e-9, bins + 1)
    idx = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
    counts = np.bincount(idx, minlength=bins)
    return 1.0 / counts[idx]


def compare_edfs(errors_a, errors_b, grid: int = 512, weights_a=None, weights_b=None) -> dict:
    """KS distance and signed area between two EDFs on a shared error grid (area > 0: A has more good models)."""
    lo = min(np.min(errors_a), np.min(errors_b))
    hi = max(np.max(errors_a), np.max(errors_b))
    xs = np.linspace(lo, hi + 1e-9, grid)
    _, fa = edf(errors_a, xs, weights_a)
    _, fb = edf(errors_b, xs, weights_b)
    return {"ks": float(np.max(np.abs(fa - fb))), "area": float(np.trapezoid(fa - fb, xs))}


_RECORDS_JSON = 'a JSON list of records or {"records": [...]}'


def load_records(path: str) -> list[dict]:
    """Records from a JSON list (or {"records": [...]}) or a CSV file with columns space, error, flops, params."""
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory; expected a records file (JSON or CSV)")
    if str(path).endswith(".csv"):
        import csv

        with open(path) as f:
            rows = list(csv.DictReader(f))
        recs = [{k: (float(v) if k in ("error", "flops", "params") else v) for k, v in r.items()} for r in rows]
    else:
        with open(path) as f:
            text = f.read()
        if not text.strip():
            raise ValueError(f"{path} is empty; expected {_RECORDS_JSON}")
        data = json.loads(text)
        if isinstance(data, dict) and "records" in data:
            recs = data["records"]
        elif isinstance(data, list):
            recs = data
        else:
            raise ValueError(f"{path} holds no records: expected {_RECORDS_JSON}")
    if not isinstance(recs, list) or not recs:
        raise ValueError(f"{path} holds no records")
    for i, r in enumerate(recs):
        if not isinstance(r, dict):
            raise ValueError(f"record {i} of {path} is a {type(r).__name__}, not an object")
        missing = {"space", "error"} - set(r)
        if missing:
            raise ValueError(f"record {i} of {path} lacks {sorted(missing)}; each record needs space and error "
                             f"(and flops or params for a normalized EDF)")
        if isinstance(r["error"], bool) or not isinstance(r["error"], (int, float)):
            raise ValueError(f"record {i} of {path}: error must be a number, got {r['error']!r}")
        if not math.isfinite(r["error"]):
            raise ValueError(f"record {i} of {path}: error must be finite, got {r['error']}")
    return recs


def summarize(records: list[dict], normalize_by: str | None = None) -> dict:
    """Per space: n, min/median error, EDF points; pairwise comparisons against the first space."""
    spaces = list(dict.fromkeys(r["space"] for r in records))
    if normalize_by:
        for i, r in enumerate(records):
            value = r.get(normalize_by)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or not math.isfinite(value):
                raise ValueError(f"record {i} needs a positive {normalize_by} to normalize by, got "
                                 f"{'nothing' if value is None else repr(value)}")
    out = {"spaces": {}, "comparisons": []}
    errs = {s: np.array([r["error"] for r in records if r["space"] == s]) for s in spaces}
    wts = {s: complexity_weights([r[normalize_by] for r in records if r["space"] == s]) if normalize_by else None
           for s in spaces}
    for s in spaces:
        xs, fs = edf(errs[s], weights=wts[s])
        out["spaces"][s] = {"n": int(errs[s].size), "min_error": float(errs[s].min()),
                            "median_error": float(np.median(errs[s])), "edf": [[float(x), float(f)] for x, f in
                                                                               zip(xs, fs)]}
    for s in spaces[1:]:
        out["comparisons"].append({"a": spaces[0], "b": s, **compare_edfs(errs[spaces[0]], errs[s],
                                                                         weights_a=wts[spaces[0]],
                                                                         weights_b=wts[s])})
    return out


def plot_edfs(records: list[dict], path: str, normalize_by: str | None = None, title: str = "") -> None:
    """Step plot of each space's error EDF to a PNG (needs matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("plotting EDFs needs matplotlib: pip install 'fastregnet[plot]'") from e
    summary = summarize(records, normalize_by)
    fig, ax = plt.subplots(figsize=(5, 4))
    for s, info in summary["spaces"].items():
        xs = [p[0] for p in info["edf"]]
        fs = [p[1] for p in info["edf"]]
        ax.step(xs + [xs[-1]], fs + [1.0], where="post", label=f"{s} [n={info['n']}, min {info['min_error']:.1f}]")
    ax.set_xlabel("error")
    ax.set_ylabel("cumulative prob." + (f" (normalized by {normalize_by})" if normalize_by else ""))
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title or "error EDF")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
