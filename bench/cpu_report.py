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
import random
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


def case_ratios(by_key: dict, model: str, batch: int, mode: str, ours: str = "fastregnet",
                theirs: tuple[str, ...] = ("tv_nchw", "tv_channels_last")) -> tuple[float, float, tuple[float, float]] | None:
    """Provider `ours` against the faster of `theirs` (by default fastregnet against torchvision in its faster
    layout) for one case: the ratio of the median speeds (against the one with the faster median), the median over
    rounds of their step time / ours in the same round (against the one for which that is smaller), and that
    median's bootstrap interval; None if either did not run. Interleaving puts both steps of a round in the same
    phase of a noisy machine, so the paired ratio is the steadier."""
    ours = by_key.get((model, batch, mode, ours), {})
    theirs = [by_key.get((model, batch, mode, p), {}) for p in theirs]
    theirs = [t for t in theirs if "img_per_s" in t]
    if "img_per_s" not in ours or not theirs:
        return None
    of_medians = ours["img_per_s"] / max(t["img_per_s"] for t in theirs)
    per_round = min(([t / o for t, o in zip(layout["times_s"], ours["times_s"])] for layout in theirs),
                    key=statistics.median)
    return of_medians, statistics.median(per_round), bootstrap_interval(per_round)


def bootstrap_interval(ratios: list[float], level: float = 0.95, draws: int = 2000) -> tuple[float, float]:
    """The percentile bootstrap interval of the median of per-round ratios (rounds resampled with replacement; a
    fixed seed, so a report renders the same every time). It covers the round-to-round noise of this one run, not
    what differs between processes (which moved these ratios by +-5% on the 2-core development machine)."""
    rng = random.Random(0)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(draws))
    return medians[int((1 - level) / 2 * draws)], medians[int((1 + level) / 2 * draws) - 1]


def _verdict(interval: tuple[float, float]) -> str:
    if interval[0] > 1.0:
        return "faster"
    if interval[1] < 1.0:
        return "slower"
    return "within noise"


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
    skipped = sorted({r["skipped"] for r in results if "skipped" in r and "inference runtime" not in r["skipped"]})
    names = {"infer": "eval", "train": "training"}
    comparisons = (("fastregnet / torchvision in its faster layout (NCHW or channels_last)", "fastregnet",
                    ("tv_nchw", "tv_channels_last")),
                   ("torch.compile(fastregnet) / torch.compile(torchvision), both channels_last", "fastregnet_compile",
                    ("tv_compile",)))
    summary = []
    for title, ours, theirs in comparisons:
        cases = {(model, batch, mode): case_ratios(by_key, model, batch, mode, ours, theirs)
                 for mode in settings["modes"] for model in settings["models"] for batch in settings["batches"]}
        modes = [m for m in settings["modes"] if any(cases[k] for k in cases if k[2] == m)]
        if not modes:
            continue
        lines += [f"{title}:", "",
                  "| model | batch | " + " | ".join(f"{names[m]}: medians | {names[m]}: paired [95%] | {names[m]}"
                                                     for m in modes) + " |",
                  "|---|---|" + "---|---|---|" * len(modes)]
        for model in settings["models"]:
            for batch in settings["batches"]:
                cells = []
                for mode in modes:
                    r = cases[(model, batch, mode)]
                    cells += (["not run"] * 3 if r is None else
                              [f"{r[0]:.3f}", f"{r[1]:.3f} [{r[2][0]:.3f}, {r[2][1]:.3f}]", _verdict(r[2])])
                lines.append(f"| {model} | {batch} | " + " | ".join(cells) + " |")
        lines.append("")
        counts = []
        for mode in modes:
            r = [cases[k] for k in cases if k[2] == mode and cases[k] is not None]
            verdicts = [_verdict(ci) for _, _, ci in r]
            counts.append(f"{names[mode]} {sum(m >= 1.0 for m, _, _ in r)} of {len(r)} cases >= 1.0x by the "
                          f"medians, {sum(p >= 1.0 for _, p, _ in r)} by the paired ratio ("
                          + ", ".join(f"{verdicts.count(v)} {v}" for v in ("faster", "within noise", "slower"))
                          + ")")
        summary.append(f"{ours}: " + "; ".join(counts))
    if summary:
        lines.append("Ratios: the ratio of the two medians; the median over rounds of the two steps' ratio within one "
                     "round (which cancels the machine's slow and fast phases) with its 95% bootstrap interval over "
                     "rounds; and what that interval resolves (it covers this run's rounds, not what differs between "
                     "processes: +-5% on the development machine). " + ". ".join(summary) + ". In training "
                     "fastregnet and torchvision run the same oneDNN ops (fastregnet calls them without nn.Module's "
                     "dispatch, bit-identical); in eval fastregnet also runs SE's fcs and the 1x1 convs on small maps "
                     "as GEMMs and folds BN into the convs with large outputs.")
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
