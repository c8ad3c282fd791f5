"""Tests of scripts/oof_teachers.py's `assemble` and `score` (numpy + safetensors only).

What matters: every training row of `distill --fold V` comes from a teacher that saw neither
fold V nor that row's own fold, so the student's score on V stays a held-out estimate; the
file is derm-train's teacher-logits format; and `score` computes derm-train's SPD and fairness.

    python3 -m unittest scripts/test_oof_teachers.py
"""

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import oof_teachers as oof  # noqa: E402

K, PER_FOLD, C = 3, 4, 6
GROUPS = ["age00-39", "age40-54", "unknown"]


def cache_files(d: Path):
    n = K * PER_FOLD
    samples = [{"id": f"s{i}", "source": f"s{i}.jpg", "label": i % C, "group": (i // 3) % 3,
                "lesion": f"l{i}"} for i in range(n)]
    index = {"format": "derm-cache", "version": 1, "image_size": 8,
             "class_names": ["BCC", "BKL", "MEL", "NV", "VASC", "unknown"],
             "group_names": GROUPS, "samples": samples}
    # Interleaved folds, as a real split is not contiguous either.
    folds = {"result": {"folds": [{"val": [i for i in range(n) if i % K == f]} for f in range(K)]}}
    (d / "index.json").write_text(json.dumps(index))
    (d / "folds.json").write_text(json.dumps(folds))
    return n


def bundle(path: Path, n: int, offset: float, holdouts):
    """Teacher `ex<E>` puts `offset + 100 * key + row` on the rows of folds in E."""
    tensors = {}
    for h in holdouts:
        key = oof.key_of(h)
        t = np.zeros((n, C), dtype=np.float32)
        present = np.zeros(n, dtype=np.uint8)
        for i in range(n):
            if i % K in h:
                t[i] = offset + 100 * int(key[2:]) + i
                present[i] = 1
        tensors[key] = t
        tensors[key + "_present"] = present
    save_file(tensors, str(path), metadata={"derm.oof_teachers": json.dumps({"size": 224})})


def run(*argv):
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = oof.main([str(a) for a in argv])
        except SystemExit as e:
            return e.code, err.getvalue()
    return code, err.getvalue()


class Assemble(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        self.n = cache_files(self.d)
        self.all_sets = oof.parse_holdouts("singles,pairs", K)
        bundle(self.d / "a.safetensors", self.n, 0.0, self.all_sets)
        self.common = ["--index", self.d / "index.json", "--folds", self.d / "folds.json"]

    def tearDown(self):
        self.tmp.cleanup()

    def assemble(self, *extra, bundles=("a",)):
        args = ["assemble", *self.common]
        for b in bundles:
            args += ["--bundle", self.d / f"{b}.safetensors"]
        out = self.d / "tl.safetensors"
        code, err = run(*args, *extra, "--out", out)
        return code, err, out

    def test_eval_fold_rows_come_from_teachers_that_saw_neither_fold(self):
        for v in range(K):
            code, err, out = self.assemble("--eval-fold", v)
            self.assertEqual(code, 0, err)
            f = load_file(str(out))
            for i in range(self.n):
                fold = i % K
                if fold == v:
                    self.assertEqual(f["present"][i], 0)
                    self.assertTrue((f["logits"][i] == 0).all())
                else:
                    self.assertEqual(f["present"][i], 1)
                    key = int(oof.key_of((v, fold))[2:])
                    self.assertTrue((f["logits"][i] == 100 * key + i).all(), (v, i))

    def test_all_rows_come_from_the_teacher_that_held_out_their_fold(self):
        code, err, out = self.assemble("--all")
        self.assertEqual(code, 0, err)
        f = load_file(str(out))
        self.assertTrue(f["present"].all())
        for i in range(self.n):
            self.assertTrue((f["logits"][i] == 100 * (i % K) + i).all())

    def test_the_file_is_derm_trains_teacher_logits_format(self):
        _, _, out = self.assemble("--eval-fold", 1)
        with open(out, "rb") as fh:
            header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
        self.assertEqual(header["logits"]["dtype"], "F32")
        self.assertEqual(header["logits"]["shape"], [self.n, C])
        self.assertEqual(header["present"]["dtype"], "U8")
        meta = json.loads(header["__metadata__"]["derm.teacher_logits"])
        # The fields of derm-train's LogitsMeta (train/src/train/teacher_file.rs).
        self.assertEqual(set(meta), {"teacher", "cache", "samples", "computed", "input_size",
                                     "seconds"})
        self.assertEqual((meta["samples"], meta["computed"], meta["input_size"]),
                         (self.n, self.n - PER_FOLD, 224))

    def test_bundles_of_other_seeds_are_averaged(self):
        bundle(self.d / "b.safetensors", self.n, 10.0, self.all_sets)
        code, err, out = self.assemble("--all", bundles=("a", "b"))
        self.assertEqual(code, 0, err)
        f = load_file(str(out))
        self.assertTrue((f["logits"][4] == 100 * (4 % K) + 4 + 5.0).all())

    def test_a_missing_teacher_is_named(self):
        bundle(self.d / "a.safetensors", self.n, 0.0, [(0,), (1,), (2,), (0, 1)])
        code, err, _ = self.assemble("--eval-fold", 2)
        self.assertNotEqual(code, 0)
        self.assertIn("ex02", str(code) + err)

    def test_a_teacher_without_its_rows_is_refused(self):
        bundle(self.d / "a.safetensors", self.n, 0.0, [(0,), (1,), (2,)])
        f = load_file(str(self.d / "a.safetensors"))
        f["ex1_present"][1] = 0
        save_file(f, str(self.d / "a.safetensors"),
                  metadata={"derm.oof_teachers": json.dumps({"size": 224})})
        code, err, _ = self.assemble("--all")
        self.assertNotEqual(code, 0)
        self.assertIn("ex1 lacks logits for some images of fold 1", str(code) + err)


class ShipModels(unittest.TestCase):
    """`--holdouts none` (a model trained on every image, the one to ship) next to the
    cross-validation folds: named `all`, and kept out of the bundle, which holds only
    out-of-fold logits."""

    def test_none_is_a_model_on_every_image(self):
        self.assertEqual(oof.parse_holdouts("none;0;1", K), [(), (0,), (1,)])
        self.assertEqual(oof.key_of(()), "all")
        self.assertEqual(oof.key_of((2, 0)), "ex02")

    def test_the_bundle_skips_a_model_with_nothing_held_out(self):
        n = K * PER_FOLD
        held = np.array([i for i in range(n) if i % K == 0], dtype=np.int64)
        logits = np.zeros((n, C), dtype=np.float32)
        logits[held] = 1.0
        done = {"all": {"logits": np.zeros((n, C), dtype=np.float32),
                        "held_rows": np.array([], dtype=np.int64)},
                "ex0": {"logits": logits, "held_rows": held}}
        with tempfile.TemporaryDirectory() as t:
            oof.write_bundle(Path(t), done, {"config": {"size": 224}})
            b = load_file(str(Path(t) / "oof-logits.safetensors"))
            self.assertEqual(sorted(b), ["ex0", "ex0_present"])
            self.assertEqual(b["ex0_present"].tolist(), [int(i % K == 0) for i in range(n)])


class Score(unittest.TestCase):
    def test_metrics(self):
        y = np.array([0, 0, 0, 1, 1, 1, 1, 2])
        pred = np.array([0, 0, 0, 1, 1, 0, 0, 2])
        g = np.array([0, 0, 0, 1, 1, 1, 1, 2])
        m = oof.metrics(pred, y, g, GROUPS, C)
        self.assertAlmostEqual(m["accuracy"], 6 / 8)
        self.assertAlmostEqual(m["balanced_accuracy"], (1.0 + 0.5 + 1.0) / 3)
        self.assertEqual(m["per_group"]["age40-54"], {"n": 4, "accuracy": 0.5})

    def test_spd_and_fairness_follow_derm_train(self):
        with tempfile.TemporaryDirectory() as t:
            d = Path(t)
            n = cache_files(d)
            tensors = {}
            for f in range(K):
                key = oof.key_of((f,))
                logits = np.zeros((n, C), dtype=np.float32)
                for i in range(n):
                    label = i % C
                    # Fold 0 = rows 0, 3, 6, 9 in groups 0, 1, 2 (`unknown`), 0: row 9 wrong.
                    logits[i, (label + 1) % C if i == 9 else label] = 1.0
                tensors[key] = logits
                tensors[key + "_present"] = np.array([i % K == f for i in range(n)], dtype=np.uint8)
            save_file(tensors, str(d / "b.safetensors"), metadata={"derm.oof_teachers": "{}"})
            code, err = run("score", "--index", d / "index.json", "--folds", d / "folds.json",
                            "--bundle", d / "b.safetensors", "--json", d / "s.json")
            self.assertEqual(code, 0, err)
            rows = json.loads((d / "s.json").read_text())["folds"]
            # Fold 0: age00-39 0.5 (2 images), age40-54 1.0 (1 image: the minority), `unknown`
            # left out. SPD = mean(|0.5 - 1.0|, |1.0 - 1.0|) = 0.25 (max - min would say 0.5);
            # fairness = max(0, (0.2 - 0.25) / 0.2) = 0.
            self.assertEqual(rows[0]["accuracy"], 0.75)
            self.assertAlmostEqual(rows[0]["spd"], 0.25)
            self.assertEqual(rows[0]["fairness"], 0.0)
            for r in rows[1:]:
                self.assertEqual((r["accuracy"], r["spd"], r["fairness"]), (1.0, 0.0, 1.0))


if __name__ == "__main__":
    unittest.main()
