"""Samplers for the design spaces of "Designing Network Design Spaces" (Radosavovic et al., 2020), section 3.

AnyNetX_A: 4 stages, each with free depth d_i <= 16, width w_i (a multiple of 8, <= 1024), bottleneck ratio
b_i in {1, 2, 4} and group width g_i in {1, ..., 32}. The refinements:
    B: one b shared by all stages        C: B + one g shared by all stages
    D: C + increasing widths (w_{i+1} >= w_i)    E: D + increasing depths (d_{i+1} >= d_i)
RegNetX (the paper's refined space, pycls ranges): d in [12, 28], w0 in [8, 256] (log-uniform, multiple of 8),
wa in [8, 256] (log-uniform, step 0.1), wm in [2, 3] (log-uniform, step 0.001), g in {8, 16, 32, 64, 128}, b = 1,
exactly 4 stages after the quantized linear rule. RegNetY = RegNetX + SE (ratio 0.25).

A bottleneck ratio b divides the width: the block's inner width is w / b (bottleneck_multiplier 1 / b), and the
group width must divide it. Invalid draws are redrawn (rejection), per stage where stages are independent; D and E
sort the independent draws, which keeps every draw valid. A complexity constraint (flops and/or params range at a
resolution) is applied by rejection over whole models. Everything draws from one numpy Generator seeded by `seed`,
so the same seed gives the same models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .complexity import count_complexity
from .design import RegNetParams, adjust_widths_groups, check_int, check_real, generate_widths

__all__ = ["SPACES", "Sample", "sample_space", "complexity_bounds", "parse_amount", "parse_range", "check_sample"]

SPACES = ("anynetx_a", "anynetx_b", "anynetx_c", "anynetx_d", "anynetx_e", "regnetx", "regnety")

ANYNET_MAX_DEPTH = 16
ANYNET_MAX_WIDTH = 1024
ANYNET_BOTTLENECKS = (1, 2, 4)
ANYNET_MAX_GROUP = 32
REGNET_DEPTH = (12, 28)
REGNET_W0 = (8, 256)
REGNET_WA = (8.0, 256.0)
REGNET_WM = (2.0, 3.0)
REGNET_GROUPS = (8, 16, 32, 64, 128)
MAX_TRIES = 200_000
# How refined each AnyNetX space is: B shares b, C also g, D also sorts widths, E also sorts depths.
_REFINEMENT = {"anynetx_a": 0, "anynetx_b": 1, "anynetx_c": 2, "anynetx_d": 3, "anynetx_e": 4}


@dataclass
class Sample:
    """One sampled model: its space, per-stage description, design parameters (RegNet spaces) and complexity."""

    space: str
    params: RegNetParams
    design: dict = field(default_factory=dict)
    flops: int = 0
    num_params: int = 0
    acts: int = 0

    def build(self, num_classes: int = 1000):
        """The fastregnet.RegNet this sample describes."""
        from .models import RegNet

        return RegNet(self.params, num_classes=num_classes)

    def to_dict(self) -> dict:
        p = self.params
        return {"space": self.space, **self.design, "depths": list(p.depths), "widths": list(p.widths),
                "group_widths": list(p.group_widths), "bottleneck_ratios": [round(1 / b, 6) for b in
                                                                           p.bottleneck_multipliers],
                "se_ratio": p.se_ratio, "flops": self.flops, "params": self.num_params, "acts": self.acts}


def parse_amount(text) -> float:
    """'400M' -> 4e8, '1.6G' -> 1.6e9, '250k' -> 2.5e5, '3e6' -> 3e6."""
    s = str(text).strip().upper()
    scale = {"K": 1e3, "M": 1e6, "G": 1e9}.get(s[-1:], 1.0)
    try:
        value = float(s[:-1] if scale != 1.0 else s) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise ValueError(f"cannot read an amount from {text!r}; use e.g. 400M, 1.6G or 3e6")
    return value


def parse_range(text, tolerance: float = 0.1) -> tuple[float, float] | None:
    """'360M:440M' -> (3.6e8, 4.4e8); a single amount '400M' -> +-tolerance around it; None stays None."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        if len(text) != 2:
            raise ValueError(f"a complexity range is (low, high), got {text!r}")
        lo, hi = check_real("low", text[0]), check_real("high", text[1])
    elif ":" in str(text):
        lo, hi = (parse_amount(t) for t in str(text).split(":", 1))
    else:
        v = parse_amount(text)
        tolerance = check_real("tolerance", tolerance, minimum=0.0)
        lo, hi = v * (1 - tolerance), v * (1 + tolerance)
    if not 0 <= lo <= hi:
        raise ValueError(f"empty complexity range {text!r}")
    return lo, hi


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, q: float) -> float:
    """Log-uniform in [lo, hi], rounded to a multiple of q and kept inside the range."""
    v = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    v = round(v / q) * q
    return float(min(max(v, math.ceil(lo / q) * q), math.floor(hi / q) * q))


def _anynet_stage(rng, b: int | None, g: int | None) -> tuple[int, int, int, int]:
    """One valid AnyNetX stage (d, w, b, g): redraw until the group width divides the bottleneck width."""
    for _ in range(MAX_TRIES):
        d = int(rng.integers(1, ANYNET_MAX_DEPTH + 1))
        w = 8 * int(rng.integers(1, ANYNET_MAX_WIDTH // 8 + 1))
        bb = b if b is not None else int(rng.choice(ANYNET_BOTTLENECKS))
        gg = g if g is not None else int(rng.integers(1, ANYNET_MAX_GROUP + 1))
        if w % bb == 0 and (w // bb) % gg == 0:
            return d, w, bb, gg
    raise RuntimeError("no valid AnyNet stage found")  # unreachable for these ranges: w=8*g*b always works


def _anynet(space: str, rng) -> tuple[RegNetParams, dict]:
    shared_b = int(rng.choice(ANYNET_BOTTLENECKS)) if _REFINEMENT[space] >= 1 else None
    shared_g = int(rng.integers(1, ANYNET_MAX_GROUP + 1)) if _REFINEMENT[space] >= 2 else None
    stages = [_anynet_stage(rng, shared_b, shared_g) for _ in range(4)]
    if _REFINEMENT[space] >= 3:  # increasing widths: sort the independent draws (each stays valid)
        stages = [(d, w, b, g) for (d, _, b, g), w in zip(stages, sorted(s[1] for s in stages))]
    if _REFINEMENT[space] >= 4:  # increasing depths
        stages = [(d, w, b, g) for (_, w, b, g), d in zip(stages, sorted(s[0] for s in stages))]
    d, w, b, g = zip(*stages)
    params = RegNetParams(tuple(d), tuple(w), tuple(g), tuple(1.0 / x for x in b), (2,) * 4, None)
    design = {"shared_bottleneck_ratio": shared_b, "shared_group_width": shared_g}
    return params, {k: v for k, v in design.items() if v is not None}


def _regnet(space: str, rng) -> tuple[RegNetParams, dict] | None:
    """One RegNet draw, or None when the quantized linear rule does not give exactly 4 stages."""
    d = int(rng.integers(REGNET_DEPTH[0], REGNET_DEPTH[1] + 1))
    w0 = int(_log_uniform(rng, *REGNET_W0, 8))
    wa = round(_log_uniform(rng, *REGNET_WA, 0.1), 1)
    wm = round(_log_uniform(rng, *REGNET_WM, 0.001), 3)
    g = int(rng.choice(REGNET_GROUPS))
    _, widths, depths = generate_widths(w0, wa, wm, d)
    if len(widths) != 4:
        return None
    widths, gws = adjust_widths_groups(widths, [1.0] * 4, [g] * 4)
    se = 0.25 if space == "regnety" else None
    params = RegNetParams(tuple(depths), tuple(widths), tuple(gws), (1.0,) * 4, (2,) * 4, se)
    return params, {"depth": d, "w0": w0, "wa": wa, "wm": wm, "group_width": g}


def _four_stages(depths, width: int, group_width: int, bottleneck_ratio: int, se_ratio) -> RegNetParams:
    return RegNetParams(tuple(depths), (width,) * 4, (group_width,) * 4, (1.0 / bottleneck_ratio,) * 4, (2,) * 4,
                        se_ratio)


def complexity_bounds(space: str, resolution: int = 224) -> dict[str, tuple[int, int]]:
    """{"flops": (lo, hi), "params": (lo, hi)}: no model of `space` has its flops or params outside these at
    `resolution`. A block's counts grow with its resolution, depth, width, inner width (w / b) and group width, so
    models at the extremes of the space's ranges bound them. For AnyNetX those are members (4 stages of d=1, w=8,
    b=4, g=1 and of d=16, w=1024, b=1, g=32), so the bounds are exact; for RegNet they are looser, from at least 12
    blocks of width >= 8 and group width >= 8, and at most 25 blocks per stage, each below the widest width the
    quantized linear rule can reach, with group width <= 128."""
    se = 0.25 if space == "regnety" else None
    if space.startswith("anynet"):
        small = _four_stages((1,) * 4, 8, 1, max(ANYNET_BOTTLENECKS), None)
        large = _four_stages((ANYNET_MAX_DEPTH,) * 4, ANYNET_MAX_WIDTH, ANYNET_MAX_GROUP, 1, None)
    else:
        # later blocks at the last stage's resolution, the cheapest; every stage has a block
        small = _four_stages((1, 1, 1, REGNET_DEPTH[0] - 3), 8, min(REGNET_GROUPS), 1, se)
        # u_j <= w0 + wa * (d - 1); rounding s_j to an integer multiplies by at most sqrt(wm), then quantizing adds
        # <= 4 and the group rounding <= g / 2
        u_max = REGNET_W0[1] + REGNET_WA[1] * (REGNET_DEPTH[1] - 1)
        g = max(REGNET_GROUPS)
        widest = math.ceil((u_max * math.sqrt(REGNET_WM[1]) + 4 + g / 2) / g) * g
        large = _four_stages((REGNET_DEPTH[1] - 3,) * 4, widest, g, 1, se)
    lo, hi = count_complexity(small, resolution), count_complexity(large, resolution)
    return {k: (lo[k], hi[k]) for k in ("flops", "params")}


def sample_space(space: str, n: int, seed: int = 0, flops: tuple[float, float] | None = None,
                 params: tuple[float, float] | None = None, resolution: int = 224,
                 max_tries: int = MAX_TRIES) -> list[Sample]:
    """`n` models from `space` whose flops and params fall in the given [lo, hi] ranges (at `resolution`)."""
    space = str(space).lower().replace("-", "_")
    if space not in SPACES:
        raise ValueError(f"unknown design space {space!r}; expected one of {', '.join(SPACES)}")
    n = check_int("n", n, minimum=0)
    bounds = complexity_bounds(space, resolution)
    for what, wanted in (("flops", flops), ("params", params)):
        # refuse up front what no draw can meet (rejection sampling would spend max_tries draws to find out)
        if wanted and not (bounds[what][0] <= wanted[1] and wanted[0] <= bounds[what][1]):
            raise ValueError(f"no {space} model has {what} in [{wanted[0]:,.0f}, {wanted[1]:,.0f}] at "
                             f"{resolution}x{resolution}: every {space} model has between {bounds[what][0]:,} and "
                             f"{bounds[what][1]:,} {what}")
    rng = np.random.default_rng(seed)
    out, tries = [], 0
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            raise ValueError(f"found only {len(out)} of {n} {space} models within flops={flops}, params={params} "
                             f"after {max_tries} draws; widen the range")
        drawn = _regnet(space, rng) if space.startswith("regnet") else _anynet(space, rng)
        if drawn is None:
            continue
        p, design = drawn
        cx = count_complexity(p, resolution)
        if flops and not flops[0] <= cx["flops"] <= flops[1]:
            continue
        if params and not params[0] <= cx["params"] <= params[1]:
            continue
        out.append(Sample(space, p, design, cx["flops"], cx["params"], cx["acts"]))
    return out


def check_sample(s: Sample) -> list[str]:
    """Every constraint of the sample's space that it breaks (empty when it is a valid member)."""
    p, bad = s.params, []
    ratios = [round(1 / b) for b in p.bottleneck_multipliers]
    if len(p.depths) != 4:
        bad.append(f"{len(p.depths)} stages, not 4")
    for i, (d, w, g, b) in enumerate(zip(p.depths, p.widths, p.group_widths, ratios)):
        if (w // b) % g:
            bad.append(f"stage {i}: group width {g} does not divide bottleneck width {w // b}")
    if s.space.startswith("anynet"):
        for i, (d, w, g, b) in enumerate(zip(p.depths, p.widths, p.group_widths, ratios)):
            if not 1 <= d <= ANYNET_MAX_DEPTH or w % 8 or not 8 <= w <= ANYNET_MAX_WIDTH \
                    or b not in ANYNET_BOTTLENECKS or not 1 <= g <= ANYNET_MAX_GROUP:
                bad.append(f"stage {i} out of AnyNetX_A ranges: d={d} w={w} b={b} g={g}")
        if _REFINEMENT[s.space] >= 1 and len(set(ratios)) != 1:
            bad.append(f"bottleneck ratios not shared: {ratios}")
        if _REFINEMENT[s.space] >= 2 and len(set(p.group_widths)) != 1:
            bad.append(f"group widths not shared: {p.group_widths}")
        if _REFINEMENT[s.space] >= 3 and list(p.widths) != sorted(p.widths):
            bad.append(f"widths not increasing: {p.widths}")
        if _REFINEMENT[s.space] >= 4 and list(p.depths) != sorted(p.depths):
            bad.append(f"depths not increasing: {p.depths}")
        if p.se_ratio:
            bad.append("AnyNetX has no SE")
    else:
        dz = s.design
        if not (REGNET_DEPTH[0] <= dz["depth"] <= REGNET_DEPTH[1] and REGNET_W0[0] <= dz["w0"] <= REGNET_W0[1]
                and dz["w0"] % 8 == 0 and REGNET_WA[0] <= dz["wa"] <= REGNET_WA[1]
                and REGNET_WM[0] <= dz["wm"] <= REGNET_WM[1] and dz["group_width"] in REGNET_GROUPS):
            bad.append(f"design parameters out of range: {dz}")
        if sum(p.depths) != dz["depth"]:
            bad.append(f"stage depths {p.depths} do not add up to d={dz['depth']}")
        if any(b != 1 for b in ratios):
            bad.append(f"RegNet has b = 1, got {ratios}")
        if (s.space == "regnety") != bool(p.se_ratio):
            bad.append(f"se_ratio {p.se_ratio} wrong for {s.space}")
    return bad
