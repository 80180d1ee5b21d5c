"""Training recipes side by side: several `ml.training.train` runs (and ensembles of them) in one go.

    # here: pack the cached train + validation chips (JPEG, about 40 MB), never the test split
    .venv/bin/python -m bench.train_sweep pack --data ../shared/data/utkface/images --out .device/chips.npz
    # on a GPU machine (or here, slowly): run the recipes, several at once, within a time budget
    python3 -m bench.train_sweep run --chips .device/chips.npz --out $OUT --minutes 7

Each recipe is a `TrainConfig`; results (validation MAE per epoch, calibrated MAE, coverage, by
band) go to `sweep.json`, the run folders without weights to `runs.tar.gz`, and the best weights
beside them. The packed chips are JPEG-compressed (quality 85, mean error about 2 grey levels),
so figures differ slightly from training on the raw cache.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing as mp
import shutil
import tarfile
import time
import traceback
from pathlib import Path

import numpy as np

from ml.training.chips import ChipSet
from ml.training.train import AUGMENTATIONS, TrainConfig

STRONG = AUGMENTATIONS["strong"]


def recipes() -> dict[str, TrainConfig]:
    r = "resnet10"

    def base(**kw: object) -> TrainConfig:
        return TrainConfig.for_arch(r, **{"epochs": 12, "weight_decay": 0.05, "ema": 0.998, **kw})

    out = {
        "r10-e8": TrainConfig.for_arch(r, epochs=8),
        "r10-e12-ema": TrainConfig.for_arch(r, epochs=12, ema=0.998),
        "r10-e16-strong-ema": TrainConfig.for_arch(r, epochs=16, ema=0.998, augmentation=STRONG),
        "r10-e16-strong-ema-s1": TrainConfig.for_arch(r, epochs=16, ema=0.998, augmentation=STRONG, seed=1),
        "r10-e16-strong-ema-s2": TrainConfig.for_arch(r, epochs=16, ema=0.998, augmentation=STRONG, seed=2),
        "r10-e24-strong-ema": TrainConfig.for_arch(r, epochs=24, ema=0.998, augmentation=STRONG),
        "r10-e16-lr5e-4-ema": TrainConfig.for_arch(r, epochs=16, lr=5e-4, ema=0.998, augmentation=STRONG),
        "r10-e12-sigma4-ema": TrainConfig.for_arch(r, epochs=12, sigma=4.0, ema=0.998),
        "r10-e12-wd0.05-ema": TrainConfig.for_arch(r, epochs=12, weight_decay=0.05, ema=0.998),
        "r10-e12-batch64-ema": TrainConfig.for_arch(r, epochs=12, batch=64, ema=0.998),
        "r10-e12-wd0.1-ema": TrainConfig.for_arch(r, epochs=12, weight_decay=0.1, ema=0.998),
        "r10-e12-wd0.2-ema": TrainConfig.for_arch(r, epochs=12, weight_decay=0.2, ema=0.998),
        "r10-e16-wd0.1-strong-ema": TrainConfig.for_arch(r, epochs=16, weight_decay=0.1, ema=0.998,
                                                         augmentation=STRONG),
        "r10-e12-wd0.05-ema-s1": TrainConfig.for_arch(r, epochs=12, weight_decay=0.05, ema=0.998, seed=1),
        "r10-e12-wd0.05-ema-s2": TrainConfig.for_arch(r, epochs=12, weight_decay=0.05, ema=0.998, seed=2),
        "r10-e12-sigma2-wd0.05-ema": TrainConfig.for_arch(r, epochs=12, sigma=2.0, weight_decay=0.05, ema=0.998),
        "r10-e12-wd0.05-ema0.999": TrainConfig.for_arch(r, epochs=12, weight_decay=0.05, ema=0.999),
        "r10-e10-wd0.05-lr2e-3-b256-ema": TrainConfig.for_arch(r, epochs=10, weight_decay=0.05, lr=2e-3, batch=256,
                                                               ema=0.998),
        "r10-e12-wd0.05-ema-aux": base(aux=0.5),
        "r10-e12-wd0.05-ema-slope": base(sigma=1.5, sigma_slope=0.05),
        "r10-e12-wd0.05-ema-mixup": base(mixup=0.2),
        "r10-e12-wd0.05-ema-deep2": base(extra_blocks=2),
        "r10-e12-wd0.05-ema-combo": base(aux=0.5, sigma=1.5, sigma_slope=0.05, extra_blocks=2),
        "r10-e12-wd0.05-ema-combo-s1": base(aux=0.5, sigma=1.5, sigma_slope=0.05, extra_blocks=2, seed=1),
        "r10-e16-wd0.05-ema-deep2-strong": base(epochs=16, extra_blocks=2, augmentation=STRONG),
        "r10-e12-wd0.05-ema-mixup-aux": base(mixup=0.2, aux=0.5),
        "vgg-64-e20": TrainConfig.for_arch("vgg", epochs=20, input_size=64),
        "vgg-128-e12": TrainConfig.for_arch("vgg", epochs=12, input_size=128),
    }
    return out


def pack(data: list[Path], out: Path, quality: int = 85) -> None:
    from PIL import Image

    from ml.training.train import load_data

    train, val = load_data(TrainConfig(data=[str(d) for d in data]))
    arrays = {}
    for name, c in (("train", train), ("val", val)):
        blobs = []
        for chip in c.chips:
            buf = io.BytesIO()
            Image.fromarray(chip).save(buf, "JPEG", quality=quality)
            blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
        arrays[f"{name}_jpeg"] = np.concatenate(blobs)
        arrays[f"{name}_offsets"] = np.cumsum([0] + [len(b) for b in blobs])
        for field in ("ages", "genders", "races"):
            arrays[f"{name}_{field}"] = getattr(c, field)
        arrays[f"{name}_names"] = c.names.astype(str)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, **arrays)
    print(f"{out}: {out.stat().st_size / 1e6:.1f} MB, train {len(train)}, validation {len(val)}")


def unpack(path: Path) -> tuple[ChipSet, ChipSet]:
    from PIL import Image

    z = np.load(path)
    sets = []
    for name in ("train", "val"):
        raw, off = z[f"{name}_jpeg"], z[f"{name}_offsets"]
        chips = np.stack([np.asarray(Image.open(io.BytesIO(raw[off[i]:off[i + 1]].tobytes())))
                          for i in range(len(off) - 1)])
        sets.append(ChipSet(z[f"{name}_names"].astype(object), chips, z[f"{name}_ages"], z[f"{name}_genders"],
                            z[f"{name}_races"], []))
    return sets[0], sets[1]


def _one(name: str, cfg: TrainConfig, chips: Path, out: Path, threads: int) -> None:
    import torch

    from ml.training.train import train

    torch.set_num_threads(threads)
    torch.backends.cudnn.benchmark = True
    cfg.out = str(out / name)
    cfg.version = name
    try:
        train(cfg, data=unpack(chips))
    except Exception:
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "error.txt").write_text(traceback.format_exc())
        traceback.print_exc()


def ensemble_mae(runs: list[Path], val: ChipSet) -> dict[str, float]:
    """Validation MAE and coverage of the average of the runs' calibrated distributions."""
    import torch

    from ml.training.agemodel import load_age_model, summarise

    models = [load_age_model(r / "model.safetensors") for r in runs]
    faces = val.centre(64)
    width = max(m.net.num_classes for m in models)
    probs = torch.zeros(len(faces), width, dtype=torch.float64)
    for m in models:
        p = m.probabilities(faces).double()
        probs[:, : p.shape[1]] += p / len(models)
    est = summarise(probs, models[0].net.ages if models[0].net.num_classes == width else
                    next(m.net.ages for m in models if m.net.num_classes == width))
    pred = np.array([e.age for e in est])
    low = np.array([e.low for e in est])
    high = np.array([e.high for e in est])
    return {"mae": float(np.abs(pred - val.ages).mean()),
            "coverage": float(((val.ages >= low) & (val.ages <= high)).mean())}


def run(chips: Path, out: Path, minutes: float, parallel: int, only: list[str] | None,
        epochs: int | None = None) -> None:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    runs_dir = Path("/tmp/sweep-runs") if out.name != "runs" else out
    todo = {k: v for k, v in recipes().items() if not only or k in only}
    for cfg in todo.values():
        cfg.epochs = epochs or cfg.epochs
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"{len(todo)} recipes on {device}"
          + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "") + f", {parallel} at a time")
    ctx = mp.get_context("spawn")
    start = time.time()
    active: list[tuple[str, mp.Process]] = []
    queue = list(todo.items())
    while queue or active:
        active = [(n, p) for n, p in active if p.is_alive()]
        while queue and len(active) < parallel and time.time() - start < minutes * 60:
            name, cfg = queue.pop(0)
            p = ctx.Process(target=_one, args=(name, cfg, chips, runs_dir, max(1, 16 // parallel)))
            p.start()
            active.append((name, p))
            print(f"{time.time() - start:6.0f} s: started {name}", flush=True)
        if queue and time.time() - start >= minutes * 60:
            print(f"time budget spent: not started {[n for n, _ in queue]}")
            queue = []
        if time.time() - start > minutes * 60 * 1.3:  # a run that outlives the budget by far is stopped
            for n, p in active:
                print(f"stopping {n}")
                p.terminate()
        time.sleep(2)

    results = {}
    for name in todo:
        summary = runs_dir / name / "summary.json"
        if summary.exists():
            results[name] = json.loads(summary.read_text())
            metrics = (runs_dir / name / "metrics.csv").read_text()
            results[name]["metrics_csv"] = metrics
        elif (runs_dir / name / "error.txt").exists():
            results[name] = {"error": (runs_dir / name / "error.txt").read_text()[-2000:]}
    _, val = unpack(chips)
    done = {n: r for n, r in results.items() if "calibrated_val_mae" in r and n.startswith("r10")}
    for family in ("r10-e16-strong-ema", "r10-e12-wd0.05-ema"):
        seeds = [runs_dir / n for n in done if n == family or n.startswith(family + "-s")]
        if len(seeds) > 1:
            results[f"ensemble: {family} seeds"] = ensemble_mae(seeds, val)
    top = sorted(done, key=lambda n: done[n]["calibrated_val_mae"])[:3]
    if len(top) > 1:
        results[f"ensemble: top {len(top)} {top}"] = ensemble_mae([runs_dir / n for n in top], val)
    (out / "sweep.json").write_text(json.dumps(results, indent=2, default=str))
    for name, r in results.items():
        if "calibrated_val_mae" in r:
            print(f"{name:28} best {r['best_val_mae']:.3f} calibrated {r['calibrated_val_mae']:.3f} "
                  f"coverage {r['val_coverage']:.3f} mirror {r['mirror']:.0f} T {r['temperature']:.2f} "
                  f"{r['minutes_per_epoch']:.2f} min/epoch")
        else:
            print(f"{name:28} {r}")
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for f in runs_dir.rglob("*"):
            if f.is_file() and f.suffix not in (".pt", ".safetensors"):
                tar.add(f, arcname=str(f.relative_to(runs_dir)))
    # the five best ResNet weights come back; the VGG's (30+ MB) do not: only its figures are needed
    for name in sorted(done, key=lambda n: done[n]["calibrated_val_mae"])[:5]:
        shutil.copy(runs_dir / name / "model.safetensors", out / f"{name}.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pack")
    p.add_argument("--data", type=Path, action="append", required=True)
    p.add_argument("--out", type=Path, default=Path(".device/chips.npz"))
    r = sub.add_parser("run")
    r.add_argument("--chips", type=Path, default=Path(".device/chips.npz"))
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--minutes", type=float, default=7.0, help="no recipe starts after this")
    r.add_argument("--parallel", type=int, default=6)
    r.add_argument("--only", nargs="*", help="recipe names (default: all)")
    r.add_argument("--epochs", type=int, default=None, help="override every recipe's epochs (a smoke test)")
    args = parser.parse_args()
    if args.command == "pack":
        pack(args.data, args.out)
    else:
        run(args.chips, args.out, args.minutes, args.parallel, args.only, args.epochs)


if __name__ == "__main__":
    main()
