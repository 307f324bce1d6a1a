"""The cost model's summary for the issue's four models at batch 256, bf16, H100 (MODELLED, no GPU): writes
bench/results/cost-model-b256-bf16-h100.json and prints the README's table. Run: python bench/cost_report.py [OUT]"""

import collections
import json
import sys

from fastregnet.cost import model_launches, summarize

MODELS = ("regnet_y_400mf", "regnet_y_1_6gf", "regnet_y_16gf", "regnet_x_400mf")
SETTINGS = {"batch": 256, "dtype": "bf16", "gpu": "H100", "resolution": 224,
            "figures": "MODELLED by fastregnet/cost.py (no GPU)"}


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
            worst = sorted(launches, key=lambda x: x.predicted_s / x.floor_s if x.floor_s else 0, reverse=True)[:5]
            models[name][mode] = {"summary": summarize(launches), "by_kernel": _by_kernel(launches),
                                  "worst_launches_by_predicted_over_floor": [x.to_json() for x in worst]}
    return {"settings": SETTINGS, "models": models}


def table(data: dict) -> str:
    rows = ["| model | infer predicted / floor | train predicted / floor | useful MMA (infer) | longest serial chain "
            "(infer / train) |", "|---|---|---|---|---|"]
    for name, modes in data["models"].items():
        i, t = modes["infer"]["summary"], modes["train"]["summary"]
        infer = f"{i['predicted_s'] * 1e3:.2f} ms / {i['floor_s'] * 1e3:.2f} ms ({i['predicted_over_floor']:.2f}x)"
        train = f"{t['predicted_s'] * 1e3:.1f} ms / {t['floor_s'] * 1e3:.1f} ms ({t['predicted_over_floor']:.2f}x)"
        rows.append(f"| {name} | {infer} | {train} | {i['useful_mma_fraction']:.2f} | "
                    f"{i['max_serial_steps']} / {t['max_serial_steps']} |")
    return "\n".join(rows)


if __name__ == "__main__":
    data = report()
    path = sys.argv[1] if len(sys.argv) > 1 else "bench/results/cost-model-b256-bf16-h100.json"
    with open(path, "w") as f:
        json.dump(data, f, indent=1)
    print(table(data))
