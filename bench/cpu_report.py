"""The README's CPU tables, from one interleaved `fastregnet bench` run on this machine's CPU: torchvision (NCHW and
channels_last), fastregnet, fastregnet's former CPU path (BN folded per call), torch.compile of both, and the CPU
runtimes (ONNX Runtime, OpenVINO) where installed, for the models, batches and modes below, all in one process.

    python bench/cpu_report.py [--out bench/results/cpu-report.json] [--repeats 15] [--readme]
    python bench/cpu_report.py --from bench/results/cpu-report.json --readme     # re-render only

--readme rewrites the text between the cpu-table markers in README.md from the results (tables and the verdict
lines), so the README cannot show figures that no run produced.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

import fastregnet
from fastregnet import bench

MODELS = ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_x_400mf")
BATCHES = (8, 1)
MODES = ("infer", "train")
BEGIN, END = "<!-- cpu-table:begin -->", "<!-- cpu-table:end -->"
COLUMNS = {"tv_nchw": "tv NCHW", "tv_channels_last": "tv channels_last", "fastregnet": "fastregnet",
           "fastregnet_fold": "fastregnet reference", "tv_compile": "compile(tv)",
           "fastregnet_compile": "compile(fastregnet)", "onnxruntime": "ONNX Runtime", "openvino": "OpenVINO"}


class _UnderBackend(torch.nn.Module):
    """A model run under a fixed fastregnet backend (the benchmark's providers take a plain module)."""

    def __init__(self, model: torch.nn.Module, backend: str):
        super().__init__()
        self.model, self.backend = model, backend

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with fastregnet.use_backend(self.backend):
            return self.model(x)


def _fastregnet_fold(model_name, state_dict, device, compile_mode):
    """fastregnet's reference ops (the "torch" backend), the CPU path before the parts called their modules: every
    eval BatchNorm folded into its conv per call; in training the same batch-statistics ops as the modules."""
    model, fmt = bench.PROVIDERS["fastregnet"](model_name, state_dict, device, compile_mode)
    return _UnderBackend(model, "torch"), fmt


def _cell(record: dict | None) -> str:
    if record is None:
        return "not run"
    if "skipped" in record:
        return "-"
    if "error" in record:
        return "error"
    return f"{record['img_per_s']:.1f}" + (" WRONG" if record["wrong"] else "")


def case_ratios(by_key: dict, model: str, batch: int, mode: str) -> tuple[float, float] | None:
    """fastregnet against torchvision in its faster layout for one case, two ways: the ratio of the median speeds,
    and the median over rounds of torchvision's step time / fastregnet's in the same round (each against the layout
    that is faster by that measure), or None if either did not run. Interleaving puts both steps of a round in the
    same phase of a noisy machine, so the paired ratio is the steadier."""
    ours = by_key.get((model, batch, mode, "fastregnet"), {})
    theirs = [by_key.get((model, batch, mode, p), {}) for p in ("tv_nchw", "tv_channels_last")]
    theirs = [t for t in theirs if "img_per_s" in t]
    if "img_per_s" not in ours or not theirs:
        return None
    of_medians = ours["img_per_s"] / max(t["img_per_s"] for t in theirs)
    paired = min(statistics.median(t / o for t, o in zip(layout["times_s"], ours["times_s"])) for layout in theirs)
    return of_medians, paired


def readme_section(doc: dict) -> str:
    """Markdown: the machine, one table per mode (img/s, medians), and the ratios the CPU claims rest on."""
    results = doc["results"]
    by_key = {(r["model"], r["batch"], r["mode"], r["provider"]): r for r in results}
    env, settings = doc["env"], doc["settings"]
    providers = [p for p in COLUMNS if p in settings["providers"]]
    cpu = env.get("cpu_model") or env.get("cpu")
    lines = [f"Measured by `python bench/cpu_report.py --readme` ({settings['date']}): {cpu} ({env.get('cpu')}), "
             f"{env['cpu_threads']} threads, torch {env['torch']}; fp32, {settings['resolution']} x "
             f"{settings['resolution']}, img/s (median of "
             f"{settings['repeats']} rounds after {settings['warmup']} shared warm-up rounds; providers interleaved "
             f"round by round, the order shuffled each round). `{os.path.basename(doc.get('path', 'cpu-report.json'))}`"
             f" in `bench/results/` has every sample and the spread.", ""]
    for mode in settings["modes"]:
        title = "Inference (eval, inference_mode)" if mode == "infer" else "Training step (forward, backward, SGD)"
        lines += [f"{title}:",
                  "", "| model | batch | " + " | ".join(COLUMNS[p] for p in providers) + " |",
                  "|---|---|" + "---|" * len(providers)]
        for model in settings["models"]:
            for batch in settings["batches"]:
                cells = [_cell(by_key.get((model, batch, mode, p))) for p in providers]
                lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
        lines.append("")
    ratios = {mode: [] for mode in settings["modes"]}
    for mode in settings["modes"]:
        for model in settings["models"]:
            for batch in settings["batches"]:
                ratio = case_ratios(by_key, model, batch, mode)
                if ratio is not None:
                    ratios[mode].append(ratio)
    skipped = sorted({r["skipped"] for r in results if "skipped" in r and "inference runtime" not in r["skipped"]})
    summary = []
    for mode, r in ratios.items():
        if not r:
            continue
        medians, paired = [m for m, _ in r], [p for _, p in r]
        summary.append(f"{'eval' if mode == 'infer' else 'training'}: median {statistics.median(medians):.3f}x, "
                       f"range {min(medians):.3f}-{max(medians):.3f}x, {sum(x >= 1.0 for x in medians)} of "
                       f"{len(medians)} cases >= 1.0x (per-round paired ratios: range {min(paired):.3f}-"
                       f"{max(paired):.3f}x, {sum(x >= 1.0 for x in paired)} of {len(paired)} cases >= 1.0x)")
    if summary:
        lines.append("fastregnet / torchvision in its faster layout (NCHW or channels_last; the ratio of the two "
                     "medians, and the median over rounds of the two steps' ratio within one round, which cancels "
                     "the machine's slow and fast phases), " + "; ".join(summary)
                     + ". In training both run the same oneDNN ops (fastregnet calls them without nn.Module's "
                       "dispatch, bit-identical); in eval fastregnet also runs SE's fcs and the 1x1 convs on small "
                       "maps as GEMMs and folds BN into the convs with large outputs.")
    if skipped:
        lines.append("Skipped: " + "; ".join(skipped) + ".")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=os.path.join("bench", "results", "cpu-report.json"))
    p.add_argument("--from", dest="source", default=None, help="render an existing report instead of running")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--readme", action="store_true", help="rewrite README.md's CPU tables from the results")
    args = p.parse_args()
    if args.source:
        with open(args.source) as f:
            doc = json.load(f)
        doc["path"] = args.source
    else:
        providers = list(bench.CPU_DEFAULT)
        providers.insert(providers.index("fastregnet") + 1, "fastregnet_fold")
        doc = bench.run(models=args.models, batches=list(BATCHES), dtype="fp32", modes=list(MODES),
                        providers=providers, extra_providers={"fastregnet_fold": _fastregnet_fold},
                        resolution=224, device=torch.device("cpu"),
                        warmup=args.warmup, repeats=args.repeats,
                        log=lambda s: print(s, file=sys.stderr, flush=True))
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(doc, f, indent=1)
        doc["path"] = args.out
        print(bench.format_table(doc))
    section = readme_section(doc)
    print(section)
    if args.readme:
        from fastregnet.readme_tables import replace_between

        replace_between("README.md", BEGIN, END, section)


if __name__ == "__main__":
    main()
