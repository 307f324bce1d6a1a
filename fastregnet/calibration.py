"""Fitting the cost model's unmeasured constants to a GPU campaign's microbenchmarks.

Each microbenchmark record of `fastregnet gpu-campaign` carries its measured fastregnet time and, per launch of the
same block, the cost model's terms (fastregnet.cost.launch_terms): DRAM bytes, L2 bytes as tiled, MMA seconds at the
modelled rate, serial steps, exposed (unpipelined) steps. The model predicts a case as

    sum over launches of  max(dram / DRAM bandwidth, l2 / L2 bandwidth, mma seconds, steps x step)
                          + exposed steps x step + launch

The DRAM bandwidth is the campaign's measured copy bandwidth. The L2 bandwidth, the step and the launch term are
fitted: the values that minimize the squared log ratio of predicted to measured time over the cases, found by a grid
search in log space, refined three times around the best point. A constant the cases cannot pin down (one whose halving
and doubling both change the loss by under 1%: its term never decides a case) is not fitted; it keeps the value it
had, and the result says so.
"""

from __future__ import annotations

import numpy as np

# search ranges, wide enough for any GPU this could run on
RANGES = {"l2_bytes_per_s": (5e11, 5e13), "step_s": (1e-8, 1e-5), "launch_s": (1e-7, 1e-4)}
NAMES = tuple(RANGES)


def predict(cases: list[np.ndarray], dram_bytes_per_s: float, l2_bytes_per_s, step_s, launch_s) -> np.ndarray:
    """Predicted seconds per case; the three constants may be arrays of one shape (a grid), broadcast over it."""
    l2, step, launch = (np.asarray(v, dtype=float)[..., None] for v in (l2_bytes_per_s, step_s, launch_s))
    out = []
    for terms in cases:  # terms: (launches, 5)
        fixed = np.maximum(terms[:, 0] / dram_bytes_per_s, terms[:, 2])  # DRAM and MMA: no fitted constant
        t = np.maximum(fixed, np.maximum(terms[:, 1] / l2, terms[:, 3] * step)) + terms[:, 4] * step
        out.append(t.sum(-1) + launch[..., 0] * len(terms))
    return np.stack(out, -1)


def _loss(cases, measured, dram, l2, step, launch) -> np.ndarray:
    pred = predict(cases, dram, l2, step, launch)
    return (np.log(pred / measured) ** 2).sum(-1)


def fit(cases: list[list[list[float]]], measured_s: list[float], dram_bytes_per_s: float,
        defaults: dict) -> dict:
    """Fit {l2_bytes_per_s, step_s, launch_s} to the cases (each a list of per-launch [dram, l2, mma_s, steps,
    exposed steps]) and their measured seconds. Returns the fitted constants, which ones were identifiable, and the
    fit's error."""
    if len(cases) != len(measured_s) or not cases:
        raise ValueError(f"need as many measured times as cases, and at least one ({len(cases)} vs {len(measured_s)})")
    arrays = [np.asarray(c, dtype=float).reshape(-1, 5) for c in cases]
    measured = np.asarray(measured_s, dtype=float)
    if not (measured > 0).all():
        raise ValueError("measured times must be positive")
    lo = {k: np.log10(a) for k, (a, b) in RANGES.items()}
    hi = {k: np.log10(b) for k, (a, b) in RANGES.items()}
    best = None
    for points in (25, 11, 11, 11):  # a coarse grid over the whole range, then finer ones around the best point
        axes = [np.linspace(lo[k], hi[k], points) for k in NAMES]
        grid = np.meshgrid(*axes, indexing="ij")
        loss = _loss(arrays, measured, dram_bytes_per_s, *(10.0 ** g for g in grid))
        i = np.unravel_index(np.argmin(loss), loss.shape)
        best = {k: float(axes[j][i[j]]) for j, k in enumerate(NAMES)}
        for j, k in enumerate(NAMES):
            width = (hi[k] - lo[k]) / (points - 1)
            lo[k], hi[k] = best[k] - width, best[k] + width
    values = {k: 10.0 ** v for k, v in best.items()}
    base = float(_loss(arrays, measured, dram_bytes_per_s, *(values[k] for k in NAMES)))
    identifiable = {}
    for k in NAMES:
        changes = []
        for factor in (0.5, 2.0):
            trial = dict(values, **{k: values[k] * factor})
            changes.append(float(_loss(arrays, measured, dram_bytes_per_s, *(trial[n] for n in NAMES))) - base)
        identifiable[k] = min(changes) > 0.01 * max(base, 1e-3 * len(cases))
    fitted = {k: (values[k] if identifiable[k] else defaults[k]) for k in NAMES}
    pred = predict(arrays, dram_bytes_per_s, *(fitted[k] for k in NAMES))
    ratio = pred / measured
    return {"constants": fitted, "identifiable": identifiable, "cases": len(cases),
            "dram_bytes_per_s": dram_bytes_per_s,
            "predicted_over_measured": {"median": float(np.median(ratio)), "min": float(ratio.min()),
                                        "max": float(ratio.max())}}
