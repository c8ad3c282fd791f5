#!/usr/bin/env python3
"""Choose a post-hoc logit adjustment on a *tuning* fold, then score it on another fold.

Class-weighted cross-entropy shifts a model's logits by about ln(w_c); subtracting
tau * ln(w_c) moves the decision back towards the plain-accuracy optimum (tau = 1: fully,
tau = 0: unchanged). This script reads `pi-bench --predictions` CSVs (standard library only):

  scripts/tune_logit_bias.py --weights W1,...,W6 --tune fold1.csv [--report fold0.csv]
      [--objective mean_acc_bal] [--exclude-groups unknown]

It prints accuracy, balanced accuracy and fairness for each tau on the tuning fold, picks the
tau that maximizes the objective there, and prints the same numbers on the report fold for
tau = 0 and the chosen tau (the report fold is never used for the choice). The last line is the
`derm-train export --logit-bias` argument.
"""
import argparse
import csv
import math
import sys


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        sys.exit(f"{path}: no rows")
    classes = [k[len("logit_"):] for k in rows[0] if k.startswith("logit_")]
    data = [
        (r["true"], r["group"], [float(r["logit_" + c]) for c in classes]) for r in rows
    ]
    return classes, data


def score(classes, data, bias, exclude):
    n = len(data)
    support = {c: 0 for c in classes}
    hits = {c: 0 for c in classes}
    gn, gc = {}, {}
    correct = 0
    for true, group, logits in data:
        adj = [l + b for l, b in zip(logits, bias)]
        pred = classes[max(range(len(adj)), key=adj.__getitem__)]
        ok = pred == true
        correct += ok
        support[true] += 1
        hits[true] += ok
        gn[group] = gn.get(group, 0) + 1
        gc[group] = gc.get(group, 0) + ok
    recalls = [hits[c] / support[c] for c in classes if support[c]]
    groups = {g: gc[g] / gn[g] for g in gn if g not in exclude}
    # Same rule as the ESFair score: minority = smallest group, SPD = mean |acc_g - acc_m|.
    m = min(sorted(groups), key=lambda g: gn[g])
    spd = sum(abs(a - groups[m]) for a in groups.values()) / len(groups)
    fairness = max(0.0, (0.2 - spd) / 0.2)
    return correct / n, sum(recalls) / len(recalls), fairness


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", required=True, help="the class weights the model was trained with")
    ap.add_argument("--tune", required=True, help="predictions CSV of the tuning fold")
    ap.add_argument("--report", help="predictions CSV of the fold to report (not used to choose)")
    ap.add_argument("--objective", default="mean_acc_bal", choices=["mean_acc_bal", "accuracy", "acc_bal_fair"])
    ap.add_argument("--exclude-groups", default="unknown")
    ap.add_argument("--taus", default="0:1.5:0.05", help="start:stop:step")
    a = ap.parse_args()
    w = [float(x) for x in a.weights.split(",")]
    exclude = set(filter(None, a.exclude_groups.split(",")))
    classes, tune = load(a.tune)
    if len(w) != len(classes):
        sys.exit(f"--weights has {len(w)} numbers, the CSV has {len(classes)} classes")
    lo, hi, step = (float(x) for x in a.taus.split(":"))
    taus = [round(lo + i * step, 6) for i in range(int(round((hi - lo) / step)) + 1)]

    def objective(acc, bal, fair):
        return {"mean_acc_bal": (acc + bal) / 2, "accuracy": acc, "acc_bal_fair": (acc + bal + fair) / 3}[a.objective]

    print(f"tuning fold {a.tune}: objective {a.objective}")
    print("| tau | accuracy | balanced | fairness | objective |")
    print("|---|---|---|---|---|")
    best = None
    for t in taus:
        bias = [-t * math.log(x) for x in w]
        acc, bal, fair = score(classes, tune, bias, exclude)
        obj = objective(acc, bal, fair)
        print(f"| {t:.2f} | {acc:.4f} | {bal:.4f} | {fair:.4f} | {obj:.4f} |")
        if best is None or obj > best[0] + 1e-12:
            best = (obj, t)
    tau = best[1]
    bias = [-tau * math.log(x) for x in w]
    print(f"chosen tau = {tau:.2f}")
    if a.report:
        rc, rep = load(a.report)
        if rc != classes:
            sys.exit("the two CSVs have different classes")
        print(f"\nreport fold {a.report} (not used for the choice):")
        print("| tau | accuracy | balanced | fairness |")
        print("|---|---|---|---|")
        for t, b in [(0.0, [0.0] * len(w)), (tau, bias)]:
            acc, bal, fair = score(classes, rep, b, exclude)
            print(f"| {t:.2f} | {acc:.4f} | {bal:.4f} | {fair:.4f} |")
    print("--logit-bias " + ",".join(f"{b:.6f}" for b in bias))


if __name__ == "__main__":
    main()
