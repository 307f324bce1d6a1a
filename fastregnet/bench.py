"""`fastregnet bench`: whole-model throughput of fastregnet against torchvision, in one process and one run.

Each provider gets the same weights (torchvision's random init, BN statistics perturbed so folding matters) and the
same fresh random input. Inference runs under torch.inference_mode; a training step is forward, cross-entropy,
backward and an SGD step. Timing: CUDA events on GPU, wall clock on CPU (threads reported). Every provider's
output is compared with the fp32 torchvision reference, so a fast wrong answer shows as wrong.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time

import torch

PROVIDERS = ("tv_nchw", "tv_channels_last", "tv_compile", "fastregnet", "fastregnet_compile")
DEFAULT_PROVIDERS = ("tv_nchw", "tv_channels_last", "fastregnet")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads()}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial BN affine parameters and running statistics (fresh models have mean 0, var 1, gamma 1, beta 0),
    so BN folding and running-statistics updates are exercised; used by the benchmarks and the tests."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def build_provider(name: str, model_name: str, state_dict: dict, device: torch.device, compile_mode: str | None):
    """(model, memory_format) for one provider, weights loaded, on `device`."""
    import torchvision

    import fastregnet

    if name.startswith("tv"):
        model = getattr(torchvision.models, model_name)()
    else:
        model = fastregnet.create_model(model_name)
    model.load_state_dict(state_dict)
    fmt = torch.channels_last if name in ("tv_channels_last", "tv_compile") or name.startswith("fastregnet") \
        else torch.contiguous_format
    model = model.to(device=device, memory_format=fmt)
    if name.endswith("compile"):
        model = torch.compile(model, mode=compile_mode)
    return model, fmt


def _timer(device: torch.device):
    if device.type == "cuda":
        def run(fn, repeats):
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            return times
    else:
        def run(fn, repeats):
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return times
    return run


def _peak_memory(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def bench_one(provider: str, model_name: str, batch: int, dtype: str, mode: str, resolution: int,
              device: torch.device, warmup: int, repeats: int, state_dict: dict, x: torch.Tensor,
              reference_out: torch.Tensor, compile_mode: str | None) -> dict:
    """Benchmark one (provider, model, batch, dtype, mode); returns a JSON-ready record."""
    model, fmt = build_provider(provider, model_name, state_dict, device, compile_mode)
    amp = dtype != "fp32"
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype], enabled=amp)
    xin = x.to(device).contiguous(memory_format=fmt)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if mode == "infer":
        model.eval()

        def step():
            with torch.inference_mode(), autocast:
                return model(xin)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        target = torch.randint(0, 1000, (batch,), device=device)

        def step():
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(xin), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
    max_rel_dev = None
    if mode == "infer":
        with torch.inference_mode(), autocast:
            out = model(xin).float().cpu()
        max_rel_dev = float((out - reference_out).abs().max() / reference_out.abs().max().clamp_min(1e-12))
    timer = _timer(device)
    timer(step, warmup)
    times = timer(step, repeats)
    med = statistics.median(times)
    return {"provider": provider, "model": model_name, "batch": batch, "dtype": dtype, "mode": mode,
            "resolution": resolution, "times_s": times, "median_s": med, "img_per_s": batch / med,
            "spread_img_per_s": [batch / max(times), batch / min(times)], "peak_memory_bytes": _peak_memory(device),
            "max_rel_dev_vs_fp32_ref": max_rel_dev}


def run(models, batches, dtype, modes, providers, resolution, device, warmup, repeats, compile_mode=None,
        tolerance=None, log=print) -> dict:
    """Run every combination; returns {"settings", "env", "results"}."""
    import torchvision

    tolerance = tolerance if tolerance is not None else (1e-3 if dtype == "fp32" else 3e-2)
    results = []
    for model_name in models:
        tv = getattr(torchvision.models, model_name)()
        randomize_bn(tv, 0)
        state_dict = tv.state_dict()
        for batch in batches:
            x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
            with torch.no_grad():
                reference_out = tv.eval()(x).float()
            for mode in modes:
                for provider in providers:
                    log(f"[bench] {model_name} batch={batch} {dtype} {mode} {provider} ...")
                    try:
                        r = bench_one(provider, model_name, batch, dtype, mode, resolution, device, warmup, repeats,
                                      state_dict, x, reference_out, compile_mode)
                        dev = r["max_rel_dev_vs_fp32_ref"]
                        r["wrong"] = dev is not None and not dev <= tolerance
                    except Exception as e:  # a provider that fails is reported, not hidden
                        r = {"provider": provider, "model": model_name, "batch": batch, "dtype": dtype, "mode": mode,
                             "resolution": resolution, "error": f"{type(e).__name__}: {e}"}
                    results.append(r)
    settings = {"models": list(models), "batches": list(batches), "dtype": dtype, "modes": list(modes),
                "providers": list(providers), "resolution": resolution, "warmup": warmup, "repeats": repeats,
                "tolerance": tolerance, "timing": "cuda events" if device.type == "cuda" else "wall clock",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return {"settings": settings, "env": device_info(device), "results": results}


def format_table(report: dict) -> str:
    rows = [f"{'model':<16} {'batch':>5} {'mode':<5} {'provider':<20} {'img/s':>9} {'spread':>17} "
            f"{'peak MB':>8} {'max rel dev':>11} {'vs tv_nchw':>10}"]
    base = {(r["model"], r["batch"], r["mode"]): r["img_per_s"] for r in report["results"]
            if r["provider"] == "tv_nchw" and "img_per_s" in r}
    for r in report["results"]:
        if "error" in r:
            rows.append(f"{r['model']:<16} {r['batch']:>5} {r['mode']:<5} {r['provider']:<20} ERROR {r['error']}")
            continue
        spread = f"{r['spread_img_per_s'][0]:.1f}-{r['spread_img_per_s'][1]:.1f}"
        mem = f"{r['peak_memory_bytes'] / 2**20:.0f}" if r["peak_memory_bytes"] else "-"
        dev = r["max_rel_dev_vs_fp32_ref"]
        dev_s = "-" if dev is None else f"{dev:.1e}" + (" WRONG" if r.get("wrong") else "")
        b = base.get((r["model"], r["batch"], r["mode"]))
        ratio = f"{r['img_per_s'] / b:.2f}x" if b else "-"
        rows.append(f"{r['model']:<16} {r['batch']:>5} {r['mode']:<5} {r['provider']:<20} {r['img_per_s']:>9.1f} "
                    f"{spread:>17} {mem:>8} {dev_s:>11} {ratio:>10}")
    env = report["env"]
    where = env.get("gpu") or f"CPU ({env.get('cpu')}, {env['cpu_threads']} threads)"
    rows.append(f"device: {where}; torch {env['torch']}, triton {env['triton']}; timing: "
                f"{report['settings']['timing']}")
    return "\n".join(rows)


def plot(report: dict, path: str) -> None:
    """Bar chart of img/s per provider (needs matplotlib: pip install 'fastregnet[plot]')."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("--plot needs matplotlib: pip install 'fastregnet[plot]'") from e
    ok = [r for r in report["results"] if "img_per_s" in r]
    labels = [f"{r['model']}\nb{r['batch']} {r['mode']}\n{r['provider']}" for r in ok]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(ok)), 4))
    ax.bar(range(len(ok)), [r["img_per_s"] for r in ok], color=["C1" if r["provider"].startswith("fast") else "C0"
                                                               for r in ok])
    ax.set_xticks(range(len(ok)), labels, fontsize=6)
    ax.set_ylabel("images / s")
    env = report["env"]
    ax.set_title(f"fastregnet bench on {env.get('gpu') or 'CPU'} ({report['settings']['dtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark fastregnet against torchvision on this machine's device")
    p.add_argument("--model", nargs="+", default=["regnet_y_400mf"], help="torchvision builder names")
    p.add_argument("--batch", nargs="+", type=int, default=None, help="batch sizes (default 8 on CPU, 64 on GPU)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp32 on CPU, fp16 on GPU")
    p.add_argument("--mode", choices=["infer", "train", "both"], default="infer")
    p.add_argument("--providers", nargs="+", choices=PROVIDERS, default=None)
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the *_compile providers")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/bench-<device>-<time>.json)")
    p.add_argument("--plot", default=None, help="PNG path for a bar chart (needs matplotlib)")
    p.set_defaults(func=_cmd_bench)


def _cmd_bench(args) -> int:
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = device.type == "cuda"
    import fastregnet

    for m in args.model:
        if not m.startswith("regnet_") or fastregnet.resolve_name(m).name != m:
            raise ValueError(f"bench compares against torchvision, so --model takes torchvision builder names "
                             f"(fastregnet list 'regnet_*'); got {m!r}")
    report = run(models=args.model, batches=args.batch or ([64] if gpu else [8]),
                 dtype=args.dtype or ("fp16" if gpu else "fp32"),
                 modes=["infer", "train"] if args.mode == "both" else [args.mode],
                 providers=args.providers or (PROVIDERS if gpu else DEFAULT_PROVIDERS),
                 resolution=args.resolution, device=device, warmup=args.warmup or (10 if gpu else 2),
                 repeats=args.repeats or (30 if gpu else 5), compile_mode=args.compile_mode,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    out = args.out or os.path.join("bench", "results", f"bench-{'gpu' if gpu else 'cpu'}-"
                                   f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}.json")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as f:
        json.dump(report, f, indent=1)
    if args.plot:
        plot(report, args.plot)
    print(format_table(report))
    print(f"JSON written to {out}" + (f", chart to {args.plot}" if args.plot else ""))
    return 1 if any("error" in r or r.get("wrong") for r in report["results"]) else 0
