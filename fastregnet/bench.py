"""`fastregnet bench`: whole-model throughput of fastregnet against torchvision, in one process and one run.

Every provider gets the same weights (torchvision's random init, BN statistics perturbed so folding matters) and
the same fresh random input. Inference runs under torch.inference_mode; a training step is forward,
cross-entropy, backward and an SGD step. Timing: CUDA events on GPU, wall clock on CPU (threads reported).
Each provider's output (inference: eval logits; training: the first train-mode logits) is compared with the fp32
torchvision reference, so a fast wrong answer shows as wrong. The roofline floor (fastregnet.roofline) puts each
time next to the least the device could need.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile

import torch

from . import roofline
from .cli_args import non_negative_int, positive_int
from .design import resolve_name

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _torchvision_model(name: str):
    import torchvision

    return getattr(torchvision.models, name)()


def _fastregnet_model(name: str):
    from .models import create_model

    return create_model(name)


def _provider(make, memory_format, compile_mode: str | None = None, compile_it: bool = False):
    """A provider: builds (model, memory_format) on `device` with `state_dict` loaded."""
    def build(model_name: str, state_dict: dict, device: torch.device, default_compile_mode: str | None):
        model = make(model_name)
        model.load_state_dict(state_dict)
        model = model.to(device=device, memory_format=memory_format)
        if compile_it:
            model = torch.compile(model, mode=compile_mode or default_compile_mode)
        return model, memory_format
    return build


class ProviderSkipped(Exception):
    """A provider that cannot run here: its package is not installed, it runs on another device, or it does not
    train. Listed as skipped with the reason, never as an error."""


class _ExportedModel(torch.nn.Module):
    """A CPU runtime (fastregnet.export) as a benchmark model: the fastregnet model is exported at the first
    input's image size (the batch stays dynamic) and served by the runtime; inference only."""

    def __init__(self, model: torch.nn.Module, fmt: str):
        super().__init__()
        self.format, self._source, self._runtime = fmt, model, None
        self._dir = tempfile.TemporaryDirectory(prefix="fastregnet-bench-")

    def train(self, mode: bool = True):
        if mode:
            raise ProviderSkipped(f"{self.format}: an inference runtime (no training step)")
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from .export import export_model, load_runtime

        if self._runtime is None:
            if x.shape[-1] != x.shape[-2]:
                raise ValueError("the runtime providers export square images only")
            path = os.path.join(self._dir.name, "model.onnx" if self.format == "onnx" else "model.xml")
            with torch.inference_mode(False):  # (the first call comes under the benchmark's inference_mode)
                export_model(self._source, path, self.format, resolution=x.shape[-1])
            self._runtime = load_runtime(path, self.format)
        return self._runtime(x)


def _runtime_provider(fmt: str):
    """A provider that serves fastregnet's model through a CPU runtime (ONNX Runtime, OpenVINO), when installed."""
    def build(model_name: str, state_dict: dict, device: torch.device, default_compile_mode: str | None):
        from .export import runtime_missing

        if device.type != "cpu":
            raise ProviderSkipped(f"{fmt}: a CPU runtime, and this run is on {device.type}")
        reason = runtime_missing(fmt)
        if reason is not None:
            raise ProviderSkipped(reason)
        model = _fastregnet_model(model_name)
        model.load_state_dict(state_dict)
        return _ExportedModel(model.eval(), fmt), torch.contiguous_format
    return build


PROVIDERS = {
    "tv_nchw": _provider(_torchvision_model, torch.contiguous_format),
    "tv_channels_last": _provider(_torchvision_model, torch.channels_last),
    "tv_compile": _provider(_torchvision_model, torch.channels_last, compile_it=True),
    "tv_compile_max_autotune": _provider(_torchvision_model, torch.channels_last, "max-autotune", True),
    "fastregnet": _provider(_fastregnet_model, torch.channels_last),
    "fastregnet_compile": _provider(_fastregnet_model, torch.channels_last, compile_it=True),
    "onnxruntime": _runtime_provider("onnx"),
    "openvino": _runtime_provider("openvino"),
}
GPU_DEFAULT = ("tv_nchw", "tv_channels_last", "tv_compile", "tv_compile_max_autotune", "fastregnet",
               "fastregnet_compile")
# on a CPU, also what a CPU user would pick instead: torch.compile and the CPU runtimes (skipped when not installed)
CPU_DEFAULT = ("tv_nchw", "tv_channels_last", "fastregnet", "tv_compile", "fastregnet_compile", "onnxruntime",
               "openvino")


def device_info(device: torch.device) -> dict:
    info = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            # fp32 convolutions (cuDNN's and fastregnet's kernels alike) follow this flag: TF32 when on
            "fp32_conv_precision": "tf32" if torch.backends.cudnn.allow_tf32 else "ieee"}
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                    gpu_memory_gb=round(props.total_memory / 2**30, 1))
        # the SM limits the cost model's occupancy term needs (campaign-apply writes them for this GPU)
        limits = {"sms": "multi_processor_count", "regs_per_sm": "regs_per_multiprocessor",
                  "smem_per_sm_bytes": "shared_memory_per_multiprocessor",
                  "threads_per_sm": "max_threads_per_multi_processor", "l2_bytes": "L2_cache_size"}
        info["sm_limits"] = {k: getattr(props, attr) for k, attr in limits.items()
                             if isinstance(getattr(props, attr, None), int)}
        try:
            info["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                            capture_output=True, text=True, timeout=10).stdout.split()[0]
        except Exception:  # no nvidia-smi: the driver stays unreported rather than guessed
            info["driver"] = None
    else:
        info["cpu"] = platform.processor() or platform.machine()
        info["cpu_model"] = _cpu_model()
    return info


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        return None
    return names[0] if names else None


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


def _rel_dev(out: torch.Tensor, ref: torch.Tensor) -> float:
    out = out.detach().float().cpu()
    return float((out - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def _resident_bytes(model: torch.nn.Module, opt) -> int:
    """Bytes a provider keeps on the device between steps: parameters, buffers, gradients, optimizer state."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [p.grad for p in model.parameters() if p.grad is not None]
    if opt is not None:
        tensors += [t for state in opt.state.values() for t in state.values() if torch.is_tensor(t)]
    return sum(t.numel() * t.element_size() for t in {id(t): t for t in tensors}.values())


def prepare(provider: str, model_name: str, batch: int, dtype: str, mode: str, device: torch.device,
            state_dict: dict, x: torch.Tensor, reference: dict, compile_mode: str | None, providers: dict) -> dict:
    """Build one provider for one (model, batch, dtype, mode): its model, its step function, and its output's
    deviation from the fp32 reference (inference: eval logits; training: the first train-mode logits)."""
    model, fmt = providers[provider](model_name, state_dict, device, compile_mode)
    if isinstance(model, _ExportedModel) and dtype != "fp32":
        raise ProviderSkipped(f"{model.format}: exported in float32, and this run is {dtype}")
    autocast = torch.autocast(device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    xin = x.to(device).contiguous(memory_format=fmt)
    opt = None
    if mode == "infer":
        model.eval()
        with torch.inference_mode(), autocast:
            dev = _rel_dev(model(xin), reference["infer"])

        def step():
            with torch.inference_mode(), autocast:
                return model(xin)
    else:
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        target = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(2)).to(device)
        with autocast:
            dev = _rel_dev(model(xin), reference["train"])  # train-mode logits of the untouched weights

        def step():
            with autocast:
                loss = torch.nn.functional.cross_entropy(model(xin), target)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss
    return {"model": model, "opt": opt, "step": step, "dev": dev}


def _timed_step(prepared: dict, device: torch.device) -> tuple[float, int | None]:
    """One timed step and, on a GPU, the most memory it allocated above what was allocated before it."""
    if device.type != "cuda":
        return roofline.measure(prepared["step"], device, 0, 1)[0], None
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    seconds = roofline.measure(prepared["step"], device, 0, 1)[0]
    return seconds, torch.cuda.max_memory_allocated(device) - before


@contextlib.contextmanager
def tf32(enabled: bool):
    """PyTorch's TF32 switches for convolutions and matmuls, set inside the block (fastregnet's fp32 kernels follow
    cuDNN's); references run with them off."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _reference(tv: torch.nn.Module, x: torch.Tensor, modes, device: torch.device) -> dict:
    """fp32 logits of torchvision's model, computed on `device` with TF32 off (on a GPU: seconds where the CPU
    would take minutes at batch 256). Only the modes this run compares: a train-mode forward needs more than one
    value per BN channel (batch 1 at a small resolution cannot have one), so infer-only runs never compute it."""
    model, xd = copy.deepcopy(tv).to(device), x.to(device)
    with torch.no_grad(), tf32(False):
        return {"infer": model.eval()(xd).float().cpu() if "infer" in modes else None,
                "train": model.train()(xd).float().cpu() if "train" in modes else None}


def run(models, batches, dtype, modes, providers, resolution, device, warmup, repeats, compile_mode=None,
        tolerance=None, log=print, extra_providers: dict | None = None, rates: dict | None = None,
        stop=None) -> dict:
    """Run every combination; returns {"settings", "env", "device_rates", "results"}.

    Providers are compared in one process, interleaved: for each (model, batch, mode) every provider is built and
    checked, then all take their warm-up steps round by round (a shared warm-up), then each timed round runs one
    step of every provider in turn, so a machine that speeds up or slows down during the run affects all alike; the
    order is shuffled each round (seeded), so that none always runs right after the same one.
    Peak memory on a GPU = the provider's resident bytes (parameters, buffers, gradients, optimizer state) + the
    most its steps allocated above what was allocated before them (a CUDA graph's private pool, allocated at
    capture, is not counted: the figure reads low for the graph and max-autotune providers).
    `stop()`, when given, is asked before each provider's build and each timed round: True ends the run there (the
    campaign's time box); providers not built are recorded as not run, rounds not run are simply fewer.
    `extra_providers` adds {name: build(model_name, state_dict, device, compile_mode) -> (model, memory_format)};
    `rates` overrides the measured device rates (for tests)."""
    registry = PROVIDERS | (extra_providers or {})
    unknown = [p for p in providers if p not in registry]
    if unknown:
        raise ValueError(f"unknown providers {unknown}; known: {', '.join(registry)}")
    tolerance = tolerance if tolerance is not None else (1e-3 if dtype == "fp32" else 3e-2)
    rates = rates or roofline.measure_device(device, DTYPES[dtype])
    elem = torch.finfo(DTYPES[dtype]).bits // 8
    stop = stop or (lambda: False)
    results = []
    for model_name in models:
        tv = _torchvision_model(model_name)
        randomize_bn(tv, 0)
        state_dict = tv.state_dict()
        for batch in batches:
            x = torch.randn(batch, 3, resolution, resolution, generator=torch.Generator().manual_seed(1))
            reference = _reference(tv, x, modes, device)
            for mode in modes:
                w = roofline.work(resolve_name(model_name).params(), batch, resolution, elem, mode)
                floor = roofline.floor_seconds(w, rates["copy_bandwidth_bytes_per_s"], rates["matmul_flops_per_s"])
                head = {"model": model_name, "batch": batch, "dtype": dtype, "mode": mode, "resolution": resolution}
                built, records = {}, {}
                for provider in providers:
                    records[provider] = {"provider": provider, **head, "floor_s": floor, "floor_flops": w["flops"],
                                         "floor_bytes": w["bytes"]}
                    if stop():
                        records[provider]["error"] = "not run: stopped (time box over)"
                        continue
                    log(f"[bench] {model_name} batch={batch} {dtype} {mode} {provider} ...")
                    try:
                        built[provider] = prepare(provider, model_name, batch, dtype, mode, device, state_dict, x,
                                                  reference, compile_mode, registry)
                    except ProviderSkipped as e:
                        records[provider]["skipped"] = str(e)
                    except Exception as e:  # a provider that fails is reported, not hidden
                        records[provider]["error"] = f"{type(e).__name__}: {e}"
                times = {p: [] for p in built}
                peaks = {p: [] for p in built}
                for _ in range(warmup):  # the shared warm-up, round by round
                    for provider, prep in list(built.items()):
                        try:
                            roofline.measure(prep["step"], device, 1, 0)
                        except Exception as e:
                            records[provider]["error"] = f"{type(e).__name__}: {e}"
                            del built[provider]
                # seeded per case: reproducible, and not the same sequence of orders in every case
                order = random.Random(f"{model_name}/{batch}/{dtype}/{mode}")
                positions = {p: [] for p in built}
                for _ in range(repeats):
                    if stop() and all(times[p] for p in built):
                        break
                    # a fresh order each round: a rotation would keep each provider behind the same one, which
                    # measured tv NCHW ~20% slow on the CPU right behind OpenVINO (whose threads stay awake)
                    turn = order.sample(list(built.items()), len(built))
                    for position, (provider, prep) in enumerate(turn):
                        positions[provider].append(position)
                        try:
                            seconds, peak = _timed_step(prep, device)
                        except Exception as e:
                            records[provider]["error"] = f"{type(e).__name__}: {e}"
                            del built[provider]
                            continue
                        times[provider].append(seconds)
                        peaks[provider].append(peak)
                for provider, prep in built.items():
                    t = times[provider]
                    med = statistics.median(t)
                    peak = (_resident_bytes(prep["model"], prep["opt"]) + max(peaks[provider])
                            if device.type == "cuda" else None)
                    records[provider].update(
                        times_s=t, round_positions=positions[provider], median_s=med, img_per_s=batch / med,
                        spread_img_per_s=[batch / max(t), batch / min(t)], peak_memory_bytes=peak,
                        max_rel_dev_vs_fp32_ref=prep["dev"], wrong=not prep["dev"] <= tolerance,
                        fraction_of_floor=floor / med)
                built.clear()
                results += [records[p] for p in providers]
    settings = {"models": list(models), "batches": list(batches), "dtype": dtype, "modes": list(modes),
                "providers": list(providers), "resolution": resolution, "warmup": warmup, "repeats": repeats,
                "tolerance": tolerance, "compile_mode": compile_mode,
                "order": ("interleaved: every provider's step once per round, after a shared warm-up; the order "
                          "shuffled each round (seeded per case; round_positions records it)"),
                "timing": "cuda events" if device.type == "cuda" else "wall clock",
                "roofline": "layer-wise floor model, see fastregnet/roofline.py",
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return {"settings": settings, "env": device_info(device), "device_rates": rates, "results": results}


def format_table(report: dict) -> str:
    rows = [f"{'model':<16} {'batch':>5} {'mode':<5} {'provider':<24} {'img/s':>9} {'spread':>17} "
            f"{'peak MB':>8} {'max rel dev':>13} {'vs tv_nchw':>10} {'of floor':>8}"]
    base = {(r["model"], r["batch"], r["mode"]): r["img_per_s"] for r in report["results"]
            if r["provider"] == "tv_nchw" and "img_per_s" in r}
    for r in report["results"]:
        head = f"{r['model']:<16} {r['batch']:>5} {r['mode']:<5} {r['provider']:<24}"
        if "error" in r:
            rows.append(f"{head} ERROR {r['error'][:120]}")
            continue
        if "skipped" in r:
            rows.append(f"{head} skipped: {r['skipped'][:120]}")
            continue
        spread = f"{r['spread_img_per_s'][0]:.1f}-{r['spread_img_per_s'][1]:.1f}"
        mem = f"{r['peak_memory_bytes'] / 2**20:.0f}" if r["peak_memory_bytes"] else "-"
        dev = f"{r['max_rel_dev_vs_fp32_ref']:.1e}" + (" WRONG" if r["wrong"] else "")
        b = base.get((r["model"], r["batch"], r["mode"]))
        ratio = f"{r['img_per_s'] / b:.2f}x" if b else "-"
        rows.append(f"{head} {r['img_per_s']:>9.1f} {spread:>17} {mem:>8} {dev:>13} {ratio:>10} "
                    f"{100 * r['fraction_of_floor']:>7.1f}%")
    env, rates = report["env"], report["device_rates"]
    where = env.get("gpu") or f"CPU ({env.get('cpu')}, {env['cpu_threads']} threads)"
    rows.append(f"device: {where}; torch {env['torch']}, triton {env['triton']}; timing: "
                f"{report['settings']['timing']}; measured copy {rates['copy_bandwidth_bytes_per_s'] / 1e9:.1f} GB/s, "
                f"matmul {rates['matmul_flops_per_s'] / 1e12:.2f} TFLOP/s ({rates['matmul_dtype']}); "
                f"'of floor' = layer-wise roofline floor / median time")
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
    colors = ["C3" if r["wrong"] else "C1" if r["provider"].startswith("fast") else "C0" for r in ok]
    ax.bar(range(len(ok)), [r["img_per_s"] for r in ok], color=colors)
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
    p.add_argument("--batch", nargs="+", type=positive_int, default=None, help="batch sizes (default 8 on CPU, 64 on GPU)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None, help="default fp32 on CPU, fp16 on GPU")
    p.add_argument("--mode", choices=["infer", "train", "both"], default="infer")
    p.add_argument("--providers", nargs="+", choices=list(PROVIDERS), default=None)
    p.add_argument("--resolution", type=positive_int, default=224)
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--warmup", type=non_negative_int, default=None)
    p.add_argument("--repeats", type=positive_int, default=None)
    p.add_argument("--compile-mode", default=None, help="torch.compile mode for the *_compile providers")
    p.add_argument("--out", default=None, help="JSON path (default bench/results/bench-<device>-<time>.json)")
    p.add_argument("--plot", default=None, help="PNG path for a bar chart (needs matplotlib)")
    p.set_defaults(func=_cmd_bench)


def parse_device(text: str | None) -> torch.device:
    """--device: cpu, cuda or cuda:N that exists here (default: cuda when available)."""
    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"unknown device {text!r}; expected cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {text!r} is not supported; expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r}: no CUDA device is available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def _cmd_bench(args) -> int:
    device = parse_device(args.device)
    gpu = device.type == "cuda"
    for m in args.model:
        if not m.startswith("regnet_") or resolve_name(m).name != m:
            raise ValueError(f"bench compares against torchvision, so --model takes torchvision builder names "
                             f"(fastregnet list 'regnet_*'); got {m!r}")
    report = run(models=args.model, batches=args.batch or ([64] if gpu else [8]),
                 dtype=args.dtype or ("fp16" if gpu else "fp32"),
                 modes=["infer", "train"] if args.mode == "both" else [args.mode],
                 providers=args.providers or (GPU_DEFAULT if gpu else CPU_DEFAULT),
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
