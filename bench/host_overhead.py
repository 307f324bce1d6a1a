"""Host overhead of the Triton path, measured on the CPU: every kernel launch is replaced by a no-op (the
launchers still validate, pick tiles, allocate and compute their grids; only the kernel body does not run), so what
remains is fastregnet's Python, `torch.library.custom_op` dispatch, Triton's launch glue, allocation and the
PyTorch ops around the kernels (the stem and head, which do run, at a tiny size): the time a GPU would wait for the
host if the kernels took none.

    python bench/host_overhead.py [--out bench/results/host-overhead-cpu.json] [--repeats 20] [--readme]
                                  [--constants]

--readme rewrites the table between the host-overhead markers in README.md from the results; --constants writes
the host seconds per launch (per mode, the median over the models) into fastregnet/data/cost_constants.json, where
`fastregnet cost --launch eager` reads them.

Reports, per model and mode (eval forward under no_grad; a training step: forward, backward), the host
milliseconds per call (median over repeats) and per launch, and a split of one profiled call by where the time
went (CATEGORIES). The split comes from cProfile, which slows everything, so it is given as shares, and the
totals come from the run without it. CPU tensors at batch 2, 64 px: the host work of the body does not depend on
the size (allocations only reserve memory, the no-op launches never touch it), and at that size the stem and head,
which really run, cost little.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime
import json
import os
import platform
import pstats
import statistics
import sys
import time

os.environ["TRITON_INTERPRET"] = "1"  # the kernels are defined as interpreted functions: their launch is stubbed

import torch  # noqa: E402
from triton.runtime import interpreter  # noqa: E402

import fastregnet  # noqa: E402

MODELS = ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_x_400mf")
BATCH, RESOLUTION = 2, 64  # train-mode BN needs more than one value per channel: 2 x 2 x 2 in the last stage
CATEGORIES = {  # matched in order against "file:function" of each profiled function's own time
    "allocation": ("<built-in method torch.empty", "<built-in method torch.zeros", "<method 'new_empty'",
                   "<built-in method torch.empty_like", "<built-in method torch.zeros_like"),
    "fastregnet": ("/fastregnet/", "/kernels/"),
    "custom-op dispatch": ("/torch/_library/", "/torch/_ops.py", "/torch/autograd/", "/torch/_dynamo/",
                           "/torch/_compile.py", "/torch/utils/_python_dispatch.py", "<built-in method torch._ops."),
    "triton launch glue": ("/triton/",),
    "torch ops (stem, head, layout, sums)": ("<built-in method torch.", "<method '", "<built-in method torch._C."),
    "torch.nn module calls": ("/torch/nn/",),
}


def _no_op_run(self, *args, grid, warmup, **kwargs):
    """InterpretedFunction.run without the kernel: the grid is still evaluated, as a real launch does."""
    if callable(grid):
        grid(kwargs)


def _category(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for category, needles in CATEGORIES.items():
        if any(n in where for n in needles):
            return category
    return "other"


def _split(fn) -> dict:
    """Shares of one profiled call's own time (tottime) by category."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    totals: dict[str, float] = {}
    for (filename, _, name), row in pstats.Stats(prof).stats.items():
        totals[_category(filename, name)] = totals.get(_category(filename, name), 0.0) + row[2]
    whole = sum(totals.values()) or 1.0
    return {k: round(v / whole, 3) for k, v in sorted(totals.items())}


def measure(name: str, mode: str, repeats: int) -> dict:
    model = fastregnet.create_model(name).to(memory_format=torch.channels_last)
    x = torch.randn(BATCH, 3, RESOLUTION, RESOLUTION).contiguous(memory_format=torch.channels_last)
    if mode == "infer":
        model.eval()

        def call():
            with torch.no_grad():
                model(x)
    else:
        model.train()
        xg = x.clone().requires_grad_(True)

        def call():
            model(xg).sum().backward()
    with fastregnet.use_backend("triton"):
        call()  # first call: imports, kernel rewrites, caches
        with fastregnet.count_kernel_launches() as launches:
            call()
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        split = _split(call)
    n = sum(launches.values())
    med = statistics.median(times)
    return {"model": name, "mode": mode, "launches": n, "host_ms": round(med * 1e3, 2),
            "host_ms_spread": [round(min(times) * 1e3, 2), round(max(times) * 1e3, 2)],
            "host_us_per_launch": round(med / n * 1e6, 1), "profile_share": split}


BEGIN, END = "<!-- host-overhead:begin -->", "<!-- host-overhead:end -->"


def readme_table(doc: dict) -> str:
    lines = ["| model | mode | launches | host ms per call (min-max) | host us per launch | where the time goes "
             "(cProfile shares) |", "|---|---|---|---|---|---|"]
    for r in doc["results"]:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in sorted(r["profile_share"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['model']} | {r['mode']} | {r['launches']} | {r['host_ms']:.1f} "
                     f"({r['host_ms_spread'][0]:.1f}-{r['host_ms_spread'][1]:.1f}) | {r['host_us_per_launch']:.0f} | "
                     f"{shares} |")
    lines.append(f"\nMeasured on {doc['machine']} (one thread), torch {doc['torch']}, triton {doc['triton']}, "
                 f"{doc['date'][:10]}; `bench/host_overhead.py --readme` regenerates this table.")
    return "\n".join(lines)


def write_readme(doc: dict, path: str = "README.md") -> None:
    from fastregnet.readme_tables import replace_between

    replace_between(path, BEGIN, END, readme_table(doc))


def write_constants(doc: dict, path: str = os.path.join(os.path.dirname(__file__), "..", "fastregnet", "data",
                                                         "cost_constants.json")) -> None:
    with open(path) as f:
        constants = json.load(f)
    per_mode = {mode: statistics.median(r["host_us_per_launch"] for r in doc["results"] if r["mode"] == mode) * 1e-6
                for mode in ("infer", "train")}
    constants["host"] = {"s_per_launch": per_mode, "machine": doc["machine"], "torch": doc["torch"],
                         "triton": doc["triton"], "date": doc["date"],
                         "source": "bench/host_overhead.py: median over its models of host time per Triton launch, "
                                   "with the launches stubbed to no-ops (measured on the CPU named here)"}
    with open(path, "w") as f:
        json.dump(constants, f, indent=1)
        f.write("\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join("bench", "results", "host-overhead-cpu.json"))
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--readme", action="store_true", help="rewrite README.md's host-overhead table from the results")
    p.add_argument("--constants", action="store_true", help="write the host time per launch into the cost constants")
    args = p.parse_args()
    torch.set_num_threads(1)  # host work is one thread; keep the other core quiet
    interpreter.InterpretedFunction.run = _no_op_run
    rows = [measure(name, mode, args.repeats) for name in args.models for mode in ("infer", "train")]
    doc = {"what": "host time of the Triton path with every kernel launch a no-op (bench/host_overhead.py)",
           "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                      f"{platform.platform()}",
           "torch": torch.__version__, "triton": __import__("triton").__version__,
           "python": platform.python_version(),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "results": rows}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
    print(f"{'model':<16} {'mode':<6} {'launches':>8} {'host ms':>8} {'us/launch':>9}  profile shares")
    for r in rows:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["profile_share"].items())
        print(f"{r['model']:<16} {r['mode']:<6} {r['launches']:>8} {r['host_ms']:>8.2f} "
              f"{r['host_us_per_launch']:>9.1f}  {shares}")
    print(f"JSON written to {args.out}", file=sys.stderr)
    if args.readme:
        write_readme(doc)
    if args.constants:
        write_constants(doc)


if __name__ == "__main__":
    main()
