"""The `fastregnet` command: list, info, bench, sample, fit, edf, explore, gpu-campaign, campaign-apply, cost,
export."""

from __future__ import annotations

import argparse
import json
import sys

from .backend import get_backend
from .cli_args import OneLineErrorParser, non_negative_int, positive_int
from .complexity import count_complexity, stage_complexity
from .design import MODEL_CONFIGS, list_configs, resolve_name
from .export import RuntimeMissing


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


def _cmd_sample(args) -> int:
    from .sampling import parse_range, sample_space

    samples = sample_space(args.space, args.n, seed=args.seed, flops=parse_range(args.flops, args.tolerance),
                           params=parse_range(args.params, args.tolerance), resolution=args.resolution)
    rows = [s.to_dict() for s in samples]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'#':>3} {'flops':>8} {'params':>8}  {'depths':<16} {'widths':<22} {'group_w':<16} design")
    for i, r in enumerate(rows):
        design = {k: r[k] for k in ("depth", "w0", "wa", "wm", "group_width", "shared_bottleneck_ratio",
                                    "shared_group_width") if k in r}
        print(f"{i:>3} {_human(r['flops']):>8} {_human(r['params']):>8}  {str(r['depths']):<16} "
              f"{str(r['widths']):<22} {str(r['group_widths']):<16} {design}")
    return 0


def _cmd_fit(args) -> int:
    from .fitting import block_widths, fit_widths

    if args.model:
        widths = block_widths(resolve_name(args.model).params())
    elif args.widths:
        widths = [int(w) for w in args.widths.replace(",", " ").split()]
    else:
        raise ValueError("give --widths W1,W2,... (per block) or --model NAME")
    fit = fit_widths(widths)
    out = {"observed_widths": widths, **fit.to_dict()}
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"w0={fit.w0} wa={fit.wa} wm={fit.wm} d={fit.depth}  e_fit={fit.fit_error:.4f} (mean |log ratio|)")
        print(f"  observed:  {widths}\n  predicted: {fit.predicted}")
    return 0


def _cmd_edf(args) -> int:
    from .edf import load_records, plot_edfs, summarize

    records = load_records(args.file)
    summary = summarize(records, args.normalize_by)
    if args.plot:
        plot_edfs(records, args.plot, args.normalize_by)
    if args.json:
        print(json.dumps(summary, indent=1))
    else:
        for space, info in summary["spaces"].items():
            print(f"{space:<12} n={info['n']:<4} min error {info['min_error']:.2f}  median {info['median_error']:.2f}")
        for c in summary["comparisons"]:
            print(f"{c['a']} vs {c['b']}: KS {c['ks']:.3f}, area between EDFs {c['area']:+.3f} "
                  f"(> 0: {c['a']} has more low-error models)")
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _cmd_explore(args) -> int:
    from .explore import reference_run
    from .sampling import parse_range

    result = reference_run(args.spaces, args.n, parse_range(args.flops), args.steps, args.resolution,
                           seed=args.seed, log=lambda s: print(s, file=sys.stderr, flush=True))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{len(result['records'])} records written to {args.out}; compare with: fastregnet edf {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrorParser(prog="fastregnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list the model zoo")
    p.add_argument("pattern", nargs="?", default=None, help="glob filter, e.g. 'regnet_y*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("info", help="widths, depths, groups, SE widths and complexity of one model")
    p.add_argument("name", help="torchvision, timm or pycls name")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--resolution", type=positive_int, default=224)
    p.set_defaults(func=_cmd_info)

    from .sampling import SPACES

    p = sub.add_parser("sample", help="sample models from a design space under a complexity constraint")
    p.add_argument("--space", required=True, choices=SPACES)
    p.add_argument("--flops", default=None, help="target like 400M (+-tolerance) or a range 360M:440M")
    p.add_argument("--params", default=None, help="same for parameter count, e.g. 5M or 3M:6M")
    p.add_argument("--tolerance", type=float, default=0.1, help="relative width of a single-value target")
    p.add_argument("--n", type=positive_int, default=10)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--resolution", type=positive_int, default=224)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("fit", help="fit (w0, wa, wm) of the quantized linear rule to per-block widths")
    p.add_argument("--widths", default=None, help="per-block widths, comma separated")
    p.add_argument("--model", default=None, help="or a zoo model's name")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("edf", help="error EDFs of design spaces from a records file (JSON or CSV)")
    p.add_argument("file")
    p.add_argument("--plot", default=None, help="PNG path (needs matplotlib)")
    p.add_argument("--normalize-by", choices=["flops", "params"], default=None,
                   help="weight models so each complexity bin counts equally")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_edf)

    p = sub.add_parser("explore", help="tiny CPU study: sample, train briefly on synthetic data, write records")
    p.add_argument("--spaces", nargs="+", default=["anynetx_a", "regnetx"], choices=SPACES)
    p.add_argument("--n", type=positive_int, default=4, help="models per space")
    p.add_argument("--flops", default="20M:80M", help="complexity range at 224x224")
    p.add_argument("--steps", type=positive_int, default=30)
    p.add_argument("--resolution", type=positive_int, default=32)
    p.add_argument("--seed", type=non_negative_int, default=0)
    p.add_argument("--out", default="explore-records.json")
    p.set_defaults(func=_cmd_explore)

    from . import bench as _bench

    _bench.add_parser(sub)
    from . import campaign_apply as _campaign_apply
    from . import campaign_runner as _campaign_runner

    _campaign_runner.add_parser(sub)
    _campaign_apply.add_parser(sub)
    from . import cost as _cost

    _cost.add_parser(sub)
    from . import export_cmd as _export_cmd

    _export_cmd.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        get_backend()  # a bad FASTREGNET_BACKEND is a user error of every command
        return args.func(args) or 0
    except (ValueError, TypeError, OSError, RuntimeMissing) as e:  # user errors (bad values, unreadable files,
        # an optional package missing)
        message = str(e).strip().replace("\n", "; ") or type(e).__name__
        print(f"fastregnet {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
