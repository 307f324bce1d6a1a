"""Static cost of every kernel variant the zoo launches and of every grouped-conv configuration in the tuning space,
compiled for sm_80 and sm_90 without a GPU with the run-time divisibility specialization: registers, spills, stack
frame, shared memory (Triton's bundled ptxas). Run: python bench/aot_report.py [OUT.json]"""

import json
import sys

from fastregnet.design import MODEL_CONFIGS
from fastregnet.kernels.aot import compile_all


def main() -> None:
    group_widths = sorted({g for c in MODEL_CONFIGS.values() for g in c.params().group_widths})
    rows = compile_all(group_widths, candidates=True)
    print(f"{'arch':>4} {'regs':>4} {'spill':>5} {'stack':>5} {'smem':>6} {'dtype':<6} kernel")
    for r in rows:
        if "error" in r:
            print(f"{r['arch']:>4} ERROR {r['dtype']:<6} {r['kernel']}: {r['error'][:200]}")
            continue
        print(f"{r['arch']:>4} {r['registers']:>4} {r['spill_store_bytes']:>5} {r['stack_frame_bytes']:>5} "
              f"{r['shared_bytes']:>6} {r['dtype']:<6} {r['kernel']}")
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
