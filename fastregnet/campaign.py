"""The GPU campaign's parts: what `fastregnet gpu-campaign` measures and checks, one part per process.

`fastregnet.campaign_runner` runs the parts in priority order, each in its own subprocess with its own time box (a
share of --budget-s; time a part leaves unused passes to the next), after a parallel warm-up of Triton's compile
cache. Each part appends every record to DIR/campaign.json as it is made, so a run cut off keeps what it measured:

  env          versions, device, measured copy bandwidth and matmul rates (fastregnet.roofline.measure_device)
  warmup       (the runner) every part's fastregnet cases run once, untimed, in parallel worker processes over the
               machine's cores, so Triton compiles before anything is timed; compile time recorded
  correctness  first every tile candidate of every kernel family at one real block shape in bf16 and fp16, then
               CUDA-graph capture, a kernel on > 2^31 elements, bitwise determinism, whole regnet_y_400mf /
               regnet_x_400mf, and every fused path at the zoo's stage-first block shapes in bf16, fp16, fp32 and
               fp32 with TF32 (outputs, input and parameter grads, running statistics), eval and train
  models       whole-model eager bench at batch 256, bf16 autocast: regnet_y_400mf, regnet_y_1_6gf, regnet_y_16gf,
               regnet_x_400mf, inference and a training step, fastregnet against torchvision eager in both layouts,
               providers interleaved, with peak memory
  microbench   f.b (grouped conv + BN + ReLU) and whole blocks, eval and train, against the torchvision modules
               they replace (cuDNN), with the fraction of the memory roofline each reaches and the cost model's
               prediction of the same launches (what `fastregnet campaign-apply` fits the model's constants from)
  tune         every tile configuration of every tuning space timed at the priority models' shapes; the fastest
               per (GPU, dtype, shape key) written to DIR/tuned_configs.json (campaign-apply ships it)
  compile      batch 1 with a CUDA graph, then torch.compile providers (default and max-autotune): last, since
               inductor's compiles are the slowest thing here

The comparison rule for a fused path: its error against an fp64 torchvision reference (computed on the device)
may be at most 4x the error of torchvision itself in the same dtype and TF32 setting, or 4 machine epsilons of
that dtype, whichever is larger. Both errors are recorded, so a reader can judge the margin.

`--dry-run` runs every part on the CPU through the Triton interpreter at tiny shapes (checks that need CUDA are
recorded as skipped, with the reason): a CI test runs it so that the campaign cannot rot.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import sys
import time
import traceback

import torch

from . import cost, roofline

PARTS = ("env", "warmup", "correctness", "models", "microbench", "tune", "compile")
SHARES = {"env": 0.04, "warmup": 0.16, "correctness": 0.2, "models": 0.25, "microbench": 0.1, "tune": 0.15,
          "compile": 0.1}
WARM_PARTS = ("correctness", "models", "microbench", "tune")  # the parts whose Triton compiles the warm-up runs
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "tf32": torch.float32}
PRIORITY_MODELS = ("regnet_y_400mf", "regnet_x_400mf", "regnet_y_1_6gf", "regnet_y_16gf")
RULE = ("fused error <= max(4 x torchvision's error in the same dtype and TF32 setting, 4 eps(dtype)), both "
        "against an fp64 torchvision reference computed on the device")


def load_doc(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def save_doc(path: str, doc: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    os.replace(tmp, path)  # a process killed mid-write still leaves the previous complete file


def measured_rates(doc: dict) -> dict | None:
    """The env part's bf16 copy bandwidth and matmul rate, if it measured them."""
    for rec in doc.get("parts", {}).get("env", {}).get("records", []):
        if rec.get("case") == "device rates bf16" and rec.get("status") == "ok":
            return {k: rec[k] for k in ("copy_bandwidth_bytes_per_s", "matmul_flops_per_s", "matmul_dtype",
                                        "measured_on")}
    return None


class Campaign:
    """One part's run inside its own process: its journal (DIR/.journal-PART.jsonl: one JSON line per record or
    status change, appended and flushed as it happens, so a kill loses nothing written; the runner merges it into
    campaign.json, whose only writer it is), its time box (a wall-clock deadline), dry run or not.

    As a warm-up worker (`warm=(i, n)`), fastregnet's side of the cases runs once, untimed, so that Triton's compile
    cache is filled before the parts run (see warm_up)."""

    def __init__(self, doc_path: str, journal_path: str, part: str, deadline: float, dry_run: bool, log=print,
                 warm=None):
        self.part, self.deadline, self.dry_run, self.log, self.warm = part, deadline, dry_run, log, warm
        self.out_dir = os.path.dirname(doc_path)
        self.device = torch.device("cpu" if dry_run else "cuda")
        self.rates = measured_rates(load_doc(doc_path))
        self.journal = open(journal_path, "a")

    def _write(self, line: dict) -> None:
        self.journal.write(json.dumps(line, default=str) + "\n")
        self.journal.flush()

    def meta(self, **fields) -> None:
        """Part-level fields (status, cases planned, the case running now) for the runner to merge."""
        self._write({"meta": fields})

    def record(self, rec: dict) -> None:
        self._write({"record": rec})
        if self.warm is None:
            provider = f" [{rec['provider']}]" if "provider" in rec else ""
            self.log(f"[{self.part}] {rec.get('status', ''):<7} {rec.get('case', '')}{provider}")

    def time_left(self) -> float:
        return self.deadline - time.time()


def read_journal(path: str) -> tuple[dict, list]:
    """(merged meta fields, records) of a journal; a line cut off by a kill is skipped."""
    meta, records = {}, []
    try:
        with open(path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return meta, records
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if "meta" in item:
            meta.update(item["meta"])
        elif "record" in item:
            records.append(item["record"])
    return meta, records


# CUDA errors after which the process's context is unusable: every later case would fail the same way
_STICKY_CUDA = ("illegal memory access", "illegal address", "unspecified launch failure", "device-side assert",
                "operation not permitted when stream is capturing", "misaligned address", "CUDA error: an illegal")


def _each(c: Campaign, cases) -> bool:
    """Run a part's (name, fn) cases while its time box lasts; returns True when the box (or a lost CUDA context)
    cut it short, with the cases not run listed by name."""
    cases = list(cases)
    c.meta(cases_planned=len(cases))
    for i, (name, fn) in enumerate(cases):
        if c.time_left() <= 0:
            c.record({"case": "time box over", "status": "cut", "cases_not_run": [n for n, _ in cases[i:]]})
            return True
        c.meta(current_case=name, current_case_index=i)  # what the runner reports if it has to kill this process
        if _guarded(c, name, fn):
            c.record({"case": "CUDA context lost", "status": "cut", "cases_not_run": [n for n, _ in cases[i + 1:]],
                      "reason": "a sticky CUDA error: the part ends here and its time passes to the next part"})
            return True
    c.meta(current_case=None, current_case_index=None)
    return False


def _guarded(c: Campaign, name: str, fn) -> bool:
    """One case: fn returns a record (or a list of them); an exception becomes an error record. Returns whether the
    error left the CUDA context unusable."""
    t0 = time.monotonic()
    sticky = False
    try:
        recs = fn()
    except Exception as e:
        message = f"{type(e).__name__}: {e}"
        sticky = c.device.type == "cuda" and any(s in message for s in _STICKY_CUDA)
        recs = {"status": "error", "error": message[:2000]}
        if c.warm is None:
            recs["traceback"] = traceback.format_exc()[-2000:]
    for rec in recs if isinstance(recs, list) else [recs]:
        rec = {"case": name, **rec, "seconds": round(time.monotonic() - t0, 2)}
        c.record(rec)
    return sticky


def run_part(c: Campaign) -> None:
    """A part's process: its cases, then its final status in the journal."""
    try:
        cut = _each(c, PART_CASES[c.part](c))
        c.meta(status="cut by its time box" if cut else "done")
    except Exception as e:  # a part that breaks is reported; the runner goes on to the next
        c.meta(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])


def warm_up(doc_path: str, journal_path: str, index: int, count: int, parts, deadline: float, dry_run: bool,
            log=print) -> None:
    """A warm-up worker: the i-th of every n cases of the warm parts, taken round-robin across the parts (so each
    part's first cases, the ones its time box reaches, are compiled first), fastregnet's side only and untimed.
    A dry run's workers take one case per part each: the interpreter compiles nothing, so that only checks the
    warm-up runs."""
    lists = []
    for part in (p for p in WARM_PARTS if p in parts):
        c = Campaign(doc_path, journal_path, part, deadline, dry_run, log, warm=(index, count))
        lists.append([(c, name, fn) for name, fn in PART_CASES[part](c)][:count if dry_run else None])
    cases = _interleave(*lists)
    for i, (c, name, fn) in enumerate(cases):
        if i % count != index:
            continue
        if c.time_left() <= 0:
            c.record({"case": "time box over", "status": "cut", "cases_not_run": len(cases) - i})
            return
        if _guarded(c, name, fn):
            return


def _dry_trim(c: Campaign, configs: list, heuristic: tuple) -> list:
    """A dry run's share of a tuning space: the heuristic and one other (the interpreter runs each configuration
    for seconds); a GPU run's: all of it."""
    if not c.dry_run:
        return configs
    others = [tuple(x) for x in configs if tuple(x) != tuple(heuristic)]
    return [tuple(heuristic)] + others[:1]


def _warm_skip(c: Campaign):
    """A case with nothing to compile ahead (CUDA-only checks, references), skipped by warm-up workers."""
    return {"status": "skipped", "reason": "warm-up worker: nothing of fastregnet's to compile"} if c.warm else None


# ----------------------------------------------------------------------------------------------------------------
# (a) environment and device rates
# ----------------------------------------------------------------------------------------------------------------


def env_cases(c: Campaign) -> list:
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

    return [("environment", env)] + [(f"device rates {d}", rates(d)) for d in ("bf16", "fp16", "fp32")]


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


def _exact_fp32():
    """The fp64/fp32 references run without TF32 (fastregnet's fp32 kernels follow cuDNN's flag)."""
    from .bench import tf32

    return tf32(False)


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


def _reference(tv_module, x: torch.Tensor, train: bool) -> dict:
    """torchvision's module in fp64 on x's device: the oracle every fused path and torchvision itself are held to."""
    with _exact_fp32():
        return _run_module(copy.deepcopy(tv_module).to(x.device, torch.float64), x.double(), train)


def _run_as(module, x: torch.Tensor, dtype: torch.dtype, train: bool, autocast: bool, tf32: bool, backend=None):
    """One call of a copy of `module` in `dtype` (fp32 weights under autocast), channels_last, on a backend."""
    from . import use_backend

    dev = x.device
    m = copy.deepcopy(module).to(dev, torch.float32 if autocast else dtype, memory_format=torch.channels_last)
    xin = (x if autocast else x.to(dtype)).contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast(dev.type, dtype=dtype) if autocast else contextlib.nullcontext()
    from .bench import tf32 as tf32_mode

    with ctx, (use_backend(backend) if backend else contextlib.nullcontext()), tf32_mode(tf32):
        return _run_module(m, xin, train)


def _compare(c: Campaign, ours_module, tv_module, x: torch.Tensor, dtype: torch.dtype, train: bool,
             autocast: bool = False, tf32: bool = False, ref: dict | None = None, theirs: dict | None = None) -> dict:
    """Our module in `dtype` (or fp32 weights under autocast) vs torchvision's, both against torchvision in fp64
    (`ref` and torchvision's own errors `theirs` may be passed in when several checks share them). A warm-up worker
    runs our side only."""
    if c.warm is not None:
        _run_as(ours_module, x, dtype, train, autocast, tf32, "triton")
        return {"status": "ok", "warm": True}
    ref = ref if ref is not None else _reference(tv_module, x, train)
    ours = _run_as(ours_module, x, dtype, train, autocast, tf32, "triton")
    if theirs is None:
        theirs = {k: _rel(v, ref[k]) for k, v in _run_as(tv_module, x, dtype, train, autocast, tf32).items()}
    return _verdict({k: _rel(v, ref[k]) for k, v in ours.items()}, theirs, dtype)


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
    dtypes = ("fp32", _half(c)) if c.dry_run else ("bf16", "fp16", "fp32", "tf32")
    for case in zoo_block_cases(c.dry_run):
        for dt in dtypes:
            for train in (False, True):
                name = (f"block {case['model']} stage {case['stage']} {case['width_in']}->{case['width_out']} "
                        f"gw={case['group_width']} s={case['stride']} hw={case['hw']} {dt} "
                        f"{'train' if train else 'eval'}")

                def check(case=case, dt=dt, train=train):
                    ours, theirs = _block_pair(case)
                    return _compare(c, ours, theirs, _block_input(c, case), DTYPES[dt], train, tf32=dt == "tf32")
                yield name, check


def _block_input(c: Campaign, case: dict) -> torch.Tensor:
    return torch.randn(case["batch"], case["width_in"], case["hw"], case["hw"],
                       generator=torch.Generator().manual_seed(1)).to(c.device)


# the tuning spaces a block's launches draw from (kernels/tuning.select's families), by mode
EVAL_FAMILIES = ("grouped_conv", "pointwise_eval")
TRAIN_FAMILIES = ("grouped_conv", "pointwise_train_fwd", "pointwise_bwd_data", "pointwise_bwd_weight", "bn_apply",
                  "bn_bwd_reduce")


def candidate_block(dry_run: bool) -> dict:
    """The one real block shape at which every tile candidate is checked: regnet_y_1_6gf's stage 2 first block
    (gw 24, so the grouped conv packs groups into masked tiles; SE; a stride-2 projection), batch 8."""
    from .shapes import block_shapes

    if dry_run:
        return zoo_block_cases(True)[0]
    return {**block_shapes("regnet_y_1_6gf")[1], "batch": 8}


def _candidate_checks(c: Campaign):
    """Every tile configuration of every kernel family, at one real block shape, in bf16 and fp16 (the interpreter
    cannot run bf16 tl.dot, so the 16-bit paths have only run as fp16 before a GPU): the block runs once to learn
    which (family, shape key) selections its launches make, then once per candidate of each, forced for that
    launch alone (the others on their heuristic), each against the fp64 torchvision reference."""
    from .kernels import tuning

    case = candidate_block(c.dry_run)
    dtypes = ("fp16",) if c.dry_run else ("bf16", "fp16")
    for dt in dtypes:
        for train in (False, True):
            for family in TRAIN_FAMILIES if train else EVAL_FAMILIES:
                def check(dt=dt, train=train, family=family):
                    ours, theirs = _block_pair(case)
                    x = _block_input(c, case)
                    dtype = DTYPES[dt]
                    with tuning.observe() as seen:
                        _run_as(ours, x, dtype, train, False, False, "triton")
                    spaces = {key: v for (fam, d, key), v in seen.items() if fam == family and d == str(dtype)[6:]}
                    if not spaces:
                        return {"status": "FAIL", "error": f"the block launched nothing from the {family} family"}
                    ref = theirs_err = None
                    if c.warm is None:
                        ref = _reference(theirs, x, train)
                        theirs_err = {k: _rel(v, ref[k]) for k, v in
                                      _run_as(theirs, x, dtype, train, False, False).items()}
                    recs = []
                    if c.dry_run:  # the interpreter runs each configuration for seconds: one shape key, and of its
                        spaces = dict(list(spaces.items())[:1])  # candidates the heuristic and one other
                    for key, (candidates, heuristic) in spaces.items():
                        candidates = _dry_trim(c, candidates, heuristic)
                        for config in candidates:
                            with tuning.force(config, family, key):
                                verdict = _compare(c, ours, theirs, x, dtype, train, ref=ref, theirs=theirs_err)
                            recs.append({**verdict, "family": family, "shape_key": key, "config": list(config),
                                         "heuristic": config == heuristic, "dtype": dt,
                                         "block": {k: case[k] for k in ("model", "stage", "width_in", "width_out",
                                                                       "stride", "group_width", "hw", "batch")}})
                    return recs
                yield f"tile candidates {family} {dt} {'train' if train else 'eval'}", check


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
                    return _compare(c, ours, tv, x, DTYPES[dt], train, autocast=autocast)
                yield (f"model {name} {dt}{' autocast' if autocast else ''} {'train' if train else 'eval'} "
                       f"batch {batch} {res}px"), check


def _needs_cuda(c: Campaign):
    if c.dry_run:
        return {"status": "skipped", "reason": "needs CUDA (dry run on the CPU)"}
    return _warm_skip(c)


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
        if skip := _warm_skip(c):
            return skip
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

        if skip := _warm_skip(c):
            return skip
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


def correctness_cases(c: Campaign) -> list:
    # the CUDA-graph checks and the > 2^31-element kernel last: a fault there (a capture gone wrong, 4.3 GB and
    # 64-bit offsets) can leave the CUDA context unusable, and then costs no other check
    return [*_candidate_checks(c), *_determinism_check(c), *_model_checks(c), *_block_checks(c),
            *_cuda_graph_checks(c), *_large_tensor_check(c)]


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

    if c.warm is not None:  # compile every configuration; nothing to time
        for config in configs:
            step(config)
        return {"status": "ok", "warm": True}
    times = {}
    for config in configs:  # the time box holds inside a sweep too: the configurations not timed are listed
        if c.time_left() <= 0 and times:
            break
        times[str(list(config))] = _time(lambda config=config: step(config), c)
    not_timed = [list(config) for config in configs if str(list(config)) not in times]
    best = min(times, key=times.get)
    gpu = _gpu_name(c)
    table.setdefault(gpu, {})[table_key(family, dtype, key)] = json.loads(best)
    _write_tuned(c, table)
    h = str(list(heuristic))
    rec = {"status": "cut" if not_timed else "ok", "gpu": gpu, "family": family, "shape_key": key,
           "dtype": str(dtype), f"seconds_per_config ({what})": times, "best": json.loads(best),
           "heuristic": list(heuristic), "heuristic_over_best": times[h] / times[best] if h in times else None}
    return {**rec, "configs_not_timed": not_timed} if not_timed else rec


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
            configs = _dry_trim(c, configs, heuristic)
            record = _sweep(c, table, "pointwise_eval", dtype, key, configs, heuristic,
                            lambda: pointwise_conv_fwd(x, w, bn, 1e-5, True, **extra), "eval fwd")
            return {**record, "shape": {**shape, "batch": batch}}
        yield f"tune eval 1x1 k={k} n={n}{' +proj' if proj else ''} ({shape['model']}, {hw} px)", run


def _tune_pointwise_train_cases(c: Campaign, table: dict):
    """The training 1x1 kernels' tuning spaces (kernels/pointwise_conv.train_candidates: forward GEMM with
    statistics, data grad, weight grad), one role at a time with the others on their heuristic, at each distinct
    training 1x1 shape of the priority models, batch 64; each timed call runs the op's forward and backward."""
    from .kernels.pointwise_conv import (TRAIN_FAMILIES, _train_heuristic, device_arch, pointwise_conv_bwd,
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

                arch = device_arch(c.device)
                heuristic = _train_heuristic(role, n, dtype, gated, stride, arch)
                configs = train_candidates(role, n, dtype, gated, stride, arch)
                configs = _dry_trim(c, configs, heuristic)
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

                configs = _dry_trim(c, elementwise_candidates(family), ELEMENTWISE_TILES)
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


def _write_tuned(c: Campaign, table: dict) -> None:
    """DIR/tuned_configs.json, rewritten after every sweep (a part killed at its time box keeps what it timed)."""
    if c.warm is not None:
        return
    path = os.path.join(c.out_dir, "tuned_configs.json")
    save_doc(path, {"format": 1, "about": "written by fastregnet gpu-campaign --part tune; `fastregnet "
                                          "campaign-apply DIR` merges it into kernels/tuned_configs.json",
                    "gpus": table})


def tune_cases(c: Campaign) -> list:
    table: dict = {}
    _write_tuned(c, table)
    families = (_tune_cases, _tune_pointwise_cases, _tune_pointwise_train_cases, _tune_bn_cases)
    return _interleave(*(list(cases(c, table)) for cases in families))


# ----------------------------------------------------------------------------------------------------------------
# (d) per-op microbenchmarks
# ----------------------------------------------------------------------------------------------------------------


def _time(fn, c: Campaign) -> float:
    """Median seconds of fn() (a warm-up worker calls it once: that compiles, and its time means nothing)."""
    import statistics

    if c.warm is not None:
        fn()
        return 0.0
    warmup, repeats = (0, 1) if c.dry_run else (3, 20)
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
                    providers = (("fastregnet", mods[0], "triton"), ("torchvision", mods[1], None))
                    for label, m, backend in providers[:1] if c.warm is not None else providers:
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
                    if c.warm is not None:
                        return {"status": "ok", "warm": True}
                    with torch.no_grad():
                        y = mods[1](x)
                    params = sum(p.numel() for p in mods[1].parameters())
                    # least traffic: the input read and the output written once, weights once (x3 in training:
                    # forward, and the backward reading the saved input and output grad, writing the input grad)
                    min_bytes = elem * (x.numel() + y.numel() + params) * (3 if what.endswith("train") else 1)
                    rec = {"status": "ok", "shape": case, "dtype": str(dtype), **{f"{k}_s": v for k, v in times.items()},
                           "speedup_vs_torchvision": times["torchvision"] / times["fastregnet"], "min_bytes": min_bytes}
                    # the cost model's terms for the same launches: what campaign-apply fits its constants from
                    gpu = cost.gpu_key(_gpu_name(c), default="H100")
                    launches = cost.block_launches(what, case["batch"], case["hw"], case["width_in"],
                                                   case["width_out"], case["stride"], case["group_width"],
                                                   case["se_ratio"], str(dtype)[6:].replace("bfloat", "bf")
                                                   .replace("float", "fp"), gpu)
                    rec["cost_model"] = {"gpu": gpu, "predicted_s": sum(x.predicted_s for x in launches),
                                         "launch_terms": cost.launch_terms(launches)}
                    if c.rates:
                        bw = c.rates["copy_bandwidth_bytes_per_s"]
                        rec["fastregnet_fraction_of_memory_roofline"] = min_bytes / bw / times["fastregnet"]
                        rec["torchvision_fraction_of_memory_roofline"] = min_bytes / bw / times["torchvision"]
                    return rec
                yield (f"{what} {name} stage {case['stage']} {case['width_in']}->{case['width_out']} "
                       f"gw={case['group_width']} hw={case['hw']} batch {case['batch']}"), run


# ----------------------------------------------------------------------------------------------------------------
# (e) whole-model bench
# ----------------------------------------------------------------------------------------------------------------


def _cuda_graph_provider(model_name: str, state_dict: dict, device: torch.device, compile_mode):
    """fastregnet inference replayed from a CUDA graph (batch 1 is host-bound without one)."""
    from .graphs import cuda_graph_inference
    from .models import create_model

    model = create_model(model_name)
    model.load_state_dict(state_dict)
    model = model.to(device=device, memory_format=torch.channels_last)
    return cuda_graph_inference(model), torch.channels_last


def _bench_case(c: Campaign, model: str, batch: int, mode: str, providers: tuple, res: int, warmup: int,
                repeats: int, dtype: str):
    """One bench.run of (model, batch, mode) over `providers`, interleaved; a warm-up worker runs fastregnet's
    provider once instead, at batch 64, in a quarter of the memory (eight workers share the GPU). Triton
    specializes integer arguments on their divisibility by 16, not their size, so that compiles nearly every
    variant batch 256 launches; the few whose arguments specialize differently (a statistics merge's block
    count, a weight grad's rows per split) compile in the bench's own warm-up steps, outside the timing."""
    from . import bench

    if c.warm is not None:
        if "fastregnet" not in providers:
            return _warm_skip(c)
        warm_batch = batch if c.dry_run or batch < 64 else 64
        tv = bench._torchvision_model(model)
        x = torch.randn(warm_batch, 3, res, res)
        zeros = {m: torch.zeros(warm_batch, 1000) for m in ("infer", "train")}
        prep = bench.prepare("fastregnet", model, warm_batch, dtype, mode, c.device, tv.state_dict(), x, zeros, None,
                             bench.PROVIDERS)
        prep["step"]()
        return {"status": "ok", "warm": True}
    report = bench.run([model], [batch], dtype, [mode], providers, res, c.device, warmup, repeats,
                       log=lambda *_: None, extra_providers={"fastregnet_cudagraph": _cuda_graph_provider},
                       rates=c.rates, stop=lambda: c.time_left() <= 0)
    def status(r):
        if str(r.get("error", "")).startswith("not run: stopped"):
            return "cut"  # the time box, not a failure
        return "FAIL" if "error" in r or r.get("wrong") else "ok"

    return [{"status": status(r), **r} for r in report["results"]]


def _bench_settings(c: Campaign) -> tuple:
    """(resolution, warm-up steps, timed rounds, dtype) of the whole-model benches."""
    # dry run: 64 px, so that train-mode BN in the last stage sees 8 values
    return (64, 0, 1, "fp32") if c.dry_run else (224, 3, 10, "bf16")


def _model_bench_cases(c: Campaign):
    """The eager verdict: fastregnet against torchvision eager in both layouts, at batch 256 (bf16 autocast,
    channels_last), inference and a training step, the priority models in order."""
    res, warmup, repeats, dtype = _bench_settings(c)
    if c.dry_run:
        plans = [("regnet_y_400mf", 2, ("tv_channels_last", "fastregnet"))]
    else:
        plans = [(name, 256, ("fastregnet", "tv_channels_last", "tv_nchw")) for name in
                 ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf", "regnet_x_400mf")]
    for model, batch, providers in plans:
        for mode in ("infer", "train"):
            yield (f"model bench {model} batch {batch} {mode} {dtype} ({', '.join(providers)})",
                   lambda model=model, batch=batch, mode=mode, providers=providers: _bench_case(
                       c, model, batch, mode, providers, res, warmup, repeats, dtype))


def _compile_cases(c: Campaign):
    """Last, because inductor's compiles take minutes: batch 1 with a CUDA graph (host-bound without one), then
    torch.compile of torchvision and of fastregnet (its custom ops stay opaque nodes), then max-autotune."""
    res, warmup, repeats, dtype = _bench_settings(c)
    if c.dry_run:
        reason = ("dry run: a CUDA graph needs CUDA, and torch.compile of a whole model takes minutes on the CPU "
                  "(tests/test_training_options.py compiles one with fullgraph=True)")
        yield "compile and CUDA-graph providers", lambda: {"status": "skipped", "reason": reason}
        return
    plans = [("regnet_y_400mf", 1, ("infer",), ("fastregnet", "fastregnet_cudagraph", "tv_channels_last")),
             ("regnet_y_400mf", 256, ("infer", "train"), ("tv_compile", "fastregnet_compile")),
             ("regnet_y_1_6gf", 256, ("infer", "train"), ("tv_compile", "fastregnet_compile")),
             ("regnet_y_400mf", 256, ("infer",), ("tv_compile_max_autotune",))]
    for model, batch, modes, providers in plans:
        for mode in modes:
            yield (f"model bench {model} batch {batch} {mode} {dtype} ({', '.join(providers)})",
                   lambda model=model, batch=batch, mode=mode, providers=providers: _bench_case(
                       c, model, batch, mode, providers, res, warmup, repeats, dtype))


PART_CASES = {"env": env_cases, "correctness": correctness_cases, "models": lambda c: list(_model_bench_cases(c)),
              "microbench": lambda c: list(_microbench_cases(c)), "tune": tune_cases,
              "compile": lambda c: list(_compile_cases(c))}
