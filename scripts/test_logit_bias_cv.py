"""Tests of scripts/logit_bias_cv.py (numpy only).

What matters: the bias scored on a fold is fitted on the other folds alone (a held-out
estimate), and the search finds a bias that a shifted class needs.

    python3 -m unittest scripts/test_logit_bias_cv.py
"""

import csv
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import logit_bias_cv as lb  # noqa: E402

CLASSES = ["A", "B", "C"]


def write_fold(path: Path, labels, logits, groups):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "group", "pred"] + [f"logit_{c}" for c in CLASSES])
        for i, (y, row, g) in enumerate(zip(labels, logits, groups)):
            w.writerow([f"x{i}", CLASSES[y], g, CLASSES[int(np.argmax(row))]] + list(row))


class LogitBiasCv(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.paths = []
        rng = np.random.default_rng(0)
        for k in range(3):
            labels = np.arange(30) % 3
            logits = np.eye(3)[labels] * 2.0 + rng.normal(0, 0.1, (30, 3))
            # Class B is under-scored by 2.5: without a bias, B is never predicted.
            logits[:, 1] -= 2.5
            groups = ["age00-39" if i % 2 else "age40-54" for i in range(30)]
            p = Path(self.dir.name) / f"f{k}.csv"
            write_fold(p, labels, logits, groups)
            self.paths.append(str(p))

    def tearDown(self):
        self.dir.cleanup()

    def test_the_search_finds_the_missing_offset(self):
        classes, logits, labels, groups, folds = lb.load(self.paths)
        data = (logits, labels, groups, ["age00-39", "age40-54"], len(classes))
        none = lb.score(np.zeros(3), folds == 0, *data)
        self.assertAlmostEqual(none["accuracy"], 2 / 3)
        bias = lb.fit(folds != 0, lambda s: s["accuracy"], data)
        fitted = lb.score(bias, folds == 0, *data)
        self.assertEqual(fitted["accuracy"], 1.0)
        self.assertGreater(bias[1] - max(bias[0], bias[2]), 0.5)

    def test_the_scored_fold_takes_no_part_in_the_fit(self):
        classes, logits, labels, groups, folds = lb.load(self.paths)
        data = (logits, labels, groups, ["age00-39", "age40-54"], len(classes))
        before = lb.fit(folds != 2, lambda s: s["accuracy"], data)
        # Scrambling fold 2's logits cannot change a bias fitted without it.
        logits[folds == 2] = np.random.default_rng(1).normal(0, 5, ((folds == 2).sum(), 3))
        after = lb.fit(folds != 2, lambda s: s["accuracy"], data)
        np.testing.assert_array_equal(before, after)


if __name__ == "__main__":
    unittest.main()
