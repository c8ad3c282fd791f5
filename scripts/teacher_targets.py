#!/usr/bin/env python3
"""What a teacher-logits file teaches, on the training images of a fold only.

For each `tau` of `--teacher-adjust`, the teacher's logits on the fold's training images are
shifted by `-tau * ln(prior)` (the training images' class frequencies, as `derm-train
distill` does) and summarized: the argmax's accuracy, balanced accuracy and per-class recall
against the labels, and the mean probability of the true class at the distillation
temperature (what the soft term asks the student to give each class's images). The
validation fold is never read, so a `tau` picked here is not tuned on it.

  python3 scripts/teacher_targets.py --index C/index.json --folds C/folds-k5-seed0.json \\
      --fold 2 --logits reports/oof-teachers/tl-oof-f2.safetensors --taus 0,0.5,1 --json out.json

Needs numpy and safetensors (the cache index and split are read by oof_teachers.py's loaders).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from oof_teachers import labels_groups, load_split  # noqa: E402


def summarize(logits, labels, n_classes, taus, temperature):
    """One row per tau: accuracy, balanced accuracy, recall and mean true-class probability."""
    counts = np.bincount(labels, minlength=n_classes)
    prior = np.maximum(counts, 1) / np.maximum(counts, 1).sum()
    rows = []
    for tau in taus:
        z = logits - tau * np.log(prior)
        pred = z.argmax(1)
        zt = z / temperature
        p = np.exp(zt - zt.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        present = [c for c in range(n_classes) if counts[c] > 0]
        recall = [float((pred[labels == c] == c).mean()) if counts[c] else None for c in range(n_classes)]
        p_true = [float(p[labels == c, c].mean()) if counts[c] else None for c in range(n_classes)]
        rows.append({
            "tau": tau,
            "accuracy": float((pred == labels).mean()),
            "balanced_accuracy": float(np.mean([recall[c] for c in present])),
            "recall": recall,
            "mean_true_class_probability": p_true,
        })
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", required=True, help="the cache's index.json")
    ap.add_argument("--folds", required=True, help="the split report (folds-k5-seed0.json)")
    ap.add_argument("--fold", type=int, required=True, help="the validation fold (never read)")
    ap.add_argument("--logits", required=True, help="a teacher-logits file")
    ap.add_argument("--taus", default="0,0.25,0.5,0.75,1", help="comma-separated tau values")
    ap.add_argument("--temperature", type=float, default=3.0)
    ap.add_argument("--json", help="write the rows here")
    a = ap.parse_args()
    from safetensors.numpy import load_file

    index, fold_of, k = load_split(Path(a.index), Path(a.folds))
    if not 0 <= a.fold < k:
        raise SystemExit(f"--fold {a.fold}: {a.folds} has {k} folds")
    classes = index["class_names"]
    labels, _ = labels_groups(index, len(index["samples"]))
    train = np.flatnonzero(fold_of != a.fold)
    t = load_file(a.logits)
    if t["logits"].shape != (len(labels), len(classes)):
        raise SystemExit(f"{a.logits}: logits {t['logits'].shape}, cache has {len(labels)} x {len(classes)}")
    if "present" in t and not t["present"][train].all():
        raise SystemExit(f"{a.logits}: no teacher logits for some training images of fold {a.fold}")
    taus = [float(x) for x in a.taus.split(",")]
    rows = summarize(t["logits"][train], labels[train], len(classes), taus, a.temperature)
    print(f"fold {a.fold}: {len(train)} training images; true-class probability at T {a.temperature}")
    print("| tau | accuracy | balanced | " + " | ".join(classes) + " |")
    print("|---" * (3 + len(classes)) + "|")
    for r in rows:
        probs = " | ".join("-" if v is None else f"{v:.2f}" for v in r["mean_true_class_probability"])
        print(f"| {r['tau']} | {r['accuracy']:.3f} | {r['balanced_accuracy']:.3f} | {probs} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"fold": a.fold, "logits": a.logits, "temperature": a.temperature,
                       "classes": classes, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
