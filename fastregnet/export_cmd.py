"""`fastregnet export`: write a model for a CPU runtime, check the runtime's outputs against fastregnet's own on a
random batch, and measure both (interleaved round by round after a shared warm-up, medians and spread)."""

from __future__ import annotations

import json
import statistics
import time

import torch

from .bench import randomize_bn
from .cli_args import positive_int
from .export import FORMATS, export_model, load_runtime

# relative to the largest |logit|: float32 graph rewrites (fused convs, other summation orders) stay near 1e-6
TOLERANCE = 1e-4


def _time_interleaved(calls: dict, warmup: int, repeats: int) -> dict:
    """{name: [seconds, ...]}: every call once per round, the order rotating each round, after a shared warm-up."""
    names = list(calls)
    for _ in range(warmup):
        for name in names:
            calls[name]()
    times = {name: [] for name in names}
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def export_and_check(model_name: str, fmt: str, out: str, weights=None, batch: int = 1, resolution: int = 224,
                     warmup: int = 2, repeats: int = 10, seed: int = 0) -> dict:
    """Build `model_name` (with `weights`, as fastregnet.create_model), export it to `out`, and return the check:
    the runtime's largest deviation from fastregnet's eval logits on a random batch, and both speeds."""
    from .models import create_model

    model = create_model(model_name, weights).eval()
    if weights is None:  # a fresh model's BN is the identity: make it matter, so a wrong fold or eps would show
        randomize_bn(model, seed)
    export_model(model, out, fmt, resolution)
    runtime = load_runtime(out, fmt)
    x = torch.randn(batch, model.in_channels, resolution, resolution, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        reference = model(x)
    deviation = float((runtime(x) - reference).abs().max() / reference.abs().max().clamp_min(1e-12))

    def eager():
        with torch.inference_mode():
            model(x)

    times = _time_interleaved({"fastregnet": eager, fmt: lambda: runtime(x)}, warmup, repeats)
    speeds = {name: {"median_s": statistics.median(t), "img_per_s": batch / statistics.median(t),
                     "spread_img_per_s": [batch / max(t), batch / min(t)], "times_s": t} for name, t in times.items()}
    return {"model": model_name, "format": fmt, "out": out, "batch": batch, "resolution": resolution,
            "threads": torch.get_num_threads(), "max_rel_dev": deviation, "tolerance": TOLERANCE,
            "ok": deviation <= TOLERANCE, "speed": speeds}


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="write a model for a CPU runtime (ONNX Runtime, OpenVINO), check its outputs "
                                      "against fastregnet's and measure both")
    p.add_argument("--model", required=True, help="a model name (fastregnet list)")
    p.add_argument("--weights", default=None, help="a checkpoint path or torchvision weights name (default: random)")
    p.add_argument("--format", choices=FORMATS, default="onnx")
    p.add_argument("--out", required=True, help="the file to write (.onnx; .xml for OpenVINO, with its .bin)")
    p.add_argument("--batch", type=positive_int, default=1, help="batch of the check and the timing")
    p.add_argument("--resolution", type=positive_int, default=224)
    p.add_argument("--repeats", type=positive_int, default=10)
    p.add_argument("--json", action="store_true", help="print the check as JSON")
    p.set_defaults(func=_cmd_export)


def _cmd_export(args) -> int:
    report = export_and_check(args.model, args.format, args.out, args.weights, args.batch, args.resolution,
                              repeats=args.repeats)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"wrote {report['out']} ({args.format}); outputs vs fastregnet on a random batch of {args.batch}: "
              f"max rel dev {report['max_rel_dev']:.1e} ({'ok' if report['ok'] else 'OVER'} the {TOLERANCE:.0e} "
              f"tolerance)")
        for name, s in report["speed"].items():
            print(f"  {name:<12} {s['img_per_s']:8.1f} img/s  (spread {s['spread_img_per_s'][0]:.1f}-"
                  f"{s['spread_img_per_s'][1]:.1f}; CPU, {report['threads']} threads, batch {args.batch})")
    return 0 if report["ok"] else 1
