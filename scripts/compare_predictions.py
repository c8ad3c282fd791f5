#!/usr/bin/env python3
"""Compares `derm-train evaluate` runs of one model in several precisions on the same images.

    scripts/compare_predictions.py REF_DIR OTHER_DIR... [--json OUT]

Each DIR holds `evaluation.json` and `predictions.csv` from `derm-train evaluate`. Prints, for
every run: top-1 agreement with REF, accuracy, balanced accuracy, fairness, per-group accuracy
and the differences to REF in points; `--json` writes the same table as JSON.
"""
import csv
import json
import sys
from pathlib import Path


def load(d):
    d = Path(d)
    ev = json.loads((d / "evaluation.json").read_text())
    ev = ev.get("result", ev)
    rows = list(csv.DictReader((d / "predictions.csv").open()))
    return ev, {r["id"]: r["pred"] for r in rows}


def metrics(ev):
    m = ev.get("evaluation", ev)
    groups = {g["name"]: g["accuracy"] for g in m["groups"] if not g.get("excluded")}
    return {
        "accuracy": m["accuracy"],
        "balanced_accuracy": m["balanced_accuracy"],
        "fairness": m["fairness"],
        "groups": groups,
    }


def main(argv):
    out = None
    if "--json" in argv:
        i = argv.index("--json")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2 :]
    if len(argv) < 2:
        sys.exit(__doc__)
    ref_ev, ref_pred = load(argv[0])
    ref = metrics(ref_ev)
    rows = []
    for d in argv:
        ev, pred = load(d)
        m = metrics(ev)
        same = sum(pred.get(k) == v for k, v in ref_pred.items())
        m["run"] = d
        m["agreement"] = same / len(ref_pred)
        m["delta_points"] = {
            "accuracy": 100 * (m["accuracy"] - ref["accuracy"]),
            "balanced_accuracy": 100 * (m["balanced_accuracy"] - ref["balanced_accuracy"]),
            "groups": {g: 100 * (a - ref["groups"][g]) for g, a in m["groups"].items()},
        }
        rows.append(m)
    groups = list(ref["groups"])
    print("| run | agreement | accuracy | balanced | fairness | " + " | ".join(groups) + " |")
    print("|---" * (5 + len(groups)) + "|")
    for m in rows:
        d = m["delta_points"]
        cells = [
            m["run"],
            f"{m['agreement']:.4f}",
            f"{m['accuracy']:.4f} ({d['accuracy']:+.2f})",
            f"{m['balanced_accuracy']:.4f} ({d['balanced_accuracy']:+.2f})",
            f"{m['fairness']:.4f}",
        ] + [f"{m['groups'][g]:.4f} ({d['groups'][g]:+.2f})" for g in groups]
        print("| " + " | ".join(cells) + " |")
    if out:
        Path(out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
