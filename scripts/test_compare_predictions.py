"""Tests of compare_predictions.py: scores recomputed from predictions.csv, and the paired
bootstrap of the differences (python3 -m unittest scripts/test_compare_predictions.py)."""
import contextlib
import csv
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_predictions as cp  # noqa: E402


def write_run(d, rows, groups):
    """An `evaluate` folder: predictions.csv from (id, label, group, pred) rows and an
    evaluation.json with the scores `cp.scores` computes (checked separately)."""
    d.mkdir()
    with (d / "predictions.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "label", "group", "pred"])
        w.writerows(rows)
    s = cp.scores([(r[1], r[2], r[3]) for r in rows], groups)
    ev = {
        "accuracy": s["accuracy"],
        "balanced_accuracy": s["balanced_accuracy"],
        "fairness": 1.0,
        "groups": [{"name": g, "accuracy": a, "excluded": False} for g, a in s["groups"].items()],
    }
    (d / "evaluation.json").write_text(json.dumps({"result": {"evaluation": ev}}))


class Scores(unittest.TestCase):
    def test_by_hand(self):
        items = [("A", "g1", "A"), ("A", "g1", "B"), ("B", "g2", "B"), ("C", "g2", "A")]
        s = cp.scores(items, ["g1", "g2", "g3"])
        self.assertAlmostEqual(s["accuracy"], 0.5)
        # Recall A 1/2, B 1/1, C 0/1: the mean over the classes present.
        self.assertAlmostEqual(s["balanced_accuracy"], 0.5)
        self.assertEqual(s["groups"], {"g1": 0.5, "g2": 0.5})

    def test_percentile_interpolates(self):
        self.assertEqual(cp.percentile([3, 1, 2, 4], 50), 2.5)
        self.assertEqual(cp.percentile([5], 95), 5)


class Bootstrap(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        root = Path(self.tmp.name)
        groups = ["g1", "g2"]
        truth = [(f"i{k}", "AB"[k % 2], "g2" if k % 3 == 0 else "g1", "AB"[k % 2]) for k in range(40)]
        # The run gets three images of g1 wrong that REF gets right, and nothing else differs.
        worse = [(i, y, g, ("B" if y == "A" else "A") if k in (1, 2, 4) else p)
                 for k, (i, y, g, p) in enumerate(truth)]
        self.ref, self.same, self.worse = root / "ref", root / "same", root / "worse"
        write_run(self.ref, truth, groups)
        write_run(self.same, truth, groups)
        write_run(self.worse, worse, groups)

    def tearDown(self):
        self.tmp.cleanup()

    def run_main(self, *args):
        out = Path(self.tmp.name) / "out.json"
        with contextlib.redirect_stdout(io.StringIO()) as text:
            cp.main([str(self.ref), str(self.same), str(self.worse), "--json", str(out), *args])
        return json.loads(out.read_text()), text.getvalue()

    def test_paired_intervals(self):
        rows, text = self.run_main("--bootstrap", "200", "--seed", "3")
        self.assertIn("90% bootstrap intervals", text)
        same, worse = rows[1]["bootstrap"]["interval_points"], rows[2]["bootstrap"]["interval_points"]
        # The same predictions differ by nothing on every resample.
        for k, (lo, hi) in same.items():
            self.assertEqual((lo, hi), (0.0, 0.0), k)
        # Never better than REF on any resample, and the observed difference inside the interval.
        for k, observed in [("accuracy", rows[2]["delta_points"]["accuracy"]),
                            ("g1", rows[2]["delta_points"]["groups"]["g1"])]:
            lo, hi = worse[k]
            self.assertLessEqual(hi, 0.0, k)
            self.assertLess(lo, 0.0, k)
            self.assertLessEqual(lo, observed, k)
            self.assertLessEqual(observed, hi + 1e-9, k)
        # g2 holds none of the changed images.
        self.assertEqual(worse["g2"], [0.0, 0.0])
        # The same seed draws the same resamples.
        again, _ = self.run_main("--bootstrap", "200", "--seed", "3")
        self.assertEqual(again[2]["bootstrap"], rows[2]["bootstrap"])

    def test_without_bootstrap_no_intervals(self):
        rows, text = self.run_main()
        self.assertNotIn("bootstrap", rows[2])
        self.assertNotIn("90%", text)

    def test_bad_counts_are_refused(self):
        for args in (["--bootstrap", "1"], ["--bootstrap", "many"], ["--bootstrap"]):
            with self.assertRaises(SystemExit) as e:
                cp.main([str(self.ref), str(self.same), *args])
            self.assertIn("--bootstrap", str(e.exception))


if __name__ == "__main__":
    unittest.main()
