#!/usr/bin/env python3
"""Checks an ONNX file written by `derm-codegen onnx` in ONNX Runtime.

    scripts/check_onnx.py MODEL.onnx GOLDEN.json [--tol 1e-4]

GOLDEN.json comes from `derm-codegen onnx MODEL -o MODEL.onnx --golden-json GOLDEN.json`
(the model file's golden inputs and expected logits). The script runs onnx.checker with
full shape inference, checks the graph's interface (input "input" float [1, 3, H, W], output
"logits" float [1, classes], the derm.* metadata), then runs every golden sample through
ONNX Runtime's CPU provider, once with all graph optimizations and once with none, and
compares with the expected logits: max |diff| relative to each sample's logit range must
stay within --tol. Exit status 0 when everything holds, 1 otherwise.

Needs `onnx`, `onnxruntime` and `numpy` (scripts/check_onnx.sh makes a venv with them).
"""

import argparse
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort

META_KEYS = ("derm.classes", "derm.groups", "derm.preprocess", "derm.precision",
             "derm.provenance")


def check_interface(model, golden):
    """Returns a list of problems with the graph's inputs, outputs and metadata."""
    problems = []
    g = model.graph
    shape = golden["input_shape"]
    classes = len(golden["logits"][0])

    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim]

    inits = {t.name for t in g.initializer}
    inputs = [v for v in g.input if v.name not in inits]
    if [v.name for v in inputs] != ["input"] or dims(inputs[0]) != [1] + shape[1:]:
        problems.append(f"graph input {[(v.name, dims(v)) for v in inputs]}, "
                        f"expected input {[1] + shape[1:]}")
    if [v.name for v in g.output] != ["logits"] or dims(g.output[0]) != [1, classes]:
        problems.append(f"graph output {[(v.name, dims(v)) for v in g.output]}, "
                        f"expected logits [1, {classes}]")
    for v in list(g.input) + list(g.output):
        if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            problems.append(f"{v.name} is not float")
    meta = {p.key: p.value for p in model.metadata_props}
    for key in META_KEYS:
        if key not in meta:
            problems.append(f"metadata_props has no {key}")
    if "derm.classes" in meta and len(json.loads(meta["derm.classes"])) != classes:
        problems.append(f"derm.classes {meta['derm.classes']} has not {classes} names")
    if "derm.preprocess" in meta:
        pre = json.loads(meta["derm.preprocess"])
        if pre.get("resize") != shape[2:]:
            problems.append(f"derm.preprocess resize {pre.get('resize')}, input is {shape[2:]}")
    return problems


def run(path, x, level):
    opts = ort.SessionOptions()
    opts.graph_optimization_level = level
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(["logits"], {"input": xi[None]})[0][0] for xi in x])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("onnx", help="the .onnx file")
    ap.add_argument("golden", help="golden JSON from derm-codegen onnx --golden-json")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="bound on max |diff| / logit range per sample (default 1e-4)")
    args = ap.parse_args()

    model = onnx.load(args.onnx)
    onnx.checker.check_model(model, full_check=True)
    with open(args.golden) as f:
        golden = json.load(f)
    problems = check_interface(model, golden)
    if problems:
        # The golden samples would not even fit the graph: report that alone.
        for p in problems:
            print(f"FAIL: {p}", file=sys.stderr)
        return 1

    n, c, h, w = golden["input_shape"]
    x = np.asarray(golden["inputs"], dtype=np.float32).reshape(n, c, h, w)
    want = np.asarray(golden["logits"], dtype=np.float32)
    ops = {}
    for node in model.graph.node:
        ops[node.op_type] = ops.get(node.op_type, 0) + 1
    print(f"{args.onnx}: onnx {onnx.__version__} checker OK (full_check), ir_version "
          f"{model.ir_version}, opset {model.opset_import[0].version}, "
          f"{len(model.graph.node)} nodes {dict(sorted(ops.items()))}")
    print(f"onnxruntime {ort.__version__}, CPUExecutionProvider, {n} golden samples "
          f"[{c}, {h}, {w}], {want.shape[1]} classes")

    worst = 0.0
    for label, level in (("all optimizations", ort.GraphOptimizationLevel.ORT_ENABLE_ALL),
                         ("no optimizations", ort.GraphOptimizationLevel.ORT_DISABLE_ALL)):
        got = run(args.onnx, x, level)
        for i in range(n):
            diff = float(np.max(np.abs(got[i] - want[i])))
            rng = float(np.max(want[i]) - np.min(want[i]))
            rel = diff / max(rng, np.finfo(np.float32).tiny)
            worst = max(worst, rel)
            print(f"  {label}: sample {i}: max |diff| {diff:.3e}, logit range {rng:.3e}, "
                  f"relative {rel:.3e}")
            if not np.all(np.isfinite(got[i])):
                problems.append(f"{label}: sample {i}: non-finite logits {got[i]}")
    print(f"worst relative difference: {worst:.3e} (bound {args.tol:g})")
    if worst > args.tol:
        problems.append(f"worst relative difference {worst:.3e} exceeds {args.tol:g}")
    for p in problems:
        print(f"FAIL: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
