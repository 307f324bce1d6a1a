"""`fastregnet gpu-campaign`: the one command a session lent a GPU runs first.

Parts, in priority order. Each is time-boxed (a share of --budget-s; time a part leaves unused passes to the next)
and appends every record to DIR/campaign.json as it is made, so a run cut off still returns what it measured:

  env          versions, device, measured copy bandwidth and matmul rates (fastregnet.roofline.measure_device)
  correctness  every fused path vs torchvision in fp32/fp16/bf16, eval and train (outputs, input and parameter
               grads, running statistics) at the zoo's stage-first block shapes; whole regnet_y_400mf and
               regnet_x_400mf vs torchvision in fp32 and bf16 autocast; CUDA-graph capture of inference and of a
               training step; one kernel on a tensor of more than 2^31 elements; bitwise determinism over two runs
  tune         every grouped-conv tile configuration of the tuning space (kernels/grouped_conv.py) timed at each zoo
               group width's stage shape, forward + backward, then every eval 1x1 GEMM configuration
               (kernels/pointwise_conv.py) at the priority models' eval 1x1 shapes; the fastest per (GPU, dtype,
               shape key) written to DIR/tuned_configs.json, the format kernels/tuned_configs.json ships (copy it)
  microbench   f.b (grouped conv + BN + ReLU) and whole blocks, eval and train, against the torchvision modules
               they replace (cuDNN), with the fraction of the memory roofline each reaches
  models       whole-model bench (fastregnet.bench): regnet_y_400mf / 1_6gf / 16gf, bf16, channels_last, batch 256
               against torchvision eager (both layouts) and torch.compile, and batch 1 with a CUDA graph

The comparison rule for a fused path: its error against an fp64 torchvision reference may be at most 4x the error
of torchvision itself in the same dtype, or 4 machine epsilons of that dtype, whichever is larger. Both errors are
recorded, so a reader can judge the margin.

`--dry-run` runs every part on the CPU through the Triton interpreter at tiny shapes (checks that need CUDA are
recorded as skipped, with the reason): a CI test runs it so that the campaign cannot rot.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import json
import os
import time
import traceback

import torch

from . import roofline

PARTS = ("env", "correctness", "tune", "microbench", "models")
SHARES = {"env": 0.05, "correctness": 0.3, "tune": 0.15, "microbench": 0.2, "models": 0.3}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
PRIORITY_MODELS = ("regnet_y_400mf", "regnet_x_400mf", "regnet_y_1_6gf", "regnet_y_16gf")


class Campaign:
    """The run's state: where records go, how much time each part has, and whether this is a dry run."""

    def __init__(self, out_dir: str, budget_s: float, parts, dry_run: bool, log=print):
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown campaign parts {unknown}; known: {', '.join(PARTS)}")
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "campaign.json")
        self.parts = [p for p in PARTS if p in parts]  # always in priority order
        self.dry_run = dry_run
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.log = log
        self.end = time.monotonic() + budget_s
        self.part_end = self.end
        self.rates: dict | None = None
        self.doc = {"campaign": {"budget_s": budget_s, "parts": self.parts, "dry_run": dry_run,
                                 "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                 "rule": "fused error <= max(4 x torchvision's error in the same dtype, "
                                         "4 eps(dtype)), both against an fp64 torchvision reference"},
                    "parts": {}}
        self._save()

    def _save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.doc, f, indent=1, default=str)
        os.replace(tmp, self.path)  # a run killed mid-write still leaves the previous complete file

    def time_left(self) -> float:
        return self.part_end - time.monotonic()

    def record(self, part: str, rec: dict) -> None:
        self.doc["parts"][part]["records"].append(rec)
        self._save()
        status = rec.get("status", "")
        provider = f" [{rec['provider']}]" if "provider" in rec else ""
        self.log(f"[{part}] {status:<7} {rec.get('case', '')}{provider}")

    def run_part(self, part: str, fn) -> None:
        remaining = [p for p in self.parts if p not in self.doc["parts"]]
        share = SHARES[part] / sum(SHARES[p] for p in remaining)
        start = time.monotonic()
        self.part_end = start + share * max(0.0, self.end - start)
        entry = {"status": "running", "time_box_s": round(self.part_end - start, 1), "records": []}
        self.doc["parts"][part] = entry
        self._save()
        try:
            cut = fn(self)
            entry["status"] = "cut by its time box" if cut else "done"
        except Exception as e:  # a part that breaks is reported; the next part still runs
            entry["status"] = "error"
            entry["error"] = f"{type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["seconds"] = round(time.monotonic() - start, 1)
        self._save()

    def run(self) -> dict:
        for part in self.parts:
            self.run_part(part, RUNNERS[part])
        self.doc["campaign"]["seconds"] = round(time.monotonic() - (self.end - self.doc["campaign"]["budget_s"]), 1)
        self._save()
        return self.doc


def _each(c: Campaign, part: str, cases) -> bool:
    """Run a part's (name, fn) cases while its time box lasts; returns True when the box cut it short."""
    cases = list(cases)
    for i, (name, fn) in enumerate(cases):
        if c.time_left() <= 0:
            c.record(part, {"case": "time box over", "status": "cut", "cases_not_run": len(cases) - i,
                            "next_case": name})
            return True
        _guarded(c, part, name, fn)
    return False


def _guarded(c: Campaign, part: str, name: str, fn) -> None:
    """One case: fn returns a record (or a list of them); an exception becomes an error record."""
    t0 = time.monotonic()
    try:
        recs = fn()
    except Exception as e:
        recs = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-2000:]}
    for rec in recs if isinstance(recs, list) else [recs]:
        rec = {"case": name, **rec, "seconds": round(time.monotonic() - t0, 2)}
        c.record(part, rec)


# ----------------------------------------------------------------------------------------------------------------
# (a) environment and device rates
# ----------------------------------------------------------------------------------------------------------------


def part_env(c: Campaign) -> bool:
    from .bench import device_info

    def env():
        info = device_info(c.device)
        info["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        info["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        info["triton_interpret"] = os.environ.get("TRITON_INTERPRET")
        return {"status": "ok", **info}

    def rates(dtype):
        def run():
            r = roofline.measure_device(c.device, DTYPES[dtype], small=c.dry_run)
            if dtype == "bf16":
                c.rates = r
            return {"status": "ok", "dtype": dtype, **r}
        return run

    return _each(c, "env", [("environment", env)] + [(f"device rates {d}", rates(d)) for d in DTYPES])


# ----------------------------------------------------------------------------------------------------------------
# (b) correctness on the device
# ----------------------------------------------------------------------------------------------------------------


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    if a.shape != ref.shape:
        return float("inf")
    diff = (a - ref).abs()
    nan_mismatch = bool((torch.isnan(a) != torch.isnan(ref)).any())
    return float("inf") if nan_mismatch else float(diff.nan_to_num(0.0).max() / ref.abs().max().clamp_min(1e-30))


def _verdict(ours: dict, theirs: dict, dtype: torch.dtype) -> dict:
    """Per tensor: our error, torchvision's in the same dtype (both vs fp64), and the pass rule."""
    eps = torch.finfo(dtype).eps
    rows = {k: {"ours": ours[k], "torchvision": theirs[k], "bound": max(4 * theirs[k], 4 * eps)} for k in ours}
    ratio = {k: r["ours"] / r["bound"] for k, r in rows.items()}
    worst = max(ratio.values())
    shown = sorted(rows, key=ratio.get, reverse=True)[:8]  # a whole model has ~200 tensors: the 8 closest to fail
    return {"status": "ok" if worst <= 1 else "FAIL", "worst_error_over_bound": worst, "tensors_checked": len(rows),
            "worst_tensors": {k: rows[k] for k in shown}}


@contextlib.contextmanager
def _exact_fp32():
    """The fp64/fp32 references run without TF32 (fastregnet's fp32 kernels use IEEE dots)."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _run_module(module, x, train: bool) -> dict:
    """Output, input grad, parameter grads and (train) running statistics of one call with a fixed upstream grad."""
    module = module.train(train)
    x = x.detach().clone().requires_grad_(train)
    if train:
        out = module(x)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(out.device, out.dtype)
        out.backward(g)
        res = {"out": out, "grad_x": x.grad}
        res.update({f"grad {n}": p.grad for n, p in module.named_parameters()})
        res.update({f"buffer {n}": b for n, b in module.named_buffers() if "running" in n})
        return res
    with torch.no_grad():
        return {"out": module(x)}


def _compare(ours_module, tv_module, x: torch.Tensor, dtype: torch.dtype, train: bool, autocast: bool = False) -> dict:
    """Our module in `dtype` (or fp32 weights under autocast) vs torchvision's, both against torchvision in fp64."""
    from . import use_backend

    dev = x.device
    with _exact_fp32():
        ref = _run_module(copy.deepcopy(tv_module).to(dev, torch.float64), x.double(), train)

    def run(module, backend=None):
        m = copy.deepcopy(module).to(dev, torch.float32 if autocast else dtype,
                                     memory_format=torch.channels_last)
        xin = (x if autocast else x.to(dtype)).contiguous(memory_format=torch.channels_last)
        ctx = torch.autocast(dev.type, dtype=dtype) if autocast else contextlib.nullcontext()
        with ctx, (use_backend(backend) if backend else contextlib.nullcontext()), _exact_fp32():
            return _run_module(m, xin, train)

    ours, theirs = run(ours_module, "triton"), run(tv_module)
    return _verdict({k: _rel(v, ref[k]) for k, v in ours.items()}, {k: _rel(v, ref[k]) for k, v in theirs.items()},
                    dtype)


def _block_pair(case: dict):
    from torchvision.models.regnet import ResBottleneckBlock as TVBlock

    from .bench import randomize_bn
    from .layers import ResBottleneckBlock

    args = (case["width_in"], case["width_out"], case["stride"])
    torch.manual_seed(0)
    ours = ResBottleneckBlock(*args, case["group_width"], 1.0, case["se_ratio"])
    randomize_bn(ours, 0)
    theirs = TVBlock(*args, torch.nn.BatchNorm2d, torch.nn.ReLU, case["group_width"], 1.0, case["se_ratio"])
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def zoo_block_cases(dry_run: bool) -> list[dict]:
    """Distinct stage-first block shapes of the zoo, the priority models first (dry run: one tiny block)."""
    from .design import MODEL_CONFIGS
    from .shapes import block_shapes

    if dry_run:
        return [{"model": "regnet_y_400mf", "stage": 1, "width_in": 32, "width_out": 48, "stride": 2,
                 "group_width": 8, "se_ratio": 0.25, "hw": 8, "batch": 2}]
    names = list(PRIORITY_MODELS) + sorted(n for n in MODEL_CONFIGS if n not in PRIORITY_MODELS)
    seen, out = set(), []
    for name in names:
        for case in block_shapes(name):
            key = (case["width_in"], case["width_out"], case["stride"], case["group_width"], case["se_ratio"],
                   case["hw"])
            if key not in seen:
                seen.add(key)
                out.append({**case, "batch": 8})
    return out


def _block_checks(c: Campaign):
    dtypes = ("fp32", _half(c)) if c.dry_run else ("bf16", "fp16", "fp32")
    for case in zoo_block_cases(c.dry_run):
        for dt in dtypes:
            for train in (False, True):
                name = (f"block {case['model']} stage {case['stage']} {case['width_in']}->{case['width_out']} "
                        f"gw={case['group_width']} s={case['stride']} hw={case['hw']} {dt} "
                        f"{'train' if train else 'eval'}")

                def check(case=case, dt=dt, train=train):
                    ours, theirs = _block_pair(case)
                    x = torch.randn(case["batch"], case["width_in"], case["hw"], case["hw"],
                                    generator=torch.Generator().manual_seed(1)).to(c.device)
                    return _compare(ours, theirs, x, DTYPES[dt], train)
                yield name, check


def _model_pair(name: str):
    """(fastregnet, torchvision) with the same weights and randomized BN statistics. "tiny": a 2-stage RegNetY
    (dry run: a zoo model through the interpreter takes minutes)."""
    import torchvision
    from torchvision.models.regnet import BlockParams

    from .bench import randomize_bn
    from .models import from_torchvision

    torch.manual_seed(0)
    if name == "tiny":
        params = BlockParams([1, 2], [32, 64], [8, 8], [1.0, 1.0], [2, 2], 0.25)
        tv = torchvision.models.regnet.RegNet(params, num_classes=10, stem_width=16)
    else:
        tv = getattr(torchvision.models, name)()
    randomize_bn(tv, 0)
    return from_torchvision(tv), tv


def _half(c: Campaign) -> str:
    """The 16-bit dtype checked: bf16 on a GPU; fp16 in a dry run (the interpreter's bf16 tl.dot is wrong)."""
    return "fp16" if c.dry_run else "bf16"


def _model_checks(c: Campaign):
    batch, res = (2, 32) if c.dry_run else (8, 224)
    models = ("tiny",) if c.dry_run else ("regnet_y_400mf", "regnet_x_400mf")
    for name in models:
        for dt, autocast in ((_half(c), True), ("fp32", False)):
            for train in (False, True):
                def check(name=name, dt=dt, autocast=autocast, train=train):
                    ours, tv = _model_pair(name)
                    x = torch.randn(batch, 3, res, res, generator=torch.Generator().manual_seed(1)).to(c.device)
                    return _compare(ours, tv, x, DTYPES[dt], train, autocast=autocast)
                yield (f"model {name} {dt}{' autocast' if autocast else ''} {'train' if train else 'eval'} "
                       f"batch {batch} {res}px"), check


def _needs_cuda(c: Campaign):
    return {"status": "skipped", "reason": "needs CUDA (dry run on the CPU)"} if c.dry_run else None


def _cuda_graph_checks(c: Campaign):
    from . import RegNet, use_backend

    def small_model():
        torch.manual_seed(0)
        return RegNet(depths=[1, 2], widths=[32, 64], group_widths=8, se_ratio=0.25, num_classes=10).to(
            c.device, memory_format=torch.channels_last)

    def inference():
        if skip := _needs_cuda(c):
            return skip
        model = small_model().eval()
        x = torch.randn(4, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), use_backend("triton"):
            for _ in range(3):
                model(x)
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = model(x)
            x.copy_(torch.randn_like(x))
            for m in model.modules():  # BN tensors edited after capture: the replay must read the live values
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_var.mul_(1.5)
            graph.replay()
            err = _rel(static_out, model(x))
        return {"status": "ok" if err < 1e-5 else "FAIL", "replay_vs_eager_rel_err": err}

    def training():
        if skip := _needs_cuda(c):
            return skip
        model = small_model().train()
        twin = copy.deepcopy(model)
        x = torch.randn(4, 3, 64, 64, device="cuda", requires_grad=True)
        with use_backend("triton"):
            graphed = torch.cuda.make_graphed_callables(model, (x,))
            for m in (model, twin):
                m.zero_grad(set_to_none=False)
            graphed(x).sum().backward()
            twin(x).sum().backward()
        errs = {n: _rel(p.grad, q.grad) for (n, p), q in zip(model.named_parameters(), twin.parameters())}
        worst = max(errs.values())
        return {"status": "ok" if worst < 1e-4 else "FAIL", "worst_grad_rel_err": worst}

    yield "CUDA graph: inference capture and replay", inference
    yield "CUDA graph: training step (make_graphed_callables)", training


def _large_tensor_check(c: Campaign):
    """The grouped conv (eval, BN epilogue) on an input of more than 2^31 elements; the last image checked
    against cuDNN. Dry run: the same code at a small size."""
    from .kernels.grouped_conv import grouped_conv_fwd

    def run():
        ch, gw, hw = 64, 16, 56
        n = 2 if c.dry_run else (2**31) // (ch * hw * hw) + 2
        hw = 6 if c.dry_run else hw
        dtype = torch.float32 if c.dry_run else torch.bfloat16
        x = torch.empty((n, ch, hw, hw), device=c.device, dtype=dtype, memory_format=torch.channels_last)
        x.normal_()
        w = torch.randn(ch, gw, 3, 3, device=c.device, dtype=dtype) * 0.1
        bn = [torch.rand(ch, device=c.device) + 0.5, torch.randn(ch, device=c.device), torch.randn(ch, device=c.device),
              torch.rand(ch, device=c.device) + 0.5]
        y = grouped_conv_fwd(x, w, None, 1, ch // gw, True, bn=bn, eps=1e-5)
        last = x[-1:].double()
        with _exact_fp32():
            ref = torch.nn.functional.conv2d(last, w.double(), padding=1, groups=ch // gw)
            ref = torch.relu(torch.nn.functional.batch_norm(ref, bn[2].double(), bn[3].double(), bn[0].double(),
                                                            bn[1].double(), False, 0.0, 1e-5))
        err = _rel(y[-1:], ref)
        bound = 8 * torch.finfo(dtype).eps
        return {"status": "ok" if err <= bound else "FAIL", "elements": x.numel(), "over_2_31": x.numel() > 2**31,
                "dtype": str(dtype), "last_image_rel_err": err, "bound": bound}

    yield "grouped conv on > 2^31 elements" + (" (dry run: small)" if c.dry_run else ""), run


def _determinism_check(c: Campaign):
    def run():
        from . import RegNet, use_backend

        torch.manual_seed(0)
        model = RegNet(depths=[1, 2], widths=[32, 64], group_widths=8, se_ratio=0.25, num_classes=10).to(c.device)
        res = 16 if c.dry_run else 64
        x = torch.randn(4, 3, res, res, device=c.device)
        runs = []
        for _ in range(2):
            m = copy.deepcopy(model).train()
            with use_backend("triton"):
                out = m(x)
                out.square().sum().backward()
            runs.append([out] + [p.grad for p in m.parameters()] + [b for b in m.buffers()])
        same = all(torch.equal(a, b) for a, b in zip(*runs))
        return {"status": "ok" if same else "FAIL", "bitwise_equal": same, "tensors": len(runs[0])}

    yield "bitwise determinism of a training step over two runs", run


def part_correctness(c: Campaign) -> bool:
    def all_cases():
        yield from _cuda_graph_checks(c)
        yield from _large_tensor_check(c)
        yield from _determinism_check(c)
        yield from _model_checks(c)
        yield from _block_checks(c)

    return _each(c, "correctness", all_cases())


# ----------------------------------------------------------------------------------------------------------------
# (c) tuning sweep
# ----------------------------------------------------------------------------------------------------------------


def _gpu_name(c: Campaign) -> str:
    return torch.cuda.get_device_name(c.device) if c.device.type == "cuda" else "cpu (dry run)"


def _sweep(c: Campaign, table: dict, family: str, dtype: torch.dtype, key: str, configs: list, heuristic: tuple,
           launch, what: str) -> dict:
    """Time launch(config) for every configuration (under tuning.force), enter the fastest in `table` under the
    kernel family's `key`, and return the case's record (`what`: what one timed call runs)."""
    from .kernels.tuning import force, table_key

    def step(config):
        with force(config, family):
            launch()

    times = {str(list(config)): _time(lambda config=config: step(config), c) for config in configs}
    best = min(times, key=times.get)
    gpu = _gpu_name(c)
    table.setdefault(gpu, {})[table_key(family, dtype, key)] = json.loads(best)
    h = str(list(heuristic))
    return {"status": "ok", "gpu": gpu, "dtype": str(dtype), f"seconds_per_config ({what})": times,
            "best": json.loads(best), "heuristic": list(heuristic), "heuristic_over_best": times[h] / times[best]}


def _tune_cases(c: Campaign, table: dict):
    from .design import MODEL_CONFIGS
    from .kernels.grouped_conv import (grouped_conv_bwd, grouped_conv_candidates, grouped_conv_fwd,
                                       grouped_conv_tiles, grouped_conv_train_fwd, shape_key)
    from .shapes import grouped_conv_shapes

    dtype = torch.float32 if c.dry_run else torch.bfloat16
    # one stage shape per group width: the first stride-1 one (else the first one), the priority models first
    first, first_stride1 = {}, {}
    names = list(PRIORITY_MODELS) + sorted(n for n in MODEL_CONFIGS if n not in PRIORITY_MODELS)
    for name in names:
        for shape in grouped_conv_shapes(name):
            first.setdefault(shape["group_width"], shape)
            if shape["stride"] == 1:
                first_stride1.setdefault(shape["group_width"], shape)
    shapes = {gw: first_stride1.get(gw, shape) for gw, shape in first.items()}
    if c.dry_run:
        shapes = {16: {"channels": 32, "group_width": 16, "hw": 6, "stride": 1, "model": "tiny"}}  # 2 candidates
    batch = 2 if c.dry_run else 64
    for gw, shape in shapes.items():
        def run(gw=gw, shape=shape):
            ch, hw, stride = shape["channels"], shape["hw"], shape["stride"]
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(batch, ch, hw, hw, generator=gen).to(c.device, dtype).contiguous(
                memory_format=torch.channels_last)
            w = (torch.randn(ch, gw, 3, 3, generator=gen) * 0.1).to(c.device, dtype)
            f32 = dict(device=c.device, dtype=torch.float32)
            bn = [torch.rand(ch, **f32) + 0.5, torch.randn(ch, **f32), torch.randn(ch, **f32),
                  torch.rand(ch, **f32) + 0.5]
            groups = ch // gw

            def launch():
                grouped_conv_fwd(x, w, None, stride, groups, True, bn=bn, eps=1e-5)
                out, y, mean, _, invstd = grouped_conv_train_fwd(x, w, bn[0], bn[1], 1e-5, stride, groups, True)
                grouped_conv_bwd(torch.ones_like(out), x, w, y, mean, invstd, bn[0], bn[1], stride, groups, True,
                                 True)

            record = _sweep(c, table, "grouped_conv", dtype, shape_key(gw), grouped_conv_candidates(gw, dtype),
                            grouped_conv_tiles(gw, dtype), launch, "eval fwd + train fwd + bwd")
            return {**record, "shape": {**shape, "batch": batch}}
        yield f"tune grouped conv gw={gw} ({shape['model']} {shape['channels']} ch, {shape['hw']} px)", run


def _tune_pointwise_cases(c: Campaign, table: dict):
    """The eval 1x1 GEMM's tuning space (kernels/pointwise_conv.eval_candidates) at each distinct eval 1x1 shape of
    the priority models, batch 64."""
    from .kernels.pointwise_conv import device_arch, eval_candidates, eval_shape_key, eval_tiles, pointwise_conv_fwd
    from .shapes import pointwise_eval_shapes

    dtype = torch.float16 if c.dry_run else torch.bfloat16  # fp16: the dry run's interpreter refuses bf16
    shapes = [s for name in PRIORITY_MODELS for s in pointwise_eval_shapes(name)]
    if c.dry_run:
        shapes = [{"model": "tiny", "k": 16, "n": 24, "hw": 4, "proj_k": 8, "proj_stride": 2}]
    batch = 2 if c.dry_run else 64
    seen = set()
    for shape in shapes:
        k, n, hw, proj = shape["k"], shape["n"], shape["hw"], shape["proj_k"] > 0
        key = eval_shape_key(k, n, proj)
        if key in seen:
            continue
        seen.add(key)

        def run(k=k, n=n, hw=hw, proj=proj, shape=shape, key=key):
            gen = torch.Generator().manual_seed(0)

            def t(*size, scale=1.0):
                return (torch.randn(*size, generator=gen) * scale).to(c.device, dtype)

            x = t(batch, k, hw, hw).contiguous(memory_format=torch.channels_last)
            w = t(n, k, 1, 1, scale=k ** -0.5)
            bn = [torch.rand(n, generator=gen).to(c.device) + 0.5, torch.randn(n, generator=gen).to(c.device),
                  torch.randn(n, generator=gen).to(c.device), torch.rand(n, generator=gen).to(c.device) + 0.5]
            extra = {}
            if proj:
                s2 = shape["proj_stride"]
                extra = dict(x2=t(batch, shape["proj_k"], hw * s2, hw * s2).contiguous(
                    memory_format=torch.channels_last), weight2=t(n, shape["proj_k"], 1, 1, scale=0.1), bn2=bn,
                    eps2=1e-5, stride2=s2)
            arch = device_arch(c.device)
            heuristic = eval_tiles(n, dtype, proj, arch)
            configs = eval_candidates(n, dtype, proj, arch)
            if c.dry_run:  # the interpreter runs each configuration for seconds: the heuristic and one other
                configs = list(dict.fromkeys([heuristic, configs[0]]))
            record = _sweep(c, table, "pointwise_eval", dtype, key, configs, heuristic,
                            lambda: pointwise_conv_fwd(x, w, bn, 1e-5, True, **extra), "eval fwd")
            return {**record, "shape": {**shape, "batch": batch}}
        yield f"tune eval 1x1 k={k} n={n}{' +proj' if proj else ''} ({shape['model']}, {hw} px)", run


def _tune_pointwise_train_cases(c: Campaign, table: dict):
    """The training 1x1 kernels' tuning spaces (kernels/pointwise_conv.train_candidates: forward GEMM with
    statistics, data grad, weight grad), one role at a time with the others on their heuristic, at each distinct
    training 1x1 shape of the priority models, batch 64; each timed call runs the op's forward and backward."""
    from .kernels.pointwise_conv import (TRAIN_FAMILIES, _train_heuristic, pointwise_conv_bwd,
                                         pointwise_conv_train_fwd, train_candidates, train_shape_key)
    from .kernels.squeeze_excite import se_excite, se_squeeze
    from .shapes import pointwise_train_shapes

    dtype = torch.float16 if c.dry_run else torch.bfloat16  # fp16: the dry run's interpreter refuses bf16
    shapes = [s for name in PRIORITY_MODELS for s in pointwise_train_shapes(name)]
    if c.dry_run:
        shapes = [{"model": "tiny", "k": 16, "n": 24, "hw": 4, "stride": 1, "gated": True}]
    batch = 2 if c.dry_run else 64
    seen = set()
    for shape in shapes:
        k, n, hw, stride, gated = shape["k"], shape["n"], shape["hw"], shape["stride"], shape["gated"]
        key = train_shape_key(k, n, stride, gated)
        if key in seen:
            continue
        seen.add(key)
        for role, family in TRAIN_FAMILIES.items():
            def run(k=k, n=n, hw=hw, stride=stride, gated=gated, shape=shape, key=key, role=role, family=family):
                gen = torch.Generator().manual_seed(0)

                def t(*size, scale=1.0):
                    return (torch.randn(*size, generator=gen) * scale).to(c.device)

                x = t(batch, k, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)
                w = t(n, k, 1, 1, scale=k ** -0.5).to(dtype)
                gamma, beta = t(n).abs() + 0.5, t(n)
                gate = se = shortcut = None
                if gated:  # conv c: the SE gate (4 hidden units) and the identity shortcut
                    sq, rows = se_squeeze(x)
                    fc = (t(4, k, 1, 1, scale=0.1), t(4), t(k, 4, 1, 1, scale=0.1), t(k))
                    gate, pooled, hidden = se_excite(sq, batch, hw * hw, rows, *fc, saved=True)
                    se = (pooled, hidden, fc[0], fc[2])
                    shortcut = t(batch, n, hw, hw).to(dtype).contiguous(memory_format=torch.channels_last)

                def launch():
                    out, y, mean, _, invstd = pointwise_conv_train_fwd(x, w, gamma, beta, 1e-5, stride, True, gate,
                                                                       shortcut)
                    pointwise_conv_bwd(torch.ones_like(out), x, w, y, out if gated else None, mean, invstd, gamma,
                                       beta, stride, True, gate, se)

                heuristic = _train_heuristic(role, n, dtype, gated)
                configs = train_candidates(role, n, dtype, gated)
                if c.dry_run:  # the heuristic and one other
                    configs = list(dict.fromkeys([heuristic, configs[0]]))
                record = _sweep(c, table, family, dtype, key, configs, heuristic, launch, "train fwd + bwd")
                return {**record, "shape": {**shape, "batch": batch}}
            yield (f"tune train 1x1 {role} k={k} n={n} s={stride}{' +gate' if gated else ''} "
                   f"({shape['model']}, {hw} px)"), run


def _tune_bn_cases(c: Campaign, table: dict):
    """The BatchNorm normalize pass and backward reduction's tuning space (kernels/batch_norm.elementwise_candidates)
    at each stage width of the priority models (on its output map), batch 64: conv c's shape, with the shortcut."""
    from .kernels.batch_norm import (ELEMENTWISE_TILES, bn_act_apply, bn_act_bwd_reduce, elementwise_candidates)
    from .shapes import block_shapes

    dtype = torch.float16 if c.dry_run else torch.bfloat16  # fp16: the dry run's interpreter refuses bf16
    shapes = {}
    for name in PRIORITY_MODELS:
        for b in block_shapes(name):
            shapes.setdefault(b["width_out"], {"model": name, "hw": (b["hw"] - 1) // b["stride"] + 1})
    if c.dry_run:
        shapes = {24: {"model": "tiny", "hw": 4}}
    batch = 2 if c.dry_run else 64
    for ch, shape in shapes.items():
        for family in ("bn_apply", "bn_bwd_reduce"):
            def run(ch=ch, shape=shape, family=family):
                gen = torch.Generator().manual_seed(0)
                y, sc, go = (torch.randn(batch, ch, shape["hw"], shape["hw"], generator=gen).to(c.device, dtype)
                             .contiguous(memory_format=torch.channels_last) for _ in range(3))
                mean, invstd, gamma, beta = (torch.rand(ch, generator=gen).to(c.device) + 0.5 for _ in range(4))
                out = bn_act_apply(y, mean, invstd, gamma, beta, True, sc)

                def launch():
                    if family == "bn_apply":
                        bn_act_apply(y, mean, invstd, gamma, beta, True, sc)
                    else:
                        bn_act_bwd_reduce(go, y, mean, invstd, gamma, beta, True, True, out)

                configs = elementwise_candidates(family)
                if c.dry_run:  # the heuristic and one other
                    configs = configs[:2]
                record = _sweep(c, table, family, dtype, f"c={ch}", configs, ELEMENTWISE_TILES, launch,
                                family.replace("bn_", "BN "))
                return {**record, "shape": {**shape, "channels": ch, "batch": batch}}
            yield f"tune {family} c={ch} ({shape['model']}, {shape['hw']} px)", run


def _interleave(*case_lists) -> list:
    """Round-robin over the lists, so that a time box that cuts the sweep leaves every kernel family with its first
    (priority-model) shapes tuned rather than one family whole and the others untouched."""
    out = []
    for i in range(max(map(len, case_lists), default=0)):
        out += [cases[i] for cases in case_lists if i < len(cases)]
    return out


def part_tune(c: Campaign) -> bool:
    table: dict = {}
    try:
        families = (_tune_cases, _tune_pointwise_cases, _tune_pointwise_train_cases, _tune_bn_cases)
        return _each(c, "tune", _interleave(*(list(cases(c, table)) for cases in families)))
    finally:  # whatever was measured, even when the time box cut the sweep
        path = os.path.join(os.path.dirname(c.path), "tuned_configs.json")
        with open(path, "w") as f:
            json.dump({"format": 1, "about": "written by fastregnet gpu-campaign --part tune; copy to "
                                             "kernels/tuned_configs.json to ship", "gpus": table}, f, indent=1)


# ----------------------------------------------------------------------------------------------------------------
# (d) per-op microbenchmarks
# ----------------------------------------------------------------------------------------------------------------


def _time(fn, c: Campaign) -> float:
    warmup, repeats = (0, 1) if c.dry_run else (3, 20)
    import statistics

    return statistics.median(roofline.measure(fn, c.device, warmup, repeats))


def _microbench_cases(c: Campaign):
    from . import use_backend
    from .design import MODEL_CONFIGS
    from .shapes import block_shapes

    models = ("regnet_y_400mf",) if c.dry_run else ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf")
    dtype = torch.float32 if c.dry_run else torch.bfloat16
    elem = torch.finfo(dtype).bits // 8
    for name in models:
        assert name in MODEL_CONFIGS
        for case in block_shapes(name):
            if c.dry_run:
                case = {**case, "hw": 8, "batch": 2}
                if case["stage"] > 1:
                    break
            case = {"batch": 256, **case}
            for what in ("f.b eval", "block eval", "block train"):
                def run(case=case, what=what):
                    ours, theirs = _block_pair(case)
                    ours, theirs = (m.to(c.device, dtype, memory_format=torch.channels_last) for m in (ours, theirs))
                    x = torch.randn(case["batch"], case["width_in"], case["hw"], case["hw"], device=c.device,
                                    dtype=dtype).contiguous(memory_format=torch.channels_last)
                    if what == "f.b eval":  # f.b's input has width_out channels (bottleneck multiplier 1)
                        x = torch.randn(case["batch"], case["width_out"], case["hw"], case["hw"], device=c.device,
                                        dtype=dtype).contiguous(memory_format=torch.channels_last)
                        mods = (ours.f.b.eval(), theirs.f.b.eval())
                    elif what == "block eval":
                        mods = (ours.eval(), theirs.eval())
                    else:
                        mods = (ours.train(), theirs.train())
                    times = {}
                    for label, m, backend in (("fastregnet", mods[0], "triton"), ("torchvision", mods[1], None)):
                        if what.endswith("train"):
                            xg = x.detach().requires_grad_(True)

                            def step(m=m):
                                m(xg).sum().backward()
                        else:
                            def step(m=m):
                                with torch.no_grad():
                                    m(x)
                        with use_backend(backend) if backend else contextlib.nullcontext():
                            times[label] = _time(step, c)
                    with torch.no_grad():
                        y = mods[1](x)
                    params = sum(p.numel() for p in mods[1].parameters())
                    # least traffic: the input read and the output written once, weights once (x3 in training:
                    # forward, and the backward reading the saved input and output grad, writing the input grad)
                    min_bytes = elem * (x.numel() + y.numel() + params) * (3 if what.endswith("train") else 1)
                    rec = {"status": "ok", "shape": case, "dtype": str(dtype), **{f"{k}_s": v for k, v in times.items()},
                           "speedup_vs_torchvision": times["torchvision"] / times["fastregnet"], "min_bytes": min_bytes}
                    if c.rates:
                        bw = c.rates["copy_bandwidth_bytes_per_s"]
                        rec["fastregnet_fraction_of_memory_roofline"] = min_bytes / bw / times["fastregnet"]
                        rec["torchvision_fraction_of_memory_roofline"] = min_bytes / bw / times["torchvision"]
                    return rec
                yield (f"{what} {name} stage {case['stage']} {case['width_in']}->{case['width_out']} "
                       f"gw={case['group_width']} hw={case['hw']} batch {case['batch']}"), run


def part_microbench(c: Campaign) -> bool:
    return _each(c, "microbench", _microbench_cases(c))


# ----------------------------------------------------------------------------------------------------------------
# (e) whole-model bench
# ----------------------------------------------------------------------------------------------------------------


def _cuda_graph_provider(model_name: str, state_dict: dict, device: torch.device, compile_mode):
    """fastregnet inference replayed from a CUDA graph (batch 1 is host-bound without one)."""
    from .models import create_model

    model = create_model(model_name)
    model.load_state_dict(state_dict)
    model = model.to(device=device, memory_format=torch.channels_last)
    return _GraphedInference(model), torch.channels_last


class _GraphedInference(torch.nn.Module):
    """Captures model(x) on the first eval call of a given input shape and replays it afterwards."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        self.graph = self.static_in = self.static_out = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            raise RuntimeError("the CUDA-graph provider runs inference only")
        if self.graph is None or self.static_in.shape != x.shape or self.static_in.dtype != x.dtype:
            self.static_in = x.clone()
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    self.model(self.static_in)
            torch.cuda.current_stream().wait_stream(side)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.static_out = self.model(self.static_in)
        self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def _model_bench_cases(c: Campaign):
    from . import bench

    if c.dry_run:
        plans = [("regnet_y_400mf", 2, ("infer", "train"), ("tv_channels_last", "fastregnet"))]
        res, warmup, repeats, dtype = 64, 0, 1, "fp32"  # 64 px: train-mode BN in the last stage sees 8 values
    else:
        main = ("fastregnet", "tv_channels_last", "tv_nchw", "tv_compile", "fastregnet_compile")
        plans = [("regnet_y_400mf", 256, ("infer", "train"), main),
                 ("regnet_y_1_6gf", 256, ("infer", "train"), main),
                 ("regnet_y_16gf", 256, ("infer", "train"), main[:3]),
                 ("regnet_y_400mf", 1, ("infer",), ("fastregnet", "fastregnet_cudagraph", "tv_channels_last")),
                 ("regnet_y_400mf", 256, ("infer",), ("tv_compile_max_autotune",))]
        res, warmup, repeats, dtype = 224, 3, 10, "bf16"
    for model, batch, modes, providers in plans:
        for mode in modes:
            def run(model=model, batch=batch, mode=mode, providers=providers):
                report = bench.run([model], [batch], dtype, [mode], providers, res, c.device, warmup, repeats,
                                   log=lambda *_: None, extra_providers={"fastregnet_cudagraph": _cuda_graph_provider},
                                   rates=c.rates, stop=lambda: c.time_left() <= 0)
                recs = []
                for r in report["results"]:
                    bad = "error" in r or r.get("wrong")
                    recs.append({"status": "FAIL" if bad else "ok", **r})
                return recs
            yield f"model bench {model} batch {batch} {mode} {dtype} ({', '.join(providers)})", run


def part_models(c: Campaign) -> bool:
    return _each(c, "models", _model_bench_cases(c))


RUNNERS = {"env": part_env, "correctness": part_correctness, "tune": part_tune, "microbench": part_microbench,
           "models": part_models}


def summary(doc: dict) -> str:
    """One line per part: status, records by status, seconds."""
    lines = []
    for part, entry in doc["parts"].items():
        counts: dict[str, int] = {}
        for r in entry["records"]:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"{part:<12} {entry['status']:<20} {entry.get('seconds', 0):>7.1f} s  {tally}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------


def add_parser(sub) -> None:
    from .cli_args import positive_int

    p = sub.add_parser("gpu-campaign", help="the GPU session's one command: correctness, microbenchmarks and "
                                            "whole-model figures, time-boxed, into DIR/campaign.json")
    p.add_argument("--out", required=True, help="directory for campaign.json (created)")
    p.add_argument("--budget-s", type=positive_int, default=540, help="total seconds for all parts (default 540)")
    p.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="every part on the CPU through the Triton interpreter at tiny shapes (what CI runs)")
    p.set_defaults(func=_cmd_campaign)


def _cmd_campaign(args) -> int:
    import sys

    if args.dry_run:
        from .backend import triton_interpreting

        if "fastregnet.kernels" not in sys.modules and "triton" not in sys.modules:
            os.environ["TRITON_INTERPRET"] = "1"  # before the kernels are defined (Triton reads it at @jit time)
        if not triton_interpreting():
            raise ValueError("--dry-run runs the kernels through the Triton interpreter: set TRITON_INTERPRET=1 "
                             "before fastregnet's kernels are imported")
    elif not torch.cuda.is_available():
        raise ValueError("no CUDA GPU here: gpu-campaign needs one (use --dry-run to check it on the CPU)")
    c = Campaign(args.out, args.budget_s, args.part, args.dry_run,
                 log=lambda s: print(s, file=sys.stderr, flush=True))
    doc = c.run()
    print(summary(doc))
    print(f"JSON written to {c.path}")
    bad = [r for e in doc["parts"].values() for r in e["records"] if r.get("status") in ("FAIL", "error")]
    return 1 if bad or any(e["status"] == "error" for e in doc["parts"].values()) else 0
