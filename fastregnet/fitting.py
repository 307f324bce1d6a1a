"""Fit the quantized linear rule to a network's per-block widths (paper, section 3.3).

Given per-block widths w_1..w_d, find (w0, wa, wm) whose quantized linear widths predict them best, measured as
e_fit = mean_j |log(predicted_j / observed_j)|: a grid search over wa (log-spaced) and wm for each candidate w0,
then a finer grid around the best point. A perfect fit (e_fit = 0) regenerates the observed widths exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .design import QUANT, check_int, generate_widths

__all__ = ["WidthFit", "fit_widths", "block_widths"]


@dataclass
class WidthFit:
    w0: int
    wa: float
    wm: float
    depth: int
    fit_error: float  # mean |log(predicted / observed)| over blocks
    predicted: list[int]

    def to_dict(self) -> dict:
        return {"w0": self.w0, "wa": self.wa, "wm": self.wm, "depth": self.depth, "fit_error": self.fit_error,
                "predicted_widths": self.predicted}


def block_widths(params) -> list[int]:
    """Per-block output widths of a RegNetParams (what the rule describes)."""
    return [w for _, w, _, _, _ in params.blocks()]


def _predict(w0: float, wa: np.ndarray, wm: np.ndarray, depth: int, q: int) -> np.ndarray:
    """Quantized widths for every (wa, wm) pair: shape (len(wa), len(wm), depth); pycls' arithmetic, vectorized."""
    j = np.arange(depth)
    u = w0 + wa[:, None, None] * j[None, None, :]
    s = np.round(np.log(u / w0) / np.log(wm)[None, :, None])
    return np.round(w0 * np.power(wm[None, :, None], s) / q) * q


def _search(observed: np.ndarray, w0s, wa_grid, wm_grid, q: int):
    log_obs = np.log(observed)
    best = (np.inf, None)
    for w0 in w0s:
        pred = _predict(w0, wa_grid, wm_grid, len(observed), q)
        err = np.abs(np.log(np.maximum(pred, 1)) - log_obs).mean(axis=-1)
        i, k = np.unravel_index(np.argmin(err), err.shape)
        if err[i, k] < best[0] - 1e-12:
            best = (float(err[i, k]), (int(w0), float(wa_grid[i]), float(wm_grid[k])))
    return best


def fit_widths(widths, q: int = QUANT) -> WidthFit:
    """The (w0, wa, wm) that best describe per-block `widths` (a list, first block first)."""
    widths = list(widths)
    if not widths:
        raise ValueError("widths must be a non-empty list of positive integers, got []")
    observed = np.asarray([check_int(f"widths[{i}]", w) for i, w in enumerate(widths)], dtype=float)
    q = check_int("q", q)
    # w_0 of the rule is the first block's width (s_0 = 0), so search multiples of q around it.
    first = max(q, int(round(observed[0] / q)) * q)
    w0s = sorted({max(q, first + k * q) for k in (-2, -1, 0, 1, 2)})
    err, (w0, wa, wm) = _search(observed, w0s, np.geomspace(0.5, 512, 600), np.linspace(1.5, 3.5, 401), q)
    # refine around the coarse optimum: wa to 0.01, wm to 0.001
    wa_fine = np.round(np.linspace(max(0.01, wa * 0.97), wa * 1.03, 241), 2)
    wm_fine = np.round(np.linspace(max(1.001, wm - 0.01), wm + 0.01, 41), 3)
    err2, best2 = _search(observed, [w0], wa_fine, wm_fine, q)
    if err2 <= err:
        err, (w0, wa, wm) = err2, best2
    predicted, _, _ = generate_widths(w0, wa, wm, len(observed), q)
    return WidthFit(w0, round(wa, 2), round(wm, 3), len(observed), err, predicted)
