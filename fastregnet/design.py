"""The RegNet design space: the quantized linear width rule, width/group compatibility, and the model zoo.

Radosavovic et al., "Designing Network Design Spaces" (CVPR 2020). A RegNet is generated from a depth d, an initial
width w0, a slope wa, a multiplier wm and a group width g:

    u_j = w0 + wa * j                      (j = 0 .. d-1, continuous widths)
    s_j = round(log(u_j / w0) / log(wm))   (the stage each block falls in)
    w_j = round(w0 * wm^s_j / q) * q       (quantized widths, q = 8)

Consecutive blocks of equal width form a stage. Two published implementations then make each stage's width
divisible by its group width, with different rounding (pycls rounds to the nearest multiple; torchvision uses
`_make_divisible`, which never rounds down by more than 10%). They disagree for regnet_x_400mf, regnet_y_800mf
and regnet_y_8gf, so both are implemented and the registry records which one each published model uses.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "RegNetParams",
    "ModelConfig",
    "generate_widths",
    "adjust_widths_groups",
    "make_divisible",
    "regnet_params",
    "MODEL_CONFIGS",
    "resolve_name",
    "list_configs",
    "check_int",
    "check_real",
]

QUANT = 8  # widths are multiples of 8
STEM_WIDTH = 32


def check_int(name: str, value, minimum: int = 1) -> int:
    """`value` as an int if it is one (not a bool, not a float) and >= minimum; else an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_real(name: str, value, minimum: float | None = None, above: float | None = None) -> float:
    """`value` as a finite float, >= minimum and/or > above; else an error naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if above is not None and value <= above:
        raise ValueError(f"{name} must be > {above}, got {value}")
    return value


def check_se_ratio(se_ratio) -> float | None:
    return None if se_ratio is None else check_real("se_ratio", se_ratio, minimum=0.0)


@dataclass(frozen=True)
class RegNetParams:
    """Per-stage description of an AnyNet/RegNet body: what the model constructors consume.

    depths, widths, group_widths, bottleneck_multipliers and strides have one entry per stage; se_ratio is None
    (RegNetX) or the SE width as a fraction of each block's input width (0.25 for RegNetY).
    """

    depths: tuple[int, ...]
    widths: tuple[int, ...]
    group_widths: tuple[int, ...]
    bottleneck_multipliers: tuple[float, ...]
    strides: tuple[int, ...]
    se_ratio: float | None = None
    stem_width: int = STEM_WIDTH

    def __post_init__(self):
        n = len(self.depths)
        if n < 1:
            raise ValueError("RegNetParams: needs at least one stage")
        for name in ("widths", "group_widths", "bottleneck_multipliers", "strides"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"RegNetParams: {name} has {len(getattr(self, name))} entries, depths has {n}")
        for i, (d, w, g, b, s) in enumerate(self.stage_params()):
            check_int(f"depths[{i}]", d)
            check_int(f"widths[{i}]", w)
            check_int(f"group_widths[{i}]", g)
            check_real(f"bottleneck_multipliers[{i}]", b, above=0.0)
            if check_int(f"strides[{i}]", s) not in (1, 2):
                raise ValueError(f"strides[{i}] must be 1 or 2, got {s}")
            w_b = int(round(w * b))
            if w_b < 1 or w_b % g != 0:
                raise ValueError(f"RegNetParams: stage {i} bottleneck width {w_b} is not divisible by its group "
                                 f"width {g}; use adjust_widths_groups() first")
        check_se_ratio(self.se_ratio)
        check_int("stem_width", self.stem_width)

    def stage_params(self):
        """(depth, width, group_width, bottleneck_multiplier, stride) for each stage."""
        return list(zip(self.depths, self.widths, self.group_widths, self.bottleneck_multipliers, self.strides))

    def blocks(self):
        """(width_in, width_out, stride, group_width, bottleneck_multiplier) for every block, in order."""
        out, w_in = [], self.stem_width
        for d, w, g, b, s in self.stage_params():
            for i in range(d):
                out.append((w_in, w, s if i == 0 else 1, g, b))
                w_in = w
        return out


def generate_widths(w0: float, wa: float, wm: float, depth: int, q: int = QUANT, rule: str = "pycls"):
    """Per-block quantized widths of the linear rule, and the per-stage (widths, depths).

    rule="pycls" computes in float64 (numpy, as pycls does); rule="torchvision" computes in float32 with torch, as
    torchvision's BlockParams.from_init_params does (the two can differ by float rounding at a .5 boundary).
    Returns (block_widths, stage_widths, stage_depths).
    """
    depth, q = check_int("depth", depth), check_int("q", q)
    w0, wa, wm = check_real("w0", w0, above=0.0), check_real("wa", wa, minimum=0.0), check_real("wm", wm, above=1.0)
    if w0 % q != 0:
        raise ValueError(f"w0 must be a multiple of {q}, got {w0}")
    if rule == "pycls":
        u = np.arange(depth) * wa + w0
        s = np.round(np.log(u / w0) / np.log(wm))
        block_widths = (np.round(w0 * np.power(wm, s) / q).astype(int) * q).tolist()
    elif rule == "torchvision":
        import torch

        u = torch.arange(depth, device="cpu") * wa + w0  # plain numbers: never on a default (e.g. meta) device
        s = torch.round(torch.log(u / w0) / math.log(wm))
        block_widths = (torch.round(torch.divide(w0 * torch.pow(wm, s), q)) * q).int().tolist()
    else:
        raise ValueError(f"unknown width rule {rule!r}; expected 'pycls' or 'torchvision'")
    stage_widths, stage_depths = [], []
    for w in block_widths:
        if stage_widths and stage_widths[-1] == w:
            stage_depths[-1] += 1
        else:
            stage_widths.append(w)
            stage_depths.append(1)
    return block_widths, stage_widths, stage_depths


def make_divisible(v: float, divisor: int, min_value: int | None = None) -> int:
    """torchvision's `_make_divisible`: nearest multiple of divisor, but never more than 10% below v."""
    min_value = divisor if min_value is None else min_value
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def adjust_widths_groups(widths, bottleneck_multipliers, group_widths, rule: str = "pycls"):
    """Make every stage's bottleneck width divisible by its group width; returns (widths, group_widths).

    The group width is first capped at the bottleneck width. pycls then rounds the bottleneck width to the nearest
    multiple of the group width (or of lcm(g, b) when b > 1); torchvision uses make_divisible.
    """
    widths, bottleneck_multipliers, group_widths = list(widths), list(bottleneck_multipliers), list(group_widths)
    for name, values in (("bottleneck_multipliers", bottleneck_multipliers), ("group_widths", group_widths)):
        if len(values) != len(widths):
            raise ValueError(f"adjust_widths_groups: {name} has {len(values)} entries, widths has {len(widths)}; "
                             f"expected one entry per stage in each")
    ws_bot = [int(max(1, w * b)) if rule == "pycls" else int(w * b) for w, b in zip(widths, bottleneck_multipliers)]
    gs = [int(min(g, v)) for g, v in zip(group_widths, ws_bot)]
    if rule == "pycls":
        ms = [int(np.lcm(g, int(b))) if b > 1 and float(b).is_integer() else g for g, b in zip(gs, bottleneck_multipliers)]
        ws_bot = [max(m, int(round(v / m) * m)) for v, m in zip(ws_bot, ms)]
    elif rule == "torchvision":
        ws_bot = [make_divisible(v, g) for v, g in zip(ws_bot, gs)]
    else:
        raise ValueError(f"unknown width rule {rule!r}; expected 'pycls' or 'torchvision'")
    ws = [int(v / b) for v, b in zip(ws_bot, bottleneck_multipliers)]
    return ws, gs


def regnet_params(depth: int, w0: float, wa: float, wm: float, group_width: int, bottleneck_multiplier: float = 1.0,
                  se_ratio: float | None = None, rule: str = "pycls", stem_width: int = STEM_WIDTH,
                  stride: int = 2) -> RegNetParams:
    """RegNetParams from the RegNet design parameters (d, w0, wa, wm, g, b, se_ratio)."""
    check_int("group_width", group_width)
    check_real("bottleneck_multiplier", bottleneck_multiplier, above=0.0)
    check_se_ratio(se_ratio)
    check_int("stem_width", stem_width)
    _, widths, depths = generate_widths(w0, wa, wm, depth, rule=rule)
    n = len(widths)
    bms = [bottleneck_multiplier] * n
    widths, gws = adjust_widths_groups(widths, bms, [group_width] * n, rule=rule)
    return RegNetParams(tuple(depths), tuple(widths), tuple(gws), tuple(bms), (stride,) * n, se_ratio, stem_width)


@dataclass(frozen=True)
class ModelConfig:
    """One published model: its design parameters and which implementation's rounding defines its widths."""

    name: str  # canonical name
    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float | None
    rule: str  # "pycls" or "torchvision"
    aliases: tuple[str, ...] = field(default=())

    @property
    def family(self) -> str:
        return "RegNetY" if self.se_ratio else "RegNetX"

    def params(self) -> RegNetParams:
        return regnet_params(self.depth, self.w0, self.wa, self.wm, self.group_width, 1.0, self.se_ratio, self.rule)


# (depth, w0, wa, wm, group_width) of the pycls dds_baselines (configs/dds_baselines/regnet{x,y}/*.yaml).
_PYCLS = {
    "RegNetX-200MF": (13, 24, 36.44, 2.49, 8),
    "RegNetX-400MF": (22, 24, 24.48, 2.54, 16),
    "RegNetX-600MF": (16, 48, 36.97, 2.24, 24),
    "RegNetX-800MF": (16, 56, 35.73, 2.28, 16),
    "RegNetX-1.6GF": (18, 80, 34.01, 2.25, 24),
    "RegNetX-3.2GF": (25, 88, 26.31, 2.25, 48),
    "RegNetX-4.0GF": (23, 96, 38.65, 2.43, 40),
    "RegNetX-6.4GF": (17, 184, 60.83, 2.07, 56),
    "RegNetX-8.0GF": (23, 80, 49.56, 2.88, 120),
    "RegNetX-12GF": (19, 168, 73.36, 2.37, 112),
    "RegNetX-16GF": (22, 216, 55.59, 2.1, 128),
    "RegNetX-32GF": (23, 320, 69.86, 2.0, 168),
    "RegNetY-200MF": (13, 24, 36.44, 2.49, 8),
    "RegNetY-400MF": (16, 48, 27.89, 2.09, 8),
    "RegNetY-600MF": (15, 48, 32.54, 2.32, 16),
    "RegNetY-800MF": (14, 56, 38.84, 2.4, 16),
    "RegNetY-1.6GF": (27, 48, 20.71, 2.65, 24),
    "RegNetY-3.2GF": (21, 80, 42.63, 2.66, 24),
    "RegNetY-4.0GF": (22, 96, 31.41, 2.24, 64),
    "RegNetY-6.4GF": (25, 112, 33.22, 2.27, 72),
    "RegNetY-8.0GF": (17, 192, 76.82, 2.19, 56),
    "RegNetY-12GF": (19, 168, 73.36, 2.37, 112),
    "RegNetY-16GF": (18, 200, 106.23, 2.48, 112),
    "RegNetY-32GF": (20, 232, 115.89, 2.53, 232),
}

# torchvision builders (torchvision/models/regnet.py), all with torchvision's rounding.
_TORCHVISION = {
    "regnet_y_400mf": (16, 48, 27.89, 2.09, 8),
    "regnet_y_800mf": (14, 56, 38.84, 2.4, 16),
    "regnet_y_1_6gf": (27, 48, 20.71, 2.65, 24),
    "regnet_y_3_2gf": (21, 80, 42.63, 2.66, 24),
    "regnet_y_8gf": (17, 192, 76.82, 2.19, 56),
    "regnet_y_16gf": (18, 200, 106.23, 2.48, 112),
    "regnet_y_32gf": (20, 232, 115.89, 2.53, 232),
    "regnet_y_128gf": (27, 456, 160.83, 2.52, 264),
    "regnet_x_400mf": (22, 24, 24.48, 2.54, 16),
    "regnet_x_800mf": (16, 56, 35.73, 2.28, 16),
    "regnet_x_1_6gf": (18, 80, 34.01, 2.25, 24),
    "regnet_x_3_2gf": (25, 88, 26.31, 2.25, 48),
    "regnet_x_8gf": (23, 80, 49.56, 2.88, 120),
    "regnet_x_16gf": (22, 216, 55.59, 2.1, 128),
    "regnet_x_32gf": (23, 320, 69.86, 2.0, 168),
}

# timm names of the pycls models ("regnety_040" is RegNetY-4.0GF) and of its torchvision-rounded variants.
_TIMM_SUFFIX = {"200MF": "002", "400MF": "004", "600MF": "006", "800MF": "008", "1.6GF": "016", "3.2GF": "032",
                "4.0GF": "040", "6.4GF": "064", "8.0GF": "080", "12GF": "120", "16GF": "160", "32GF": "320"}
_TIMM_TV = {"regnetx_004_tv": "regnet_x_400mf", "regnety_008_tv": "regnet_y_800mf", "regnety_080_tv": "regnet_y_8gf"}


def _build_registry() -> dict[str, ModelConfig]:
    reg = {}
    for name, (d, w0, wa, wm, g) in _PYCLS.items():
        family, size = name.split("-")
        timm_name = f"{family.lower()}_{_TIMM_SUFFIX[size]}"
        se = 0.25 if family == "RegNetY" else None
        reg[name] = ModelConfig(name, d, w0, wa, wm, g, se, "pycls", (timm_name,))
    for name, (d, w0, wa, wm, g) in _TORCHVISION.items():
        se = 0.25 if name.startswith("regnet_y") else None
        aliases = tuple(t for t, tv in _TIMM_TV.items() if tv == name)
        reg[name] = ModelConfig(name, d, w0, wa, wm, g, se, "torchvision", aliases)
    return reg


MODEL_CONFIGS: dict[str, ModelConfig] = _build_registry()
_ALIASES = {a.lower(): c.name for c in MODEL_CONFIGS.values() for a in (c.name, *c.aliases)}


def resolve_name(name: str) -> ModelConfig:
    """The config for a torchvision ("regnet_y_400mf"), pycls ("RegNetY-400MF") or timm ("regnety_004") name."""
    key = str(name).strip().lower()
    if key.startswith("timm/"):
        key = key[5:].split(".")[0]
    if key not in _ALIASES:
        import difflib

        close = difflib.get_close_matches(key, list(_ALIASES), n=3)
        hint = f" Did you mean {', '.join(repr(_ALIASES[c]) for c in close)}?" if close else ""
        raise ValueError(f"unknown RegNet model {name!r}.{hint} See fastregnet.list_models() for the "
                         f"{len(MODEL_CONFIGS)} known names.")
    return MODEL_CONFIGS[_ALIASES[key]]


def list_configs(pattern: str | None = None) -> list[str]:
    """Canonical model names (torchvision builders first, then pycls), optionally filtered by a glob pattern."""
    import fnmatch

    names = list(_TORCHVISION) + list(_PYCLS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n.lower(), pattern.lower())]
    return names
