"""Complexity of a RegNet/AnyNet as pycls counts it: flops (multiply-adds), params and acts (output activations).

Counts follow pycls' `complexity()` methods exactly, so the published numbers (pycls dev/model_complexity.json)
are reproduced to the unit: convolutions assume padding k//2 (output size (h - 1) // stride + 1), BatchNorm adds
2 params per channel and no flops or acts, SE counts its two 1x1 convs with bias on a 1x1 map, and the head is a
global pool plus a linear layer with bias. Element-wise ops (ReLU, sigmoid, residual adds) are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from .design import RegNetParams, check_int

__all__ = ["Complexity", "count_complexity", "stage_complexity"]


@dataclass
class Complexity:
    """Running counter: spatial size of the current activation and the totals so far."""

    h: int
    w: int
    flops: int = 0
    params: int = 0
    acts: int = 0

    def conv(self, c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, bias: bool = False):
        self.h, self.w = (self.h - 1) // stride + 1, (self.w - 1) // stride + 1
        hw = self.h * self.w
        self.flops += k * k * c_in * c_out * hw // groups + (c_out * hw if bias else 0)
        self.params += k * k * c_in * c_out // groups + (c_out if bias else 0)
        self.acts += c_out * hw
        return self

    def norm(self, c: int):
        self.params += 2 * c
        return self

    def global_pool(self):
        self.h, self.w = 1, 1
        return self

    def linear(self, c_in: int, c_out: int, bias: bool = True):
        self.flops += c_in * c_out + (c_out if bias else 0)
        self.params += c_in * c_out + (c_out if bias else 0)
        self.acts += c_out
        return self

    def totals(self) -> dict[str, int]:
        return {"flops": int(self.flops), "params": int(self.params), "acts": int(self.acts)}


def _block(cx: Complexity, w_in: int, w_out: int, stride: int, group_width: int, bottleneck: float,
           se_ratio: float | None) -> None:
    """One residual bottleneck block (pycls ResBottleneckBlock.complexity)."""
    if w_in != w_out or stride != 1:
        h, w = cx.h, cx.w
        cx.conv(w_in, w_out, 1, stride=stride).norm(w_out)
        cx.h, cx.w = h, w
    w_b = int(round(w_out * bottleneck))
    w_se = int(round(w_in * se_ratio)) if se_ratio else 0
    cx.conv(w_in, w_b, 1).norm(w_b)
    cx.conv(w_b, w_b, 3, stride=stride, groups=w_b // group_width).norm(w_b)
    if w_se:
        h, w = cx.h, cx.w
        cx.global_pool().conv(w_b, w_se, 1, bias=True).conv(w_se, w_b, 1, bias=True)
        cx.h, cx.w = h, w
    cx.conv(w_b, w_out, 1).norm(w_out)


def _check_ends(num_classes, in_channels) -> None:
    check_int("num_classes", num_classes, minimum=0)  # 0: no classifier, as RegNet(num_classes=0)
    check_int("in_channels", in_channels)


def count_complexity(params: RegNetParams, resolution: int = 224, num_classes: int = 1000,
                     in_channels: int = 3) -> dict[str, int]:
    """Total flops (multiply-adds), params and acts of a model at a square input of `resolution` pixels."""
    cx = Complexity(check_int("resolution", resolution), resolution)
    _check_ends(num_classes, in_channels)
    cx.conv(in_channels, params.stem_width, 3, stride=2).norm(params.stem_width)
    for w_in, w_out, stride, g, b in params.blocks():
        _block(cx, w_in, w_out, stride, g, b, params.se_ratio)
    w_last = params.widths[-1]
    cx.global_pool().linear(w_last, num_classes)
    return cx.totals()


def stage_complexity(params: RegNetParams, resolution: int = 224, num_classes: int = 1000,
                     in_channels: int = 3) -> list[dict]:
    """The same count split into stem, each stage and head; each entry has name, out size and its own counts."""
    cx = Complexity(check_int("resolution", resolution), resolution)
    _check_ends(num_classes, in_channels)
    rows, last = [], {"flops": 0, "params": 0, "acts": 0}

    def close(name):
        nonlocal last
        t = cx.totals()
        rows.append({"name": name, "out_hw": [cx.h, cx.w], **{k: t[k] - last[k] for k in t}})
        last = t

    cx.conv(in_channels, params.stem_width, 3, stride=2).norm(params.stem_width)
    close("stem")
    blocks = iter(params.blocks())
    for i, depth in enumerate(params.depths):
        for _ in range(depth):
            w_in, w_out, stride, g, b = next(blocks)
            _block(cx, w_in, w_out, stride, g, b, params.se_ratio)
        close(f"stage{i + 1}")
    cx.global_pool().linear(params.widths[-1], num_classes)
    close("head")
    return rows
