"""Tests of scripts/teacher_targets.py (numpy only).

What matters: the shift is the one `derm-train distill --teacher-adjust` applies (a teacher
that knows only the prior becomes uniform at tau 1), and recall is counted per class.

    python3 -m unittest scripts/test_teacher_targets.py
"""

import sys
import unittest
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import teacher_targets as tt  # noqa: E402


class TeacherTargets(unittest.TestCase):
    def test_a_prior_only_teacher_becomes_uniform_at_tau_one(self):
        labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
        prior = np.array([0.1, 0.3, 0.6])
        logits = np.tile(np.log(prior), (len(labels), 1))
        rows = tt.summarize(logits, labels, 3, [0.0, 1.0], temperature=1.0)
        # tau 0: the teacher says "class 2" for everything, with probability 0.6.
        self.assertEqual(rows[0]["recall"], [0.0, 0.0, 1.0])
        self.assertAlmostEqual(rows[0]["mean_true_class_probability"][2], 0.6, places=6)
        self.assertAlmostEqual(rows[0]["balanced_accuracy"], 1.0 / 3.0, places=6)
        # tau 1: uniform targets.
        for p in rows[1]["mean_true_class_probability"]:
            self.assertAlmostEqual(p, 1.0 / 3.0, places=6)

    def test_recall_is_per_class_and_absent_classes_are_left_out(self):
        labels = np.array([0, 0, 1, 1])
        logits = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 2.0, 0], [0, 2.0, 0]])
        (row,) = tt.summarize(logits, labels, 3, [0.0], temperature=3.0)
        self.assertEqual(row["recall"], [0.5, 1.0, None])
        self.assertAlmostEqual(row["balanced_accuracy"], 0.75)
        self.assertAlmostEqual(row["accuracy"], 0.75)


if __name__ == "__main__":
    unittest.main()
