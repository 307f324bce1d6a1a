"""Ahead-of-time compilation of kernel variants for real GPUs, without one: catches what the interpreter accepts
but the compiler rejects, and reads the static cost (registers, spills, shared memory) from Triton's bundled ptxas.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

__all__ = ["compile_variant", "variant_name"]


def variant_name(kernel, constexprs: dict) -> str:
    name = getattr(kernel, "__name__", None) or kernel.fn.__name__
    return name + "[" + ",".join(f"{k}={v}" for k, v in constexprs.items()) + "]"


# Integer arguments that Triton's launcher specializes as multiples of 16 at the zoo's run-time shapes: row counts at
# batch 256 (256 * H * W). Channel counts of the 1x1 convs vary (48, 104, 208, 440...) and are left unspecialized:
# the report errs high. (The grouped conv's C and GW stay run-time values; its constexpr VEC, a power of two dividing
# GW, tells the compiler their alignment through _aligned, so they need no specialization either.)
_ROW_ARGS = ("M", "MI")


def run_time_divisibility(signature: dict) -> list[str]:
    """The arguments the run-time launch would mark divisible by 16: every pointer (PyTorch allocations are
    aligned) and the row counts."""
    return [k for k, v in signature.items() if v.startswith("*")] + [k for k in _ROW_ARGS if k in signature]


_LABEL = re.compile(r"^(\$L__BB\d+_\d+):")
_BRANCH = re.compile(r"\bbra(?:\.uni)?\s+(\$L__BB\d+_\d+);")
_LD_GLOBAL = re.compile(r"\bld\.global(?:\.[\w:]+)*?(?:\.v(\d))?\.[bfsu](\d+)\s.*\[\s*(%rd\d+)")
_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global\s*\[[^\]]*\],\s*\[\s*(%rd\d+)[^\]]*\],"
                       r"\s*(0x[0-9a-fA-F]+|\d+)")
_PARAM = re.compile(r"\bld\.param\.[bu]64\s+(%rd\d+),\s*\[\w+_param_(\d+)\]")
_DEF = re.compile(r"^\s*(?:@!?%p\d+\s+)?[a-z][\w.]*\s+(%\w+),(.*);")


def loop_global_loads(ptx: str, arg_names: list[str]) -> dict:
    """The global loads inside the PTX's innermost loops (a loop: a backward branch to an earlier label), i.e. the
    K loops' operand loads: {argument: {"ld.<bytes>" or "cp.async.<bytes>": count}}, bytes per instruction, keyed by the
    pointer argument the address derives from (traced back through the registers that define it to its
    ld.param). `arg_names`: the kernel's non-constexpr arguments, in order (the PTX numbers its params so)."""
    lines = ptx.splitlines()
    labels = {m.group(1): i for i, line in enumerate(lines) if (m := _LABEL.match(line))}
    loops = [(labels[m.group(1)], i) for i, line in enumerate(lines)
             if (m := _BRANCH.search(line)) and labels.get(m.group(1), i) < i]
    # innermost loops only: the steps that repeat (an outer loop over images issues its few loads once per image)
    loops = [(a, b) for a, b in loops if not any(a < c and d < b for c, d in loops if (c, d) != (a, b))]
    params, sources = {}, {}
    for line in lines:
        if m := _PARAM.search(line):
            params[m.group(1)] = arg_names[int(m.group(2))] if int(m.group(2)) < len(arg_names) else None
        elif m := _DEF.match(line):
            sources.setdefault(m.group(1), set()).update(re.findall(r"%rd\d+", m.group(2)))

    def pointer_args(reg: str) -> set:
        seen, todo, found = set(), [reg], set()
        while todo:
            r = todo.pop()
            if r in seen:
                continue
            seen.add(r)
            if r in params:
                found.add(params[r])
            todo.extend(sources.get(r, ()))
        return found

    out: dict = {}
    for i, line in enumerate(lines):
        if not any(start <= i <= end for start, end in loops):
            continue
        if m := _LD_GLOBAL.search(line):
            kind, reg = f"ld.{int(m.group(1) or 1) * int(m.group(2)) // 8}", m.group(3)
        elif m := _CP_ASYNC.search(line):
            kind, reg = f"cp.async.{int(m.group(2), 0)}", m.group(1)
        else:
            continue
        for arg in pointer_args(reg) or {"?"}:
            out.setdefault(arg, {})
            out[arg][kind] = out[arg].get(kind, 0) + 1
    return out


def compile_variant(kernel, signature: dict, constexprs: dict, arch: int, num_warps: int = 4,
                    divisible: list[str] | None = None) -> dict:
    """Compile one variant for sm_<arch>, with the `divisible` arguments specialized as multiples of 16 as Triton's
    launcher does at run time (default: run_time_divisibility); returns registers, spill bytes, stack frame and
    shared memory, and the bytes per global load instruction inside loops (loop_global_loads). Raises whatever the
    Triton compiler raises for code a real GPU would reject."""
    sig = {**signature, **{k: "constexpr" for k in constexprs}}
    divisible = run_time_divisibility(signature) if divisible is None else divisible
    attrs = {(kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in divisible}
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps})
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.NamedTemporaryFile("w", suffix=".ptx", delete=False) as f:
        f.write(compiled.asm["ptx"])
    try:
        gpu = f"sm_{arch}a" if arch >= 90 else f"sm_{arch}"
        r = subprocess.run([ptxas, "-v", f"--gpu-name={gpu}", f.name, "-o", os.devnull], capture_output=True,
                           text=True, check=True)
    finally:
        os.unlink(f.name)

    def grab(pattern: str) -> int:
        found = re.findall(pattern, r.stderr)
        return max(int(v) for v in found) if found else 0

    return {"kernel": variant_name(kernel, constexprs), "arch": arch, "divisible_by_16": divisible,
            "registers": grab(r"Used (\d+) registers"),
            "spill_store_bytes": grab(r"(\d+) bytes spill stores"),
            "spill_load_bytes": grab(r"(\d+) bytes spill loads"),
            "stack_frame_bytes": grab(r"(\d+) bytes stack frame"), "shared_bytes": compiled.metadata.shared,
            "loop_loads": loop_global_loads(compiled.asm["ptx"], [a for a in kernel.arg_names if a not in constexprs])}


# The operands whose tiles overlap from one K step to the next (the 3x3 taps' windows): L1 could serve their re-reads.
_GATHERED = {"_grouped_conv_fwd_kernel": ("X",), "_grouped_conv_bwd_data_kernel": ("GO", "S")}


def static_facts(rows: list[dict]) -> list[dict]:
    """What the cost model needs from compiled variants (fastregnet/data/kernel_facts.json, written by
    bench/aot_report.py from its report): per (kernel, dtype, arch, BLOCK_* tile, warps), the worst case over the
    variants sharing that tile (epilogue modes, strides): most registers, most shared memory, whether every load
    in its loops is an asynchronous copy (software-pipelined) and, for the kernels that gather overlapping windows
    (_GATHERED), whether a gathered operand is read by 16-byte cp.async copies, which Triton emits as cp.async.cg
    (L1-bypassing; it ignores a ".ca" cache modifier at 16 bytes); None for other kernels. Rows with errors are
    skipped."""
    merged: dict = {}
    for r in rows:
        if "error" in r:
            continue
        name, _, rest = r["kernel"].partition("[")
        constexprs = dict(kv.split("=", 1) for kv in rest.rstrip("]").split(",") if "=" in kv)
        blocks = {k: int(v) for k, v in sorted(constexprs.items()) if k.startswith("BLOCK_")}
        key = (name, r["dtype"], r["arch"], tuple(blocks.items()), r["num_warps"])
        kinds = [kind for arg in r.get("loop_loads", {}).values() for kind in arg]
        pipelined = bool(kinds) and all(kind.startswith("cp.async.") for kind in kinds) if kinds else None
        gathered = _GATHERED.get(name)
        fact = merged.setdefault(key, {"kernel": name, "dtype": r["dtype"], "arch": r["arch"], "blocks": blocks,
                                       "warps": r["num_warps"], "registers": 0, "shared_bytes": 0,
                                       "pipelined": pipelined, "l1_bypass": False if gathered else None})
        fact["registers"] = max(fact["registers"], r["registers"])
        fact["shared_bytes"] = max(fact["shared_bytes"], r["shared_bytes"])
        if pipelined is not None:
            fact["pipelined"] = pipelined if fact["pipelined"] is None else fact["pipelined"] and pipelined
        if gathered:
            fact["l1_bypass"] |= any("cp.async.16" in r.get("loop_loads", {}).get(arg, {}) for arg in gathered)
    return sorted(merged.values(), key=lambda f: (f["kernel"], f["dtype"], f["arch"], str(f["blocks"]), f["warps"]))


def zoo_variants(group_widths, candidates: bool = False, arch: int = 80) -> list[tuple]:
    """Every distinct (kernel, signature, constexprs, num_warps, group width or None) launched for these group widths
    in fp32 (TF32 and IEEE) / fp16 / bf16, stride 1 and 2. Variants depend on the tile (from the group width), dtype
    and stride, so many widths share one. candidates=True: every grouped-conv configuration of the tuning space
    (grouped_conv_candidates), of the 1x1 kernels (eval_candidates, train_candidates) and of the BatchNorm
    elementwise kernels (elementwise_candidates), not only the heuristic's picks, as launched on sm_`arch` (some eval
    1x1 configurations depend on it)."""
    import torch

    from .batch_norm import batch_norm_variants
    from .grouped_conv import grouped_conv_candidates, grouped_conv_tiles, kernel_variants
    from .pointwise_conv import pointwise_variants
    from .squeeze_excite import squeeze_excite_variants

    seen = {}
    tf32 = torch.backends.cudnn.allow_tf32
    # fp32 compiles both ways PyTorch's TF32 policy can pick (kernels._launch.dot_precision)
    for dtype, allow_tf32 in ((torch.float32, False), (torch.float32, True), (torch.float16, True),
                              (torch.bfloat16, True)):
        torch.backends.cudnn.allow_tf32 = allow_tf32
        for gw in group_widths:
            configs = grouped_conv_candidates(gw, dtype) if candidates else [grouped_conv_tiles(gw, dtype)]
            for stride, config in ((s, cfg) for s in (1, 2) for cfg in configs):
                for v in kernel_variants(gw, dtype, stride, config, arch):
                    key = variant_name(v[0], v[2]) + str(v[1]) + f"warps={v[3]}"
                    seen.setdefault(key, (*v, gw))
        for v in batch_norm_variants(dtype, candidates) + pointwise_variants(dtype, candidates, arch):
            seen.setdefault(variant_name(v[0], v[2]) + str(v[1]) + f"warps={v[3]}", (*v, None))
    torch.backends.cudnn.allow_tf32 = tf32
    for v in squeeze_excite_variants():
        seen.setdefault(variant_name(v[0], v[2]) + str(v[1]), (*v, None))
    return list(seen.values())


def compile_all(group_widths, archs=(80, 90), fp32_archs=(80, 90), candidates: bool = False,
                kernels: tuple[str, ...] | None = None) -> list[dict]:
    """compile_variant for every zoo variant and arch (fp32 variants only on `fp32_archs`; candidates=True: the
    whole grouped-conv tuning space; `kernels`: only the kernels of those function names); a variant that fails
    to compile gets an "error" entry."""
    rows = []
    for arch in archs:
        for kernel, sig, ce, warps, gw in zoo_variants(group_widths, candidates, arch):
            if kernels is not None and kernel.fn.__name__ not in kernels:
                continue
            dtype = next(iter(sig.values()))
            if dtype == "*fp32" and _has_storage_variants(kernel) and arch not in fp32_archs:
                continue
            base = {"kernel": variant_name(kernel, ce), "arch": arch, "dtype": dtype, "num_warps": warps}
            try:
                rows.append(base | compile_variant(kernel, sig, ce, arch, num_warps=warps))
            except Exception as e:  # reported per variant, so one bad variant doesn't hide the others
                rows.append(base | {"error": f"{type(e).__name__}: {e}"[:2000]})
    return rows


def _has_storage_variants(kernel) -> bool:
    """Whether the kernel comes in fp32 / fp16 / bf16 storage variants (the SE excitation and the statistics merge
    are fp32 whatever the activations' dtype, so they are compiled on every arch)."""
    return kernel.fn.__name__ not in ("_se_pool_kernel", "_se_hidden_kernel", "_se_gate_kernel",
                                      "_bn_stats_finalize_kernel")


if __name__ == "__main__":
    # python -m fastregnet.kernels.aot ARCHS GWS [FP32_ARCHS] -> JSON rows on stdout, e.g. 80,90 8,16,24 90.
    # Must run without TRITON_INTERPRET.
    import json
    import sys

    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled for a GPU")
    archs = tuple(int(a) for a in sys.argv[1].split(","))
    fp32_archs = tuple(int(a) for a in sys.argv[3].split(",")) if len(sys.argv) > 3 else archs
    print(json.dumps(compile_all([int(g) for g in sys.argv[2].split(",")], archs=archs, fp32_archs=fp32_archs)))

