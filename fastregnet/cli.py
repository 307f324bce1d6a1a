"""The `fastregnet` command: list, info, bench, sample, fit, edf."""

from __future__ import annotations

import argparse
import json
import sys

from .complexity import count_complexity, stage_complexity
from .design import MODEL_CONFIGS, list_configs, resolve_name


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(int(n))


def model_info(name: str, resolution: int = 224) -> dict:
    """Everything `fastregnet info` shows, as a JSON-ready dict; params/flops/acts are the model totals."""
    cfg = resolve_name(name)
    p = cfg.params()
    blocks = p.blocks()
    stages, i = [], 0
    for s, (d, w, g, b, stride) in enumerate(p.stage_params()):
        w_in = blocks[i][0]
        se = int(round(p.se_ratio * w_in)) if p.se_ratio else 0
        se_rest = int(round(p.se_ratio * w)) if p.se_ratio and d > 1 else None
        stages.append({"stage": s + 1, "depth": d, "width": w, "group_width": g, "groups": int(w * b) // g,
                       "bottleneck_multiplier": b, "stride": stride, "se_width_first_block": se,
                       "se_width_other_blocks": se_rest})
        i += d
    totals = count_complexity(p, resolution)
    return {"name": cfg.name, "family": cfg.family, "aliases": list(cfg.aliases), "width_rounding": cfg.rule,
            "design": {"depth": cfg.depth, "w0": cfg.w0, "wa": cfg.wa, "wm": cfg.wm, "group_width": cfg.group_width,
                       "se_ratio": cfg.se_ratio},
            "resolution": resolution, "stem_width": p.stem_width, "stages": stages,
            "per_stage_complexity": stage_complexity(p, resolution), **totals}


def _cmd_list(args) -> int:
    names = list_configs(args.pattern)
    print(f"{'name':<16} {'family':<8} {'rounding':<12} {'params':>8} {'flops':>8}  aliases")
    for n in names:
        cfg = MODEL_CONFIGS[n]
        cx = count_complexity(cfg.params())
        print(f"{n:<16} {cfg.family:<8} {cfg.rule:<12} {_human(cx['params']):>8} {_human(cx['flops']):>8}  "
              f"{', '.join(cfg.aliases)}")
    return 0


def _cmd_info(args) -> int:
    info = model_info(args.name, args.resolution)
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    print(f"{info['name']} ({info['family']}, {info['width_rounding']} rounding) at {info['resolution']}x"
          f"{info['resolution']}")
    d = info["design"]
    print(f"  design: d={d['depth']} w0={d['w0']} wa={d['wa']} wm={d['wm']} g={d['group_width']} "
          f"se_ratio={d['se_ratio']}")
    print(f"  {'stage':<6} {'depth':>5} {'width':>6} {'group_w':>7} {'groups':>6} {'stride':>6} {'se_w':>9}")
    for s in info["stages"]:
        se = f"{s['se_width_first_block']}/{s['se_width_other_blocks']}" if info["design"]["se_ratio"] else "-"
        print(f"  {s['stage']:<6} {s['depth']:>5} {s['width']:>6} {s['group_width']:>7} {s['groups']:>6} "
              f"{s['stride']:>6} {se:>9}")
    print(f"  params {info['params']:,}  flops {info['flops']:,} (multiply-adds)  acts {info['acts']:,}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastregnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the model zoo")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'regnet_y*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="widths, depths, groups, SE widths and complexity of one model")
    p.add_argument("name", help="torchvision, timm or pycls name")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--resolution", type=int, default=224)
    p.set_defaults(func=_cmd_info)

    from . import bench as _bench

    _bench.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, TypeError, FileNotFoundError) as e:
        print(f"fastregnet {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
