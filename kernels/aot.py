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


def compile_variant(kernel, signature: dict, constexprs: dict, arch: int, num_warps: int = 4) -> dict:
    """Compile one variant for sm_<arch>; returns registers, spill bytes, stack frame and shared memory.

    Raises whatever the Triton compiler raises for code a real GPU would reject."""
    sig = {**signature, **{k: "constexpr" for k in constexprs}}
    compiled = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=constexprs),
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

    return {"kernel": variant_name(kernel, constexprs), "arch": arch, "registers": grab(r"Used (\d+) registers"),
            "spill_store_bytes": grab(r"(\d+) bytes spill stores"), "spill_load_bytes": grab(r"(\d+) bytes spill loads"),
            "stack_frame_bytes": grab(r"(\d+) bytes stack frame"), "shared_bytes": compiled.metadata.shared}


def zoo_variants(group_widths) -> list[tuple]:
    """Every distinct (kernel, signature, constexprs, num_warps) launched for these group widths in fp32/fp16/bf16, stride 1
    and 2. Variants depend on the tile (from the group width), dtype and stride, so many widths share one."""
    import torch

    from .batch_norm import batch_norm_variants
    from .grouped_conv import kernel_variants
    from .pointwise_conv import pointwise_variants
    from .squeeze_excite import squeeze_excite_variants

    seen = {}
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for gw in group_widths:
            for stride in (1, 2):
                for v in kernel_variants(gw, dtype, stride):
                    seen.setdefault(variant_name(v[0], v[2]) + str(v[1]), v)
        for v in batch_norm_variants(dtype) + pointwise_variants(dtype):
            seen.setdefault(variant_name(v[0], v[2]) + str(v[1]), v)
    for v in squeeze_excite_variants():
        seen.setdefault(variant_name(v[0], v[2]) + str(v[1]), v)
    return list(seen.values())


def compile_all(group_widths, archs=(80, 90)) -> list[dict]:
    """compile_variant for every zoo variant and arch; a variant that fails to compile gets an "error" entry."""
    rows = []
    for arch in archs:
        for kernel, sig, ce, warps in zoo_variants(group_widths):
            base = {"kernel": variant_name(kernel, ce), "arch": arch, "dtype": next(iter(sig.values())),
                    "num_warps": warps}
            try:
                rows.append(base | compile_variant(kernel, sig, ce, arch, num_warps=warps))
            except Exception as e:  # reported per variant, so one bad variant doesn't hide the others
                rows.append(base | {"error": f"{type(e).__name__}: {e}"[:2000]})
    return rows


if __name__ == "__main__":
    # python -m fastregnet.kernels.aot ARCH GW[,GW...]  -> JSON rows on stdout. Must run without TRITON_INTERPRET.
    import json
    import sys

    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: interpreted kernels cannot be compiled for a GPU")
    print(json.dumps(compile_all([int(g) for g in sys.argv[2].split(",")], archs=(int(sys.argv[1]),))))
