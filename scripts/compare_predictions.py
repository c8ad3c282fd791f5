#!/usr/bin/env python3
"""Compares `derm-train evaluate` runs of one model in several precisions on the same images.

    scripts/compare_predictions.py REF_DIR OTHER_DIR... [--json OUT] [--bootstrap N [--seed S]]

Each DIR holds `evaluation.json` and `predictions.csv` from `derm-train evaluate`. Prints, for
every run: top-1 agreement with REF, accuracy, balanced accuracy, fairness, per-group accuracy,
each class's recall (balanced accuracy is their mean), and the differences to REF in points;
`--json` writes the same tables as JSON. Every run must hold the same images as REF.

A run may also be several folders joined by commas, `DIR,DIR,...`: for example the five folds
of a cross-validation, each scored by the model that did not train on it. Their images are
pooled (an image may appear in only one of them) and every score is recomputed from the pooled
predictions: fairness as `evaluate` computes it, from the SPD between the accuracy of each
group `evaluate` counted and that of the group with the fewest images.

`--bootstrap N` also asks how much of each difference the choice of images alone could make:
it draws N resamples of the images (with replacement, the same draw for REF and the run, so the
comparison stays paired), recomputes every difference on each, and prints the 5th and 95th
percentiles (a 90% interval, under `bootstrap` in the JSON). A difference whose interval is
several points wide cannot separate two settings that differ by less.
"""
import csv
import json
import random
import sys
from pathlib import Path


def load_one(d):
    """DIR's evaluation, each image's prediction, and each image's (label, group)."""
    d = Path(d)
    ev = json.loads((d / "evaluation.json").read_text())
    ev = ev.get("result", ev)
    with (d / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return ev, {r["id"]: r["pred"] for r in rows}, {r["id"]: (r["label"], r["group"]) for r in rows}


def load(arg):
    """The run named by `arg` (one folder, or several joined by commas): its scores (the
    `metrics` of one folder, recomputed from the pooled predictions of several), each image's
    prediction, and each image's (label, group)."""
    dirs = [d for d in arg.split(",") if d]
    if not dirs:
        sys.exit(f"{arg!r} names no folder")
    if len(dirs) == 1:
        ev, pred, truth = load_one(dirs[0])
        return metrics(ev), pred, truth
    pred, truth, groups = {}, {}, []
    for d in dirs:
        ev, p, t = load_one(d)
        twice = sorted(set(p) & set(pred))
        if twice:
            sys.exit(f"{d}: image {twice[0]} is already in an earlier folder of {arg!r} "
                     f"({len(twice)} images in both)")
        pred.update(p)
        truth.update(t)
        groups += [g for g in metrics(ev)["groups"] if g not in groups]
    return pooled_metrics(pred, truth, groups), pred, truth


def pooled_metrics(pred, truth, groups):
    """`metrics` recomputed from predictions: accuracy over every image, balanced accuracy,
    the accuracy of each of `groups` (those `evaluate` counts), and fairness
    `(0.2 - SPD) / 0.2` (0 beyond 0.2), SPD the mean absolute difference between each group's
    accuracy and that of the group with the fewest images (ties: the earlier in `groups`)."""
    s = scores([(*truth[i], pred[i]) for i in pred], groups)
    counts = {g: 0 for g in groups}
    for _, g in truth.values():
        if g in counts:
            counts[g] += 1
    present = [g for g in groups if counts[g]]
    fairness = None
    if present:
        minority = min(present, key=lambda g: (counts[g], groups.index(g)))
        accs = [s["groups"][g] for g in present]
        spd = sum(abs(a - s["groups"][minority]) for a in accs) / len(accs)
        fairness = max(0.0, (0.2 - spd) / 0.2)
    return {**s, "fairness": fairness}


def scores(items, groups):
    """Accuracy, balanced accuracy (mean recall over the classes present), the recall of
    each class present and the accuracy of each group in `groups`, of `items`: (label, group,
    prediction) triples."""
    per_class, per_group, right = {}, {}, 0
    for label, group, pred in items:
        ok = label == pred
        right += ok
        c = per_class.setdefault(label, [0, 0])
        c[0] += ok
        c[1] += 1
        g = per_group.setdefault(group, [0, 0])
        g[0] += ok
        g[1] += 1
    balanced = sum(c / n for c, n in per_class.values()) / len(per_class)
    return {
        "accuracy": right / len(items),
        "balanced_accuracy": balanced,
        "recall": {k: c / n for k, (c, n) in sorted(per_class.items())},
        "groups": {g: per_group[g][0] / per_group[g][1] for g in groups if g in per_group},
    }


def percentile(xs, q):
    """The `q`-th percentile of `xs`, linearly interpolated (numpy's default)."""
    xs = sorted(xs)
    i = q / 100 * (len(xs) - 1)
    lo = int(i)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


def bootstrap(ref_pred, pred, truth, groups, n, seed):
    """90% intervals (points) of the run-minus-REF differences over `n` paired resamples."""
    ids = sorted(ref_pred)
    rng = random.Random(seed)
    draws = {"accuracy": [], "balanced_accuracy": []}
    draws.update({g: [] for g in groups})
    for _ in range(n):
        pick = rng.choices(ids, k=len(ids))
        a = scores([(*truth[i], ref_pred[i]) for i in pick], groups)
        b = scores([(*truth[i], pred.get(i)) for i in pick], groups)
        for k in ("accuracy", "balanced_accuracy"):
            draws[k].append(100 * (b[k] - a[k]))
        for g in groups:
            if g in a["groups"]:
                draws[g].append(100 * (b["groups"][g] - a["groups"][g]))
    return {k: [percentile(v, 5), percentile(v, 95)] for k, v in draws.items() if v}


def metrics(ev):
    """The scores of one `evaluate` folder, as `evaluate` wrote them (its `evaluation.json`)."""
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
    resamples, seed = 0, 0
    for flag in ("--bootstrap", "--seed"):
        if flag in argv:
            i = argv.index(flag)
            try:
                value = int(argv[i + 1])
            except (IndexError, ValueError):
                sys.exit(f"{flag} needs a whole number")
            if flag == "--bootstrap":
                if value < 2:
                    sys.exit("--bootstrap needs at least 2 resamples")
                resamples = value
            else:
                seed = value
            argv = argv[:i] + argv[i + 2 :]
    if len(argv) < 2:
        sys.exit(__doc__)
    ref, ref_pred, truth = load(argv[0])
    rows, preds = [], []
    for d in argv:
        # REF is its own first row; its folders are read once.
        m, pred = (dict(ref), ref_pred) if not rows else load(d)[:2]
        if set(pred) != set(ref_pred):
            missing = sorted(set(ref_pred) - set(pred))
            extra = sorted(set(pred) - set(ref_pred))
            sys.exit(f"{d} does not hold the images of {argv[0]}: {len(missing)} missing "
                     f"({missing[:1]}), {len(extra)} not in it ({extra[:1]})")
        preds.append(pred)
        m["images"] = len(pred)
        m["recall"] = scores([(*truth[i], pred[i]) for i in ref_pred], [])["recall"]
        same = sum(pred.get(k) == v for k, v in ref_pred.items())
        m["run"] = d
        m["agreement"] = same / len(ref_pred)
        m["delta_points"] = {
            "accuracy": 100 * (m["accuracy"] - ref["accuracy"]),
            "balanced_accuracy": 100 * (m["balanced_accuracy"] - ref["balanced_accuracy"]),
            "groups": {g: 100 * (a - ref["groups"][g]) for g, a in m["groups"].items()},
            "recall": {c: 100 * (r - rows[0]["recall"][c]) if rows else 0.0
                       for c, r in m["recall"].items()},
        }
        rows.append(m)
    groups = list(ref["groups"])
    if resamples:
        for pred, m in zip(preds, rows):
            m["bootstrap"] = {
                "resamples": resamples,
                "seed": seed,
                "interval_points": bootstrap(ref_pred, pred, truth, groups, resamples, seed),
            }
    print("| run | agreement | accuracy | balanced | fairness | " + " | ".join(groups) + " |")
    print("|---" * (5 + len(groups)) + "|")
    for m in rows:
        d = m["delta_points"]
        cells = [
            m["run"],
            f"{m['agreement']:.4f}",
            f"{m['accuracy']:.4f} ({d['accuracy']:+.2f})",
            f"{m['balanced_accuracy']:.4f} ({d['balanced_accuracy']:+.2f})",
            "" if m["fairness"] is None else f"{m['fairness']:.4f}",
        ] + [f"{m['groups'][g]:.4f} ({d['groups'][g]:+.2f})" for g in groups]
        print("| " + " | ".join(cells) + " |")
    classes = list(rows[0]["recall"])
    print()
    print("Recall of each class (balanced accuracy is their mean):")
    print()
    print("| run | " + " | ".join(classes) + " |")
    print("|---" * (1 + len(classes)) + "|")
    for m in rows:
        d = m["delta_points"]["recall"]
        print("| " + " | ".join([m["run"]] + [f"{m['recall'][c]:.4f} ({d[c]:+.2f})"
                                              for c in classes]) + " |")
    if resamples:
        print()
        print(f"90% bootstrap intervals of the differences (points, {resamples} paired resamples):")
        print()
        print("| run | accuracy | balanced | " + " | ".join(groups) + " |")
        print("|---" * (3 + len(groups)) + "|")
        for m in rows[1:]:
            iv = m["bootstrap"]["interval_points"]
            cells = [m["run"]] + [
                f"{iv[k][0]:+.2f} .. {iv[k][1]:+.2f}" if k in iv else ""
                for k in ["accuracy", "balanced_accuracy"] + groups
            ]
            print("| " + " | ".join(cells) + " |")
    if out:
        Path(out).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
