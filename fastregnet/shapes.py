"""Grouped-conv (f.b) shapes of the real models, shared by the microbenchmarks and the CLI harness."""

from __future__ import annotations

from fastregnet.design import resolve_name


def grouped_conv_shapes(model: str, resolution: int = 224) -> list[dict]:
    """One entry per stage: the stride-2 first block and a stride-1 block (when the stage has more than one).
    Each: channels, group width, groups, input H=W, stride."""
    p = resolve_name(model).params()
    out, res = [], resolution // 2  # after the stem
    for i, (d, w, g, b, s) in enumerate(p.stage_params()):
        c = int(round(w * b))
        out.append({"model": model, "stage": i + 1, "channels": c, "group_width": g, "groups": c // g, "hw": res,
                    "stride": s})
        res = (res - 1) // s + 1
        if d > 1:
            out.append({"model": model, "stage": i + 1, "channels": c, "group_width": g, "groups": c // g,
                        "hw": res, "stride": 1})
    return out


def block_shapes(model: str, resolution: int = 224) -> list[dict]:
    """One entry per stage: its first block (projection, stride 2). Each: width_in, width_out, stride, group width,
    SE ratio, input H=W."""
    p = resolve_name(model).params()
    out, res, w_in = [], resolution // 2, p.stem_width
    for i, (d, w, g, b, s) in enumerate(p.stage_params()):
        out.append({"model": model, "stage": i + 1, "width_in": w_in, "width_out": w, "stride": s, "group_width": g,
                    "se_ratio": p.se_ratio, "hw": res})
        res, w_in = (res - 1) // s + 1, w
    return out
