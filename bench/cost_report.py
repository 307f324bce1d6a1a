"""The cost model's summary for the issue's four models at batch 256, bf16, H100 (MODELLED, no GPU), with launches
replayed from a CUDA graph and eager (each launch also waiting for the host time per launch that
bench/host_overhead.py measured): writes bench/results/cost-model-b256-bf16-h100.json and prints the README's table.

    python bench/cost_report.py [OUT.json] [--readme]

--readme rewrites the table between the cost-table markers in README.md."""

import collections
import json
import sys

from fastregnet.cost import host_s_per_launch, model_launches, summarize

MODELS = ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf", "regnet_x_400mf")
SETTINGS = {"batch": 256, "dtype": "bf16", "gpu": "H100", "resolution": 224,
            "figures": "MODELLED by fastregnet/cost.py (no GPU)"}
BEGIN, END = "<!-- cost-table:begin -->", "<!-- cost-table:end -->"


def _by_kernel(launches) -> dict:
    out = collections.defaultdict(lambda: {"launches": 0, "predicted_s": 0.0, "floor_s": 0.0, "max_serial_steps": 0})
    for x in launches:
        k = out[x.kernel]
        k["launches"] += 1
        k["predicted_s"] += x.predicted_s
        k["floor_s"] += x.floor_s
        k["max_serial_steps"] = max(k["max_serial_steps"], x.serial_steps)
    return dict(out)


def report() -> dict:
    models = {}
    for name in MODELS:
        models[name] = {}
        for mode in ("infer", "train"):
            launches = model_launches(name, SETTINGS["batch"], SETTINGS["dtype"], mode, SETTINGS["gpu"])
            eager = model_launches(name, SETTINGS["batch"], SETTINGS["dtype"], mode, SETTINGS["gpu"], launch="eager")
            worst = sorted(launches, key=lambda x: x.predicted_s / x.floor_s if x.floor_s else 0, reverse=True)[:5]
            models[name][mode] = {"summary": summarize(launches), "eager_summary": summarize(eager),
                                  "by_kernel": _by_kernel(launches),
                                  "worst_launches_by_predicted_over_floor": [x.to_json() for x in worst]}
    return {"settings": SETTINGS, "host": host_s_per_launch(), "models": models}


def table(data: dict) -> str:
    rows = ["| model | infer: graph / floor | infer: eager | train: graph / floor | train: eager | useful MMA (infer) "
            "| latency-bound launches (infer / train) | longest serial chain (infer / train) |",
            "|---|---|---|---|---|---|---|---|"]
    for name, modes in data["models"].items():
        i, t = modes["infer"]["summary"], modes["train"]["summary"]
        ie, te = modes["infer"]["eager_summary"], modes["train"]["eager_summary"]
        infer = f"{i['predicted_s'] * 1e3:.2f} ms / {i['floor_s'] * 1e3:.2f} ms ({i['predicted_over_floor']:.2f}x)"
        train = f"{t['predicted_s'] * 1e3:.1f} ms / {t['floor_s'] * 1e3:.1f} ms ({t['predicted_over_floor']:.2f}x)"
        rows.append(f"| {name} | {infer} | {ie['predicted_s'] * 1e3:.2f} ms | {train} | "
                    f"{te['predicted_s'] * 1e3:.1f} ms | {i['useful_mma_fraction']:.2f} | "
                    f"{i['latency_bound_launches']} / {t['latency_bound_launches']} | "
                    f"{i['max_serial_steps']} / {t['max_serial_steps']} |")
    host = data["host"]
    rows.append(f"\nEager: each Triton launch also waits for the host's {host['s_per_launch']['infer'] * 1e6:.0f} us "
                f"(inference) / {host['s_per_launch']['train'] * 1e6:.0f} us (training) per launch that "
                f"bench/host_overhead.py measured on {host['machine']} ({host['date'][:10]}), a CPU, not the GPU "
                f"machine's; `python bench/cost_report.py --readme` regenerates this table.")
    return "\n".join(rows)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--readme"]
    data = report()
    path = args[0] if args else "bench/results/cost-model-b256-bf16-h100.json"
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(table(data))
    if "--readme" in sys.argv[1:]:
        from fastregnet.readme_tables import replace_between

        replace_between("README.md", BEGIN, END, table(data))
