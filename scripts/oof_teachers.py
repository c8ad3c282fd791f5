#!/usr/bin/env python3
"""Out-of-fold teacher logits for `derm-train distill --teacher-logits`, trained on a CUDA GPU.

A teacher only helps distillation if its soft targets say something the labels do not. A
teacher that trained on the very images it scores gives near one-hot targets on them
(docs/results.md, "Distillation from an ensemble of students"). This script trains
ImageNet-initialised MobileNetV3-Small teachers (torchvision) with folds held out and gives
every training image the logits of a teacher that never saw it:

* `train`: for every set E of held-out folds in `--holdouts` (default: each single fold and
  each pair of folds of the k-fold split), trains one teacher on the images of the other folds
  and scores the held-out images with the 8 dihedral views averaged. Writes one bundle,
  `oof-logits.safetensors` (tensor `ex<E>` = [N, C] logits, rows outside E zero; tensor
  `ex<E>_present` = u8 [N]), and `oof-teachers.json` (per teacher: folds, images, epochs,
  seconds, and accuracy / balanced accuracy on each held-out fold). The bundle is rewritten
  after every finished teacher, so a run cut short keeps what it finished.
* `assemble`: turns the bundle into derm-train teacher-logits files:
  `--eval-fold V` gives each training image of fold V's run (fold F != V) the logits of the
  teacher that held out {V, F}: neither V's images nor its own were seen, so scoring the
  student on fold V stays honest. `--all` (for `distill --train-on-val`) gives each image of
  fold F the logits of the teacher that held out F alone.
* `score`: accuracy, balanced accuracy, per-group accuracy and fairness of the single-fold
  teachers on their held-out folds (a k-fold cross-validation of the teacher itself).

The same `train` also makes a model to ship and its honest estimate: `--holdouts "none;0;1;2;3;4"`
trains one network on every image (`none`, key `all`) and one per held-out fold, `--tta none`
scores the held-out images with one view as the runtime does, `--ema DECAY` keeps and scores a
moving average of the weights, and `--save-weights` writes each network as a torchvision
`state_dict` (`<out>/weights/<key>.safetensors`) for `derm-train import`.

The images, labels, folds and row order come from derm-train's own cache index and split
report, so rows line up with the cache `distill` reads:

    derm-train prepare ... --size 150 --out target/data/ham-150
    derm-train split --cache target/data/ham-150 --k 5 --seed 0   # -> folds-k5-seed0.json
    python3 scripts/oof_teachers.py train --index target/data/ham-150/index.json \
        --folds target/data/ham-150/folds-k5-seed0.json --images ../shared/data/ham10000/images \
        --weights ../shared/weights/mobilenet_v3_small_imagenet.safetensors --out target/oof
    python3 scripts/oof_teachers.py assemble --bundle target/oof/oof-logits.safetensors \
        --index target/data/ham-150/index.json --folds target/data/ham-150/folds-k5-seed0.json \
        --eval-fold 0 --out target/oof/tl-oof-f0.safetensors
    derm-train distill --teacher-logits target/oof/tl-oof-f0.safetensors --fold 0 ...

Needs PyTorch, torchvision, safetensors, numpy and Pillow (`train`); `assemble` and `score`
need only numpy and safetensors. Everything runs on CPU too (slowly; `--device cpu`), which the
`--smoke` flag uses for a check in seconds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from pathlib import Path

try:
    import numpy as np
except ImportError:
    sys.exit("oof_teachers.py needs numpy and safetensors (and for `train` torch, torchvision and "
             "Pillow): pip install numpy safetensors")

LOGITS_METADATA_KEY = "derm.teacher_logits"


def load_index(path: Path) -> dict:
    idx = json.loads(path.read_text())
    if idx.get("format") != "derm-cache":
        sys.exit(f"{path}: not a derm-train cache index (format {idx.get('format')!r})")
    return idx


def load_fold_of(path: Path, samples: int) -> np.ndarray:
    """Fold number of every cache sample, from `derm-train split`'s report."""
    rep = json.loads(path.read_text())
    rep = rep.get("result", rep)  # derm-train reports wrap their payload in "result"
    if "folds" not in rep:
        sys.exit(f"{path}: no \"folds\" (expected `derm-train split`'s report)")
    fold_of = np.full(samples, -1, dtype=np.int64)
    for f, fold in enumerate(rep["folds"]):
        for i in fold["val"]:
            if not 0 <= i < samples:
                sys.exit(f"{path}: fold {f} names sample {i}, the cache has {samples}")
            if fold_of[i] != -1:
                sys.exit(f"{path}: sample {i} is in folds {fold_of[i]} and {f}")
            fold_of[i] = f
    missing = int((fold_of < 0).sum())
    if missing:
        sys.exit(f"{path}: {missing} cache samples are in no validation fold")
    return fold_of


def load_split(index_path: Path, folds_path: Path) -> tuple[dict, np.ndarray, int]:
    """The cache index, every sample's fold, and the number of folds."""
    index = load_index(index_path)
    fold_of = load_fold_of(folds_path, len(index["samples"]))
    return index, fold_of, int(fold_of.max()) + 1


def labels_groups(index: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` samples' class and group indices."""
    samples = index["samples"][:n]
    return (np.array([s["label"] for s in samples], dtype=np.int64),
            np.array([s["group"] for s in samples], dtype=np.int64))


def key_of(holdout: tuple[int, ...]) -> str:
    """`ex<folds>` for a model that held folds out; `all` for one trained on every image."""
    return "ex" + "".join(str(f) for f in sorted(holdout)) if holdout else "all"


def parse_holdouts(text: str, k: int) -> list[tuple[int, ...]]:
    """`singles,pairs` (the default) or explicit sets like `0,1;0,2`; `none` is a model
    trained on every image (nothing held out: the one to ship)."""
    out: list[tuple[int, ...]] = []
    for part in text.split(";"):
        part = part.strip()
        if part in ("singles,pairs", "default"):
            # Fold 0's evaluation first (the pairs holding out 0), then the single folds (the
            # shipped model's teachers and the teachers' own cross-validation), then the other
            # pairs: a run cut short keeps the most useful complete sets.
            pairs = list(itertools.combinations(range(k), 2))
            out += [p for p in pairs if 0 in p]
            out += [(f,) for f in range(k)]
            out += [p for p in pairs if 0 not in p]
        elif part == "singles":
            out += [(f,) for f in range(k)]
        elif part == "pairs":
            out += list(itertools.combinations(range(k), 2))
        elif part == "none":
            out.append(())
        elif part:
            fs = tuple(sorted(int(x) for x in part.split(",")))
            if any(not 0 <= f < k for f in fs) or len(set(fs)) != len(fs):
                sys.exit(f"--holdouts: {part!r} is not a set of folds in 0..{k - 1}")
            out.append(fs)
    seen = []
    for h in out:
        if h not in seen:
            seen.append(h)
    return seen


# ---------------------------------------------------------------------------------------------
# train
# ---------------------------------------------------------------------------------------------


def decode_tiles(index: dict, images: Path, limit: int | None) -> np.ndarray:
    """Every sample's centred square, as `derm-train prepare` keeps it (HWC u8)."""
    from PIL import Image

    size = index["image_size"]
    samples = index["samples"][:limit] if limit else index["samples"]
    out = np.empty((len(samples), size, size, 3), dtype=np.uint8)
    for i, s in enumerate(samples):
        p = images / Path(s["source"]).name
        try:
            im = Image.open(p).convert("RGB")
        except OSError as e:
            sys.exit(f"{p}: cannot decode ({e})")
        w, h = im.size
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        im = im.crop((left, top, left + side, top + side))
        if side != size:
            im = im.resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(im)
    return out


def build_model(weights: Path | None, classes: int, calib, device, torch, seed: int):
    """torchvision MobileNetV3-Small from the ImageNet file, BatchNorm re-estimated with the
    pretrained function kept (as `derm-train --bn-init preserve`), new `classifier.3`."""
    import torchvision
    from safetensors.torch import load_file

    torch.manual_seed(seed)
    m = torchvision.models.mobilenet_v3_small(num_classes=1000)
    if weights is not None:
        sd = load_file(str(weights))
        m.load_state_dict(sd, strict=True)
        # The file's BatchNorm layers are folded identities (placeholder statistics): in eval
        # mode the network computes the pretrained function, so one eval pass measures every
        # layer's real input statistics under that function at once. Setting
        # gamma' = sqrt(var + eps), beta' = beta + mean keeps the function in eval mode and,
        # up to batch noise, in train mode.
        m.eval().to(device)
        bns = [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]
        stats = {}

        def hook(mod, inp, _out):
            x = inp[0].float()
            mu = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            stats[mod] = (mu, var)

        hs = [b.register_forward_hook(hook) for b in bns]
        with torch.no_grad():
            m(calib)
        for h in hs:
            h.remove()
        with torch.no_grad():
            for b in bns:
                mu, var = stats[b]
                a = b.weight / torch.sqrt(b.running_var + b.eps)
                c = b.bias - b.running_mean * a
                b.running_mean.copy_(mu)
                b.running_var.copy_(var)
                b.weight.copy_(a * torch.sqrt(var + b.eps))
                b.bias.copy_(c + a * mu)
    m.classifier[3] = torch.nn.Linear(m.classifier[3].in_features, classes)
    return m.to(device)


def prep_eval(u8, size: int, torch):
    """[B,S,S,3] u8 -> [B,3,size,size] in [-1, 1] (the ImageNet file's input range)."""
    import torch.nn.functional as F

    x = u8.permute(0, 3, 1, 2).float() / 255.0
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                          antialias=x.shape[-1] > size)
    return x * 2.0 - 1.0


def augment(u8, size: int, gen, torch, crop_scale=(0.35, 1.0), jitter=0.1):
    """Batched on the device: a random dihedral symmetry, a random resized crop (area
    `crop_scale`, aspect 3/4..4/3) and brightness / contrast / saturation jitter."""
    import torch.nn.functional as F

    b = u8.shape[0]
    dev = u8.device
    x = u8.permute(0, 3, 1, 2).float() / 255.0

    def rand(*shape):
        return torch.rand(*shape, generator=gen, device=dev)

    area = crop_scale[0] + (crop_scale[1] - crop_scale[0]) * rand(b)
    logr = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * rand(b)
    w = torch.sqrt(area * torch.exp(logr)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(logr)).clamp(max=1.0)
    cx = (1 - w) * (2 * rand(b) - 1)
    cy = (1 - h) * (2 * rand(b) - 1)
    # Dihedral: a rotation by k * 90 degrees, then an optional mirror.
    k = torch.randint(0, 4, (b,), generator=gen, device=dev)
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=dev)[k]
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=dev)[k]
    flip = torch.where(rand(b) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, device=dev)
    theta[:, 0, 0] = w * cos * flip
    theta[:, 0, 1] = -w * sin
    theta[:, 1, 0] = h * sin * flip
    theta[:, 1, 1] = h * cos
    theta[:, 0, 2] = cx
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter > 0:
        def factor():
            return (1 - jitter + 2 * jitter * rand(b)).view(b, 1, 1, 1)

        x = x * factor()
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = (x - gray.mean(dim=(2, 3), keepdim=True)) * factor() + gray.mean(dim=(2, 3), keepdim=True)
        gray = (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])
        x = gray + (x - gray) * factor()
        x = x.clamp(0, 1)
    return x * 2.0 - 1.0


def dihedral_views(x, torch):
    for k in range(4):
        r = torch.rot90(x, k, dims=(2, 3))
        yield r
        yield torch.flip(r, dims=(3,))


def train_one(job: dict, shared: dict, torch) -> dict:
    """Trains the teacher that holds out `job['holdout']`; returns its held-out logits."""
    dev = torch.device(shared["device"])
    tiles = shared["tiles"]
    labels = shared["labels"]
    fold_of = shared["fold_of"]
    classes = shared["classes"]
    hold = set(job["holdout"])
    train_rows = np.array([i for i in range(len(labels)) if fold_of[i] not in hold], dtype=np.int64)
    held_rows = np.array([i for i in range(len(labels)) if fold_of[i] in hold], dtype=np.int64)
    size, bs, epochs = shared["size"], shared["batch_size"], shared["epochs"]
    seed = shared["seed"] * 1000 + sum(10 ** j * (f + 1) for j, f in enumerate(sorted(hold)))
    gen = torch.Generator(device=dev)
    gen.manual_seed(seed)
    # BatchNorm statistics from 256 un-augmented training images at the teacher's size.
    pick = torch.randperm(len(train_rows), generator=gen, device=dev)[:256]
    calib = prep_eval(tiles[torch.as_tensor(train_rows, device=dev)[pick]], size, torch)
    model = build_model(shared["weights"], classes, calib, dev, torch, seed)
    model = model.to(memory_format=torch.channels_last)
    counts = np.bincount(labels[train_rows], minlength=classes).astype(np.float64)
    # `--class-weights sqrt`: the square root of inverse-frequency weights that average 1.
    w = np.where(counts > 0, counts.sum() / (classes * np.maximum(counts, 1)), 0.0) ** 0.5
    crit = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32, device=dev))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": shared["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=shared["lr"])
    steps_per_epoch = len(train_rows) // bs
    total = steps_per_epoch * epochs
    warm = max(1, total // 20)

    def lr_at(step):
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    y_all = torch.as_tensor(labels, device=dev)
    rows_t = torch.as_tensor(train_rows, device=dev)
    amp = dev.type == "cuda"
    ema_decay = shared.get("ema", 0.0)
    if ema_decay:
        # An exponential moving average of every float tensor, BatchNorm statistics
        # included; `state_dict` tensors share storage with the live ones, so `live` follows
        # the optimizer.
        live = [t for t in model.state_dict().values() if t.is_floating_point()]
        ema = [t.detach().clone() for t in live]
    step = 0
    t0 = time.time()
    last_loss = None
    for epoch in range(epochs):
        model.train()
        perm = rows_t[torch.randperm(len(rows_t), generator=gen, device=dev)]
        for s in range(steps_per_epoch):
            idx = perm[s * bs:(s + 1) * bs]
            x = augment(tiles[idx], size, gen, torch).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
                loss = crit(model(x).float(), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema_decay:
                # The usual warm-up, so the random start does not linger in the average.
                d = min(ema_decay, (1 + step) / (10 + step))
                with torch.no_grad():
                    torch._foreach_lerp_(ema, live, 1 - d)
        # One host sync per epoch, not per step.
        last_loss = float(loss.detach())
        if shared["deadline"] and time.time() > shared["deadline"]:
            return {"holdout": job["holdout"], "error": f"deadline reached after epoch {epoch + 1}"}
    train_s = time.time() - t0
    model.eval()
    raw_logits = None
    if ema_decay:
        raw_logits = score_held(model, tiles, held_rows, len(labels), classes, size, shared, torch)
        with torch.no_grad():
            for t, e in zip(live, ema):
                t.copy_(e)
    if shared.get("weights_dir"):
        save_weights(model, Path(shared["weights_dir"]) / f"{key_of(tuple(job['holdout']))}.safetensors",
                     {"holdout": sorted(hold), "train_images": int(len(train_rows)),
                      "seed": seed, **shared["config"]})
    logits = score_held(model, tiles, held_rows, len(labels), classes, size, shared, torch)
    return {
        "holdout": job["holdout"],
        "train_images": int(len(train_rows)),
        "held_images": int(len(held_rows)),
        "epochs": epochs,
        "train_seconds": round(train_s, 1),
        "images_per_second": round(len(train_rows) * epochs / train_s, 1),
        "last_batch_loss": last_loss,
        "logits": logits,
        "raw_logits": raw_logits,
        "held_rows": held_rows,
    }


def score_held(model, tiles, held_rows, n, classes, size, shared, torch):
    """Logits of the held-out rows (zero elsewhere), in f32 without autocast, as derm-train
    and the runtime compute: the held-out numbers are those of the exported model, up to the
    CPU's summation order."""
    logits = np.zeros((n, classes), dtype=np.float32)
    held_t = torch.as_tensor(held_rows, device=tiles.device)
    views = shared.get("tta", "dihedral") == "dihedral"
    with torch.no_grad():
        for s in range(0, len(held_rows), 256):
            x = prep_eval(tiles[held_t[s:s + 256]], size, torch).contiguous(memory_format=torch.channels_last)
            if views:
                out = sum(model(v).float() for v in dihedral_views(x, torch)) / 8
            else:
                out = model(x).float()
            logits[held_rows[s:s + 256]] = out.cpu().numpy()
    return logits


def save_weights(model, path: Path, meta: dict):
    """The trained network as a torchvision `state_dict` in safetensors (f32, BatchNorm
    statistics included), for `derm-train import`; `meta` goes under `derm.torchvision_student`."""
    from safetensors.torch import save_file

    sd = {k: v.detach().float().cpu().contiguous() if v.is_floating_point() else v.detach().cpu()
          for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"derm.torchvision_student": json.dumps(meta)})
    os.replace(tmp, path)


def worker(jobs, results, shared_cfg: dict):
    import torch

    torch.backends.cudnn.benchmark = True
    dev = torch.device(shared_cfg["device"])
    tiles = torch.from_numpy(np.load(shared_cfg["tiles_path"])).to(dev)
    shared = dict(shared_cfg, tiles=tiles)
    while True:
        job = jobs.get()
        if job is None:
            return
        if shared["deadline"] and time.time() > shared["deadline"] - shared["min_job_s"]:
            results.put({"holdout": job["holdout"], "error": "not started: too close to the deadline"})
            continue
        try:
            results.put(train_one(job, shared, torch))
        except Exception as e:  # reported per teacher; the other teachers still run
            results.put({"holdout": job["holdout"], "error": f"{type(e).__name__}: {e}"})


def write_bundle(out: Path, done: dict, report: dict):
    from safetensors.numpy import save_file

    tensors = {}
    for key, r in done.items():
        if len(r["held_rows"]) == 0:
            continue  # a model trained on every image has nothing out of fold
        tensors[key] = r["logits"]
        present = np.zeros(r["logits"].shape[0], dtype=np.uint8)
        present[r["held_rows"]] = 1
        tensors[key + "_present"] = present
    tmp = out / "oof-logits.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"derm.oof_teachers": json.dumps(report["config"])})
    os.replace(tmp, out / "oof-logits.safetensors")
    tmp = out / "oof-teachers.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, out / "oof-teachers.json")


def held_scores(r: dict, labels, groups, fold_of, group_names, classes) -> dict:
    """Accuracy and balanced accuracy of one teacher on each fold it held out."""
    out = {}
    pred = r["logits"].argmax(1)
    for f in sorted(set(fold_of[r["held_rows"]].tolist())):
        rows = np.where(fold_of == f)[0]
        out[str(f)] = metrics(pred[rows], labels[rows], groups[rows], group_names, classes)
    return out


def cmd_train(a):
    import multiprocessing as mp

    import torch

    index, fold_of, k = load_split(a.index, a.folds)
    holdouts = parse_holdouts(a.holdouts, k)
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tiles = decode_tiles(index, a.images, a.limit)
    n = tiles.shape[0]
    labels, groups = labels_groups(index, n)
    fold_of = fold_of[:n]
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="oof-teachers-"))
    tiles_path = scratch / "tiles.npy"
    np.save(tiles_path, tiles)
    classes = len(index["class_names"])
    print(f"decoded {n} images in {time.time() - t0:.1f} s; {len(holdouts)} teachers, "
          f"{a.workers} worker(s) on {a.device}", flush=True)
    config = {
        "index": str(a.index), "folds": str(a.folds), "images": str(a.images),
        "weights": str(a.weights) if a.weights else None, "samples": n, "k": k,
        "size": a.size, "epochs": a.epochs, "batch_size": a.batch_size, "lr": a.lr,
        "weight_decay": a.weight_decay, "seed": a.seed, "augment": "dihedral, crop 0.35-1, jitter 0.1",
        "class_weights": "sqrt",
        "tta": "dihedral (8 views, logits averaged)" if a.tta == "dihedral" else "none (one view)",
        "eval_precision": "f32", "ema": a.ema,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else a.device,
    }
    shared_cfg = {
        "device": a.device, "tiles_path": str(tiles_path), "labels": labels, "fold_of": fold_of,
        "classes": classes, "size": a.size, "batch_size": a.batch_size, "epochs": a.epochs,
        "lr": a.lr, "weight_decay": a.weight_decay, "seed": a.seed, "weights": a.weights,
        "deadline": (t0 + a.deadline_s) if a.deadline_s else 0.0, "min_job_s": a.min_job_s,
        "tta": a.tta, "ema": a.ema, "weights_dir": str(a.out / "weights") if a.save_weights else "",
        "config": {kk: config[kk] for kk in ("size", "epochs", "batch_size", "lr", "weight_decay", "ema",
                                             "augment", "class_weights", "samples", "k", "folds")},
    }
    ctx = mp.get_context("spawn")
    jobs, results = ctx.Queue(), ctx.Queue()
    for h in holdouts:
        jobs.put({"holdout": list(h)})
    for _ in range(a.workers):
        jobs.put(None)
    procs = [ctx.Process(target=worker, args=(jobs, results, shared_cfg)) for _ in range(a.workers)]
    for p in procs:
        p.start()
    import queue

    done, report = {}, {"config": config, "teachers": []}
    for _ in holdouts:
        while True:
            try:
                r = results.get(timeout=5)
                break
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    r = None
                    break
        if r is None:
            print("every worker has exited with teachers unreported", flush=True)
            break
        key = key_of(tuple(r["holdout"]))
        entry = {k2: v for k2, v in r.items() if k2 not in ("logits", "raw_logits", "held_rows")}
        entry["key"] = key
        if "error" not in r:
            entry["held_out"] = held_scores(r, labels, groups, fold_of, index["group_names"], classes)
            if r["raw_logits"] is not None:
                # With --ema the weights and `held_out` are the average's; the last step's too.
                entry["held_out_last_step"] = held_scores(dict(r, logits=r["raw_logits"]), labels,
                                                          groups, fold_of, index["group_names"], classes)
            done[key] = r
            accs = ", ".join(f"fold {f}: {s['accuracy']:.3f} / {s['balanced_accuracy']:.3f}"
                             for f, s in entry["held_out"].items())
            if entry.get("held_out_last_step"):
                accs += " (last step: " + ", ".join(
                    f"{s['accuracy']:.3f} / {s['balanced_accuracy']:.3f}"
                    for s in entry["held_out_last_step"].values()) + ")"
            print(f"[{time.time() - t0:6.1f} s] teacher {key}: {r['train_seconds']} s, "
                  f"{r['images_per_second']} img/s; held out {accs or 'nothing'}", flush=True)
        else:
            print(f"[{time.time() - t0:6.1f} s] teacher {key}: {r['error']}", flush=True)
        report["teachers"].append(entry)
        report["seconds"] = round(time.time() - t0, 1)
        write_bundle(a.out, done, report)
    for p in procs:
        p.join()
    os.remove(tiles_path)
    scratch.rmdir()
    print(f"wrote {a.out / 'oof-logits.safetensors'} ({len(done)} of {len(holdouts)} teachers) "
          f"in {time.time() - t0:.1f} s", flush=True)
    return 0 if len(done) == len(holdouts) else 1


# ---------------------------------------------------------------------------------------------
# assemble / score
# ---------------------------------------------------------------------------------------------


def metrics(pred, y, g, group_names, classes) -> dict:
    recalls = [float((pred[y == c] == c).mean()) for c in range(classes) if (y == c).any()]
    per_group = {}
    for gi, name in enumerate(group_names):
        sel = g == gi
        if sel.any():
            per_group[name] = {"n": int(sel.sum()), "accuracy": float((pred[sel] == y[sel]).mean())}
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "per_group": per_group,
    }


def read_bundles(paths: list[Path]) -> dict:
    """The bundles' teachers; a key present in several bundles (the same held-out folds,
    another seed) becomes the average of their logits: an ensemble."""
    from safetensors.numpy import load_file

    loaded = []
    for path in paths:
        if not path.exists():
            sys.exit(f"{path}: no such bundle (run `train` first)")
        loaded.append(load_file(str(path)))
    keys = sorted({k for b in loaded for k in b if not k.endswith("_present")})
    out = {}
    for key in keys:
        have = [b for b in loaded if key in b]
        if len(have) != len(loaded):
            sys.exit(f"teacher {key} is in {len(have)} of {len(loaded)} bundles: "
                     "an ensemble needs it in each")
        out[key] = np.mean([b[key] for b in have], axis=0).astype(np.float32)
        out[key + "_present"] = np.minimum.reduce([b[key + "_present"] for b in have])
    return out


def cmd_assemble(a):
    from safetensors.numpy import save_file

    index, fold_of, k = load_split(a.index, a.folds)
    n = len(index["samples"])
    b = read_bundles(a.bundle)
    logits = np.zeros((n, len(index["class_names"])), dtype=np.float32)
    present = np.zeros(n, dtype=np.uint8)
    used = []
    for f in range(k):
        if a.eval_fold is not None and f == a.eval_fold:
            continue
        key = key_of((f,) if a.eval_fold is None else (f, a.eval_fold))
        if key not in b:
            sys.exit(f"{fmt(a.bundle)}: no teacher {key} (held out folds {key[2:]}); "
                     f"it has {sorted(x for x in b if not x.endswith('_present'))}")
        t, p = b[key], b[key + "_present"]
        if t.shape != logits.shape:
            sys.exit(f"{fmt(a.bundle)}: {key} has shape {t.shape}, the cache needs {logits.shape}")
        rows = fold_of == f
        if not p[rows].all():
            sys.exit(f"{fmt(a.bundle)}: {key} lacks logits for some images of fold {f}")
        logits[rows] = t[rows]
        present[rows] = 1
        used.append(key)
    meta = {
        "teacher": f"out-of-fold MobileNetV3-Small teachers {','.join(used)} from {fmt(a.bundle)}"
                   + (f" (logits averaged over {len(a.bundle)} bundles)" if len(a.bundle) > 1 else ""),
        "cache": str(Path(a.index).parent),
        "samples": n,
        "computed": int(present.sum()),
        "input_size": json.loads(read_meta(a.bundle[0])).get("size", 0),
        "seconds": 0.0,
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"logits": logits, "present": present}, str(a.out),
              metadata={LOGITS_METADATA_KEY: json.dumps(meta)})
    what = "every fold" if a.eval_fold is None else f"the training folds of fold {a.eval_fold}"
    print(f"wrote {a.out}: {int(present.sum())} of {n} rows ({what}) from {', '.join(used)}")
    return 0


def fmt(paths: list[Path]) -> str:
    return ", ".join(str(p) for p in paths)


def read_meta(path: Path) -> str:
    with open(path, "rb") as fh:
        hlen = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(hlen))
    return header.get("__metadata__", {}).get("derm.oof_teachers", "{}")


def cmd_score(a):
    index, fold_of, k = load_split(a.index, a.folds)
    b = read_bundles(a.bundle)
    labels, groups = labels_groups(index, len(index["samples"]))
    classes = len(index["class_names"])
    gnames = index["group_names"]
    excl = set(a.exclude_groups.split(",")) if a.exclude_groups else set()
    rows = []
    for f in range(k):
        key = key_of((f,))
        if key not in b:
            continue
        sel = fold_of == f
        pred = b[key][sel].argmax(1)
        m = metrics(pred, labels[sel], groups[sel], gnames, classes)
        # derm-train's ESFair scores (train/src/metrics.rs): the minority is the smallest
        # group left in; SPD = mean |acc_g - acc_minority|; fairness = (0.2 - SPD) / 0.2.
        kept = [(gnames.index(name), v) for name, v in m["per_group"].items() if name not in excl]
        if kept:
            _, minority = min(kept, key=lambda t: (t[1]["n"], t[0]))
            m["spd"] = float(np.mean([abs(v["accuracy"] - minority["accuracy"]) for _, v in kept]))
            m["fairness"] = max(0.0, (0.2 - m["spd"]) / 0.2)
        else:
            m["spd"] = m["fairness"] = None
        m["fold"] = f
        m["majority_accuracy"] = float((labels[sel] == np.bincount(labels).argmax()).mean())
        rows.append(m)
    if not rows:
        sys.exit(f"{fmt(a.bundle)}: no single-fold teacher to score")
    print("| fold | images | accuracy | balanced | majority | " + " | ".join(
        g for g in gnames if g not in excl) + " | SPD | fairness |")
    print("|---" * (7 + len([g for g in gnames if g not in excl])) + "|")
    for m in rows:
        gs = " | ".join(f"{m['per_group'][g]['accuracy']:.3f}" if g in m["per_group"] else "-"
                        for g in gnames if g not in excl)
        print(f"| {m['fold']} | {m['n']} | {m['accuracy']:.3f} | {m['balanced_accuracy']:.3f} | "
              f"{m['majority_accuracy']:.3f} | {gs} | {m['spd']:.3f} | {m['fairness']:.3f} |")
    acc = np.array([m["accuracy"] for m in rows])
    bal = np.array([m["balanced_accuracy"] for m in rows])
    sd = (lambda x: float(x.std(ddof=1)) if len(x) > 1 else 0.0)
    fair = np.array([m["fairness"] for m in rows], dtype=float)
    print(f"mean +/- sd over {len(rows)} folds: accuracy {acc.mean():.3f} +/- {sd(acc):.3f}, "
          f"balanced {bal.mean():.3f} +/- {sd(bal):.3f}, fairness {fair.mean():.3f} +/- {sd(fair):.3f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"bundles": [str(x) for x in a.bundle],
                                      "configs": [json.loads(read_meta(x)) for x in a.bundle],
                                      "exclude_groups": sorted(excl), "folds": rows}, indent=2))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(s):
        s.add_argument("--index", type=Path, required=True, help="the cache's index.json")
        s.add_argument("--folds", type=Path, required=True,
                       help="`derm-train split`'s report (folds-k<K>-seed<S>.json)")

    t = sub.add_parser("train", help="train the held-out teachers and score their held-out images")
    common(t)
    t.add_argument("--images", type=Path, required=True, help="folder of the source JPEGs")
    t.add_argument("--weights", type=Path, help="ImageNet MobileNetV3-Small safetensors "
                   "(torchvision names, inputs in [-1, 1]); without it, random init")
    t.add_argument("--out", type=Path, required=True,
                   help="folder for oof-logits.safetensors and oof-teachers.json")
    t.add_argument("--holdouts", default="singles,pairs",
                   help="`singles,pairs` (default), `singles`, `pairs`, `none` (every image), "
                        "or sets like `0,1;0,2`")
    t.add_argument("--size", type=int, default=224, help="teacher input side (default 224)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--batch-size", type=int, default=64)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--workers", type=int, default=1, help="teachers trained at once")
    t.add_argument("--device", default="cuda")
    t.add_argument("--deadline-s", type=float, default=0.0,
                   help="stop starting teachers (and abandon running ones) after this many seconds")
    t.add_argument("--min-job-s", type=float, default=0.0,
                   help="with --deadline-s: start no teacher this close to the deadline")
    t.add_argument("--limit", type=int, help="only the first N cache samples (smoke tests)")
    t.add_argument("--tta", choices=["dihedral", "none"], default="dihedral",
                   help="held-out logits: the 8 dihedral views averaged (teachers, default) or "
                        "the image alone (what a shipped model computes)")
    t.add_argument("--ema", type=float, default=0.0,
                   help="score and save an exponential moving average of the weights with this "
                        "decay per step (e.g. 0.998; 0 = off, the last step's weights)")
    t.add_argument("--save-weights", action="store_true",
                   help="also write each model's weights to <out>/weights/<key>.safetensors "
                        "(`ex<folds>`, `all` for --holdouts none) for `derm-train import`")
    a2 = sub.add_parser("assemble", help="a derm-train teacher-logits file from the bundle")
    common(a2)
    a2.add_argument("--bundle", type=Path, action="append", required=True,
                    help="a `train` bundle; give it several times (other seeds) for an ensemble")
    g = a2.add_mutually_exclusive_group(required=True)
    g.add_argument("--eval-fold", type=int, help="for `distill --fold V` (teachers that held out V too)")
    g.add_argument("--all", action="store_true", help="for `distill --train-on-val` (every image)")
    a2.add_argument("--out", type=Path, required=True, help="the teacher-logits file to write")
    s = sub.add_parser("score", help="cross-validated scores of the single-fold teachers")
    common(s)
    s.add_argument("--bundle", type=Path, action="append", required=True,
                   help="a `train` bundle; several are averaged (an ensemble)")
    s.add_argument("--exclude-groups", default="unknown", help="groups left out of the SPD")
    s.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    if a.cmd == "assemble" and a.all:
        a.eval_fold = None
    return {"train": cmd_train, "assemble": cmd_assemble, "score": cmd_score}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
