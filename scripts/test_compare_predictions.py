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

    def test_recall_per_class(self):
        rows, text = self.run_main()
        self.assertIn("Recall of each class", text)
        # REF gets every image right; the run misses k = 2 and 4 (class A, 2 of 20) and
        # k = 1 (class B, 1 of 20).
        self.assertEqual(rows[0]["recall"], {"A": 1.0, "B": 1.0})
        self.assertAlmostEqual(rows[2]["delta_points"]["recall"]["A"], -10.0)
        self.assertAlmostEqual(rows[2]["delta_points"]["recall"]["B"], -5.0)
        # Balanced accuracy is the mean of the recalls.
        self.assertAlmostEqual(rows[2]["balanced_accuracy"], sum(rows[2]["recall"].values()) / 2)

    def test_bad_counts_are_refused(self):
        for args in (["--bootstrap", "1"], ["--bootstrap", "many"], ["--bootstrap"]):
            with self.assertRaises(SystemExit) as e:
                cp.main([str(self.ref), str(self.same), *args])
            self.assertIn("--bootstrap", str(e.exception))



class Pooled(unittest.TestCase):
    """Several folders joined by commas: the folds of a cross-validation pooled."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.root = Path(self.tmp.name)
        self.groups = ["g1", "g2"]
        # Fold a: g1 2/3 right, g2 1/1; fold b: g1 1/1, g2 1/3. Class A 3/4, class B 2/4.
        self.a = [("a1", "A", "g1", "A"), ("a2", "A", "g1", "B"), ("a3", "B", "g1", "B"),
                  ("a4", "B", "g2", "B")]
        self.b = [("b1", "A", "g1", "A"), ("b2", "A", "g2", "A"), ("b3", "B", "g2", "A"),
                  ("b4", "B", "g2", "A")]
        for name, rows in (("ref-a", self.a), ("ref-b", self.b)):
            write_run(self.root / name, rows, self.groups)
        # The run gets a2 right as well and b2 wrong: two changed images, one per fold.
        run_a = [(i, y, g, y if i == "a2" else p) for i, y, g, p in self.a]
        run_b = [(i, y, g, "B" if i == "b2" else p) for i, y, g, p in self.b]
        write_run(self.root / "run-a", run_a, self.groups)
        write_run(self.root / "run-b", run_b, self.groups)

    def tearDown(self):
        self.tmp.cleanup()

    def pair(self, a, b):
        return f"{self.root / a},{self.root / b}"

    def test_scores_by_hand(self):
        out = self.root / "out.json"
        with contextlib.redirect_stdout(io.StringIO()):
            cp.main([self.pair("ref-a", "ref-b"), self.pair("run-a", "run-b"),
                     "--json", str(out), "--bootstrap", "50"])
        ref, run = json.loads(out.read_text())
        self.assertEqual(ref["images"], 8)
        self.assertAlmostEqual(ref["accuracy"], 5 / 8)
        self.assertAlmostEqual(ref["balanced_accuracy"], (3 / 4 + 2 / 4) / 2)
        self.assertAlmostEqual(ref["groups"]["g1"], 3 / 4)
        self.assertAlmostEqual(ref["groups"]["g2"], 2 / 4)
        # Both groups hold 4 images: the minority is the first, g1; SPD = (0 + 0.25) / 2.
        self.assertAlmostEqual(ref["fairness"], (0.2 - 0.125) / 0.2)
        self.assertAlmostEqual(run["agreement"], 6 / 8)
        self.assertAlmostEqual(run["delta_points"]["accuracy"], 0.0)
        self.assertAlmostEqual(run["delta_points"]["groups"]["g1"], 25.0)
        self.assertAlmostEqual(run["delta_points"]["groups"]["g2"], -25.0)
        # g1 4/4 (the minority), g2 1/4: SPD (0 + 0.75) / 2 = 0.375 > 0.2, so fairness is 0.
        self.assertEqual(run["fairness"], 0.0)
        # Class A 3/4 -> 3/4 (a2 gained, b2 lost), class B 2/4 unchanged.
        self.assertEqual(ref["recall"], {"A": 0.75, "B": 0.5})
        self.assertEqual(run["delta_points"]["recall"], {"A": 0.0, "B": 0.0})
        self.assertIn("bootstrap", run)

    def test_one_folder_pooled_equals_its_evaluation(self):
        ev, pred, truth = cp.load_one(self.root / "ref-a")
        m = cp.metrics(ev)
        pooled = cp.pooled_metrics(pred, truth, list(m["groups"]))
        for k in ("accuracy", "balanced_accuracy"):
            self.assertAlmostEqual(pooled[k], m[k])
        self.assertEqual(pooled["groups"], m["groups"])

    def test_an_image_in_two_folders_is_refused(self):
        with self.assertRaises(SystemExit) as e:
            cp.main([self.pair("ref-a", "run-a"), self.pair("run-a", "run-b")])
        self.assertIn("a1", str(e.exception))
        self.assertIn("already in an earlier folder", str(e.exception))

    def test_a_run_on_other_images_is_refused(self):
        with self.assertRaises(SystemExit) as e:
            cp.main([self.pair("ref-a", "ref-b"), str(self.root / "run-a")])
        self.assertIn("does not hold the images of", str(e.exception))
        self.assertIn("4 missing", str(e.exception))


if __name__ == "__main__":
    unittest.main()
