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


def pointwise_eval_shapes(model: str, resolution: int = 224) -> list[dict]:
    """The distinct eval 1x1 GEMMs of a model (conv a; conv c with its projection where the block has one): input
    channels k, output channels n, output H=W, and the projection's input channels and stride (0 without one)."""
    p = resolve_name(model).params()
    out, seen, res = [], set(), resolution // 2
    for w_in, w_out, stride, _, _ in p.blocks():
        ho = (res - 1) // stride + 1
        proj = stride != 1 or w_in != w_out
        for shape in ({"k": w_in, "n": w_out, "hw": res, "proj_k": 0, "proj_stride": 0},
                      {"k": w_out, "n": w_out, "hw": ho, "proj_k": w_in if proj else 0,
                       "proj_stride": stride if proj else 0}):
            key = (shape["k"], shape["n"], shape["proj_k"] > 0)
            if key not in seen:
                seen.add(key)
                out.append({"model": model, **shape})
        res = ho
    return out


def pointwise_train_shapes(model: str, resolution: int = 224) -> list[dict]:
    """The distinct training 1x1 GEMMs of a model (conv a; the projection; conv c, gated where the block has SE):
    input channels k, output channels n, input H=W, stride, and whether SE gates the input."""
    p = resolve_name(model).params()
    out, seen, res = [], set(), resolution // 2
    for w_in, w_out, stride, _, _ in p.blocks():
        ho = (res - 1) // stride + 1
        shapes = [{"k": w_in, "n": w_out, "hw": res, "stride": 1, "gated": False},
                  {"k": w_out, "n": w_out, "hw": ho, "stride": 1, "gated": bool(p.se_ratio)}]
        if stride != 1 or w_in != w_out:
            shapes.append({"k": w_in, "n": w_out, "hw": res, "stride": stride, "gated": False})
        for shape in shapes:
            key = (shape["k"], shape["n"], shape["stride"], shape["gated"])
            if key not in seen:
                seen.add(key)
                out.append({"model": model, **shape})
        res = ho
    return out
