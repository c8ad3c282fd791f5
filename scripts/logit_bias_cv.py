#!/usr/bin/env python3
"""Nested cross-validation of a post-hoc logit bias (one additive offset per class).

Input: the `predictions.csv` of `derm-train evaluate` for each fold, each scored by the
network that did not train on it (out-of-fold logits). For each fold k, a bias vector is fitted
on the other folds' logits (coordinate search over [-3, 3], step 0.1, four sweeps) to maximise
an objective, then scored on fold k, which it never saw. Prints a table and writes JSON.

  python3 scripts/logit_bias_cv.py --out report.json F0/predictions.csv F1/predictions.csv ...

Objectives: accuracy; accuracy + balanced accuracy; accuracy + balanced accuracy - the spread
(max - min) of the age groups' accuracies (the `unknown` group left out). Needs numpy.
"""
import argparse
import csv
import json

import numpy as np


def load(paths):
    rows = []
    for fold, path in enumerate(paths):
        with open(path) as f:
            for r in csv.DictReader(f):
                r["fold"] = fold
                rows.append(r)
    classes = [k[len("logit_"):] for k in rows[0] if k.startswith("logit_")]
    logits = np.array([[float(r["logit_" + c]) for c in classes] for r in rows])
    labels = np.array([classes.index(r["label"]) for r in rows])
    groups = np.array([r["group"] for r in rows])
    folds = np.array([r["fold"] for r in rows])
    return classes, logits, labels, groups, folds


def score(bias, idx, logits, labels, groups, names, n_classes):
    pred = (logits[idx] + bias).argmax(1)
    true = labels[idx]
    acc = float((pred == true).mean())
    bal = float(np.mean([(pred[true == c] == c).mean() for c in range(n_classes) if (true == c).any()]))
    per_group = {g: float((pred[groups[idx] == g] == true[groups[idx] == g]).mean()) for g in names}
    spread = max(per_group.values()) - min(per_group.values())
    return {"accuracy": acc, "balanced_accuracy": bal, "groups": per_group, "group_spread": spread}


def fit(idx, objective, data):
    n = data[-1]
    bias = np.zeros(n)
    best = objective(score(bias, idx, *data))
    for _ in range(4):
        for c in range(n):
            for d in np.linspace(-3, 3, 61):
                trial = bias.copy()
                trial[c] = d
                s = objective(score(trial, idx, *data))
                if s > best + 1e-12:
                    best, bias = s, trial
    return bias


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("predictions", nargs="+", help="predictions.csv of each fold, in fold order")
    ap.add_argument("--out", required=True, help="JSON report")
    a = ap.parse_args()
    classes, logits, labels, groups, folds = load(a.predictions)
    names = sorted(g for g in set(groups) if g != "unknown")
    data = (logits, labels, groups, names, len(classes))
    objectives = {
        "none (the network as trained)": None,
        "accuracy": lambda s: s["accuracy"],
        "accuracy + balanced": lambda s: s["accuracy"] + s["balanced_accuracy"],
        "accuracy + balanced - group spread": lambda s: s["accuracy"] + s["balanced_accuracy"] - s["group_spread"],
    }
    report = {"classes": classes, "folds": len(a.predictions), "objectives": {}}
    print("| objective | accuracy | balanced | group spread | worst group |")
    print("|---|---|---|---|---|")
    for name, objective in objectives.items():
        per_fold = []
        for k in range(len(a.predictions)):
            bias = np.zeros(len(classes)) if objective is None else fit(folds != k, objective, data)
            s = score(bias, folds == k, *data)
            s["fold"] = k
            s["bias"] = [round(float(b), 2) for b in bias]
            per_fold.append(s)
        mean = {m: float(np.mean([s[m] for s in per_fold])) for m in ("accuracy", "balanced_accuracy", "group_spread")}
        mean["worst_group"] = float(np.mean([min(s["groups"].values()) for s in per_fold]))
        report["objectives"][name] = {"mean": mean, "folds": per_fold}
        print(f"| {name} | {mean['accuracy']:.4f} | {mean['balanced_accuracy']:.4f} | {mean['group_spread']:.4f} | {mean['worst_group']:.4f} |")
    with open(a.out, "w") as f:
        json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
