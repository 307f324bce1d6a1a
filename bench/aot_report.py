"""Static cost of every kernel variant the zoo launches and of every grouped-conv configuration in the tuning space,
compiled for sm_80 and sm_90 without a GPU with the run-time divisibility specialization: registers, spills, stack
frame, shared memory (Triton's bundled ptxas). Run: python bench/aot_report.py [OUT.json]

Writing the report also writes fastregnet/data/kernel_facts.json (kernels.aot.static_facts: registers, shared memory,
pipelined loads per tile), which the cost model reads for occupancy and load latency.

The whole space takes about 15 minutes on 2 cores. After changing some kernels only,
`python bench/aot_report.py OUT.json --only KERNEL[,KERNEL...]` recompiles just those kernels' variants and
replaces their rows in OUT.json, keeping the others; `python bench/aot_report.py --facts-only REPORT.json` rewrites
kernel_facts.json from an existing report without compiling."""

import json
import os
import sys

from fastregnet.design import MODEL_CONFIGS
from fastregnet.kernels.aot import compile_all, static_facts

FACTS = os.path.join(os.path.dirname(__file__), "..", "fastregnet", "data", "kernel_facts.json")


def write_facts(rows: list[dict], path: str = FACTS) -> None:
    doc = {"format": 1, "about": "Static facts of the compiled kernel variants (sm_80 / sm_90, no GPU), per tile: "
           "written by bench/aot_report.py from bench/results/aot-static-report.json; read by fastregnet/cost.py "
           "for occupancy and load latency.", "facts": static_facts(rows)}
    with open(path, "w") as f:
        json.dump(doc, f, indent=0)
        f.write("\n")


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--facts-only"]:  # re-derive kernel_facts.json from an existing report, compiling nothing
        with open(args[1]) as f:
            write_facts(json.load(f))
        return
    only = None
    if "--only" in args:
        i = args.index("--only")
        only = tuple(args[i + 1].split(","))
        del args[i:i + 2]
    group_widths = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})
    rows = compile_all(group_widths, candidates=True, kernels=only)
    print(f"{'arch':>4} {'regs':>4} {'spill':>5} {'stack':>5} {'smem':>6} {'dtype':<6} kernel")
    for r in rows:
        if "error" in r:
            print(f"{r['arch']:>4} ERROR {r['dtype']:<6} {r['kernel']}: {r['error'][:200]}")
            continue
        print(f"{r['arch']:>4} {r['registers']:>4} {r['spill_store_bytes']:>5} {r['stack_frame_bytes']:>5} "
              f"{r['shared_bytes']:>6} {r['dtype']:<6} {r['kernel']}")
    if args:
        if only is not None:  # keep every other kernel's rows from the existing report
            with open(args[0]) as f:
                kept = [r for r in json.load(f) if r["kernel"].split("[")[0] not in only]
            rows = kept + rows
        with open(args[0], "w") as f:
            json.dump(rows, f, indent=1)
        write_facts(rows)


if __name__ == "__main__":
    main()
