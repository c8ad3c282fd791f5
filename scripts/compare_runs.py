#!/usr/bin/env python3
"""Compares training runs fold by fold: the last epoch's held-out scores of each variant.

Usage:
  scripts/compare_runs.py --variant NAME=PATTERN [--variant NAME=PATTERN ...] --folds 0,1,2 \
      [--json OUT]

PATTERN is the path of a run's `report.json` (the one `derm-train student`/`distill` writes
into its `--out` folder) with `{fold}` where the fold number goes, e.g.
`target/runs/centre-f{fold}/report.json`. The first variant is the reference: every other
one gets its differences to it in points (accuracy, balanced accuracy, fairness, each age
group), per fold and as mean +/- sd over the folds both have. The majority-class accuracy
of each fold's validation images sits beside them. Prints a markdown table; `--json` also
writes every number.
"""

import argparse
import json
import statistics
import sys


def last_epoch(path):
    with open(path) as f:
        r = json.load(f)
    r = r.get("result", r)
    epochs = r.get("epochs") or []
    if not epochs:
        sys.exit(f"{path}: no finished epoch")
    v = epochs[-1]["val"]
    groups = {g["name"]: g["accuracy"] for g in v["groups"] if not g.get("excluded")}
    support = v["per_class_support"]
    return {
        "report": path,
        "epoch": epochs[-1]["epoch"] + 1,
        "images": v["n"],
        "accuracy": v["accuracy"],
        "balanced_accuracy": v["balanced_accuracy"],
        "fairness": v.get("fairness"),
        "groups": groups,
        "majority_class_accuracy": max(support) / sum(support),
    }


def mean_sd(xs):
    if not xs:
        return None
    return {"mean": statistics.mean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--variant", action="append", required=True, help="NAME=PATTERN with {fold}")
    ap.add_argument("--folds", required=True, help="comma-separated fold numbers")
    ap.add_argument("--json", help="write the numbers here")
    a = ap.parse_args()
    variants = []
    for v in a.variant:
        name, sep, pattern = v.partition("=")
        if not sep or "{fold}" not in pattern:
            sys.exit(f"--variant {v!r}: expected NAME=PATTERN with {{fold}} in the pattern")
        variants.append((name, pattern))
    folds = [int(f) for f in a.folds.split(",")]
    runs = {name: {f: last_epoch(p.format(fold=f)) for f in folds} for name, p in variants}
    ref_name = variants[0][0]
    ref = runs[ref_name]
    measures = ["accuracy", "balanced_accuracy", "fairness"]
    groups = sorted(next(iter(ref.values()))["groups"])
    out = {"reference": ref_name, "folds": folds, "variants": {}}
    print(f"| variant | fold | accuracy | balanced | fairness | {' | '.join(groups)} | majority |")
    print("|---|---|---|---|---|" + "---|" * len(groups) + "---|")
    for name, _ in variants:
        per_fold = runs[name]
        deltas = {m: [] for m in measures + groups}
        for f in folds:
            r = per_fold[f]
            cells = [f"{r[m]:.4f}" if r[m] is not None else "-" for m in measures]
            cells += [f"{r['groups'][g]:.4f}" for g in groups]
            print(f"| {name} | {f} | {' | '.join(cells)} | {r['majority_class_accuracy']:.4f} |")
            if name != ref_name:
                for m in measures:
                    if r[m] is not None and ref[f][m] is not None:
                        deltas[m].append(100 * (r[m] - ref[f][m]))
                for g in groups:
                    deltas[g].append(100 * (r["groups"][g] - ref[f]["groups"][g]))
        entry = {"runs": {str(f): per_fold[f] for f in folds}}
        if name != ref_name:
            entry["difference_points"] = {k: {"per_fold": v, **(mean_sd(v) or {})} for k, v in deltas.items()}
            cells = []
            for k in measures + groups:
                s = mean_sd(deltas[k])
                cells.append(f"{s['mean']:+.2f} +/- {s['sd']:.2f}" if s else "-")
            print(f"| {name} - {ref_name} (points) | mean +/- sd | {' | '.join(cells)} | |")
        out["variants"][name] = entry
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
