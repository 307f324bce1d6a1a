"""`fastregnet campaign-apply DIR`: turns a GPU campaign's output into the project's files, so the few minutes a GPU
is lent are not spent hand-editing them.

From DIR/campaign.json (and DIR/tuned_configs.json) it writes:
1. kernels/tuned_configs.json: the tune part's fastest configurations, under the GPU's name and under its
   architecture ("sm_90"), which serves other GPUs of that architecture that have no entry of their own (an H200's
   tuning for an H100);
2. fastregnet/data/cost_constants.json: for the cost model's GPU of that name, the measured copy bandwidth and the
   L2 bandwidth, step and launch terms fitted from the microbench records (fastregnet.calibration), with the fit's
   error and which constants the records could pin down;
3. README.md: the GPU table between the `gpu-table` markers (the whole-model benches and the correctness tally);
4. bench/results/gpu-campaign-<gpu>-<date>.json (and the tuned table beside it): the raw campaign, committed.

A dry run's output (CPU, interpreter, tiny shapes) is refused unless --allow-dry-run is given (the tests use it on a
copy of the files): its figures are not GPU figures.
"""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil

from . import calibration, cost
from .campaign import load_doc, measured_rates, save_doc
from .readme_tables import replace_between

BEGIN, END = "<!-- gpu-table:begin -->", "<!-- gpu-table:end -->"


def project_root() -> str:
    """The source checkout this package lives in (campaign-apply edits the project's files, not an install)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _records(doc: dict, part: str) -> list[dict]:
    return doc.get("parts", {}).get(part, {}).get("records", [])


def _env(doc: dict) -> dict:
    return next((r for r in _records(doc, "env") if r.get("case") == "environment"), {})


def _cell(text) -> str:
    """A README table cell: one line, no column separators."""
    return " ".join(str(text).split()).replace("|", "/")


def apply_tuned(doc: dict, tuned: dict, table_path: str) -> dict:
    """Merge the campaign's tuned configurations into the shipped table; returns {section: entries added}."""
    with open(table_path) as f:
        table = json.load(f)
    from .kernels.tuning import arch_name

    env = _env(doc)
    arch = arch_name(tuple(int(v) for v in env["capability"].split("."))) if env.get("capability") else None
    added = {}
    for gpu, entries in tuned.get("gpus", {}).items():
        for section in (gpu, arch) if arch else (gpu,):
            table["gpus"].setdefault(section, {}).update(entries)
            added[section] = len(entries)
    save_doc(table_path, table)
    return added


def microbench_cases(doc: dict) -> tuple[list, list]:
    """(per-case launch terms, measured fastregnet seconds) of the microbench records that carry both."""
    terms, measured = [], []
    for r in _records(doc, "microbench"):
        if r.get("status") == "ok" and r.get("fastregnet_s") and r.get("cost_model", {}).get("launch_terms"):
            terms.append(r["cost_model"]["launch_terms"])
            measured.append(r["fastregnet_s"])
    return terms, measured


def apply_constants(doc: dict, constants_path: str) -> dict | None:
    """Fit the cost model's constants for this campaign's GPU and write them; None if there is nothing to fit."""
    terms, measured = microbench_cases(doc)
    rates = measured_rates(doc)
    if not terms or not rates:
        return None
    env = _env(doc)
    gpu_name = env.get("gpu") or "cpu (dry run)"
    with open(constants_path) as f:
        constants = json.load(f)
    key = cost.gpu_key(gpu_name)
    if key is None:  # a GPU the model has no entry for: one of its own, H100's rates until measured
        key = re.sub(r"[^A-Za-z0-9]+", "-", gpu_name).strip("-")
        capability = env.get("capability", "9.0").split(".")
        constants["gpus"][key] = {**constants["gpus"]["H100"], "arch": 10 * int(capability[0]) + int(capability[1]),
                                  "mma_flops_per_s": dict(constants["gpus"]["H100"]["mma_flops_per_s"])}
    entry = constants["gpus"][key]
    # the device's own SM count, register file, shared memory, thread limit and L2 size, as PyTorch reported them
    # (a new GPU would otherwise inherit H100's)
    entry.update({k: v for k, v in env.get("sm_limits", {}).items() if k in entry})
    dram = rates["copy_bandwidth_bytes_per_s"]
    result = calibration.fit(terms, measured, dram, {k: entry[k] for k in calibration.NAMES})
    entry.update(result["constants"], dram_bytes_per_s=dram)
    for dtype in ("bf16", "fp16"):  # the measured matmul rates replace the assumed MMA rates
        rec = next((r for r in _records(doc, "env") if r.get("case") == f"device rates {dtype}"
                    and r.get("status") == "ok"), None)
        if rec and not doc["campaign"].get("dry_run"):
            entry["mma_flops_per_s"][dtype] = rec["matmul_flops_per_s"]
    fitted = [k for k, ok in result["identifiable"].items() if ok]
    kept = [k for k, ok in result["identifiable"].items() if not ok]
    entry["source"] = (f"fitted by campaign-apply from the campaign of {doc['campaign'].get('date')} on {gpu_name} "
                       f"({result['cases']} microbench cases): dram_bytes_per_s and the bf16/fp16 MMA rates measured "
                       f"(copy, torch matmul); fitted: "
                       f"{', '.join(fitted) or 'none'}; kept (the records could not pin them down): "
                       f"{', '.join(kept) or 'none'}; predicted/measured median "
                       f"{result['predicted_over_measured']['median']:.2f} (range "
                       f"{result['predicted_over_measured']['min']:.2f}-{result['predicted_over_measured']['max']:.2f})"
                       + ("; DRY RUN: CPU interpreter times, not GPU figures" if doc["campaign"].get("dry_run")
                          else ""))
    save_doc(constants_path, constants)
    return {"gpu": key, **result}


def gpu_table(doc: dict) -> str:
    """The README's GPU table: every whole-model bench record, with the correctness tally and the device."""
    env = _env(doc)
    rows = [r for part in ("models", "compile") for r in _records(doc, part) if "provider" in r]
    cut = [r["case"] for part in ("models", "compile") for r in _records(doc, part)
           if "provider" not in r and r.get("status") in ("cut", "error")]
    base = {(r["model"], r["batch"], r["mode"]): r["img_per_s"] for r in rows
            if r["provider"] == "tv_channels_last" and "img_per_s" in r}
    lines = ["| model | batch | mode | provider | img/s (spread) | peak GB | vs tv channels_last |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['model']} | {r['batch']} | {r['mode']} | {r['provider']} |"
        if "img_per_s" not in r:
            lines.append(f"{head} {_cell(r.get('error', 'not run'))[:100]} | | |")
            continue
        b = base.get((r["model"], r["batch"], r["mode"]))
        ratio = f"{r['img_per_s'] / b:.2f}x" if b else "-"
        mem = f"{r['peak_memory_bytes'] / 2**30:.1f}" if r.get("peak_memory_bytes") else "-"
        wrong = " WRONG" if r.get("wrong") else ""
        lines.append(f"{head} {r['img_per_s']:.0f} ({r['spread_img_per_s'][0]:.0f}-{r['spread_img_per_s'][1]:.0f})"
                     f"{wrong} | {mem} | {ratio} |")
    tally: dict[str, int] = {}
    for r in _records(doc, "correctness"):
        tally[r.get("status", "?")] = tally.get(r.get("status", "?"), 0) + 1
    where = env.get("gpu") or "CPU (dry run: interpreter, tiny shapes; NOT GPU figures)"
    lines += ["", f"Measured on {where}, torch {env.get('torch')}, triton {env.get('triton')}, "
                  f"{doc['campaign'].get('date')}; bf16 autocast, channels_last, CUDA-event medians of interleaved "
                  f"rounds. Correctness part: {', '.join(f'{n} {s}' for s, n in sorted(tally.items())) or 'not run'}."]
    if cut:
        lines.append(f"Not measured (time box or error): {_cell('; '.join(cut))}.")
    return "\n".join(lines)


def apply_readme(doc: dict, readme_path: str) -> None:
    replace_between(readme_path, BEGIN, END, gpu_table(doc))


def apply(campaign_dir: str, root: str | None = None, allow_dry_run: bool = False) -> dict:
    """Write the four kinds of output into the project at `root`; returns what was written."""
    root = root or project_root()
    doc = load_doc(os.path.join(campaign_dir, "campaign.json"))
    if doc.get("campaign", {}).get("dry_run") and not allow_dry_run:
        raise ValueError(f"{campaign_dir} holds a dry run (CPU interpreter figures); pass --allow-dry-run to apply "
                         "it anyway (tests only)")
    readme = os.path.join(root, "README.md")
    with open(readme) as f:
        if BEGIN not in f.read():  # checked before anything is written
            raise ValueError(f"{readme}: no {BEGIN} ... {END} markers for the GPU table")
    tuned_path = os.path.join(campaign_dir, "tuned_configs.json")
    tuned = load_doc(tuned_path) if os.path.exists(tuned_path) else {"gpus": {}}
    written = {"tuned_configs": apply_tuned(doc, tuned, os.path.join(root, "kernels", "tuned_configs.json")),
               "cost_constants": apply_constants(doc, os.path.join(root, "fastregnet", "data",
                                                                   "cost_constants.json"))}
    apply_readme(doc, readme)
    written["readme"] = "GPU table"
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", _env(doc).get("gpu") or "dry-run").strip("-").lower()
    date = (doc["campaign"].get("date") or datetime.date.today().isoformat())[:10]
    results = os.path.join(root, "bench", "results")
    os.makedirs(results, exist_ok=True)
    stem = os.path.join(results, f"gpu-campaign-{gpu}-{date}")
    shutil.copyfile(os.path.join(campaign_dir, "campaign.json"), stem + ".json")
    if os.path.exists(tuned_path):
        shutil.copyfile(tuned_path, stem + "-tuned.json")
    written["results"] = stem + ".json"
    return written


def add_parser(sub) -> None:
    p = sub.add_parser("campaign-apply", help="write a GPU campaign's results into the project: tuned configs, "
                                              "fitted cost-model constants, the README's GPU table, bench/results")
    p.add_argument("dir", help="the campaign's output directory (holds campaign.json)")
    p.add_argument("--root", default=None, help="the project checkout to write into (default: this one)")
    p.add_argument("--allow-dry-run", action="store_true", help="apply a dry run's output too (tests)")
    p.set_defaults(func=_cmd_apply)


def _cmd_apply(args) -> int:
    written = apply(args.dir, args.root, args.allow_dry_run)
    for what, value in written.items():
        print(f"{what}: {json.dumps(value, default=str)[:300]}")
    return 0
