"""Command line: `python -m ml predict|batch|evaluate|split|train|ensemble|export ...`; `python -m ml -h` for help."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ml.paths import DEFAULT_AGE_WEIGHTS


def cmd_predict(args: argparse.Namespace) -> int:
    from ml.serving.images import ImageError
    from ml.serving.predictor import Predictor

    status = 0
    with Predictor.load(args.weights) as predictor:
        for photo in args.photos:
            try:
                result = predictor.predict(Path(photo).read_bytes())
            except (ImageError, OSError) as e:
                status = 1
                if args.json:
                    print(json.dumps({"file": photo, "error": getattr(e, "code", "unreadable"), "detail": str(e)}))
                else:
                    print(f"{photo}: {e}", file=sys.stderr)
                continue
            faces = [
                {
                    "box": {k: round(getattr(f.face.box, k)) for k in ("x", "y", "width", "height")},
                    "score": round(f.face.score, 3),
                    "age": round(f.age, 1),
                    "age_interval": [round(f.age_interval[0], 1), round(f.age_interval[1], 1)],
                }
                for f in result.faces
            ]
            if args.json:
                print(json.dumps({"file": photo, "width": result.width, "height": result.height,
                                  "model_version": result.model_version, "faces": faces}))
            elif not faces:
                print(f"{photo}: no face found")
            else:
                for i, f in enumerate(faces, 1):
                    b = f["box"]
                    lo, hi = f["age_interval"]
                    print(f"{photo}: face {i} at {b['x']},{b['y']} {b['width']}x{b['height']}: "
                          f"age {f['age']:.0f} (80% interval {lo:.0f}-{hi:.0f})")
    return status


def cmd_batch(args: argparse.Namespace) -> int:
    try:
        from ml import batch
    except ImportError as e:  # ray and pyarrow come with the optional extra
        print(f"python -m ml batch needs Ray: pip install -e '.[batch]' ({e})", file=sys.stderr)
        return 2
    try:
        batch.output_format(args.out)
        batch.check_inputs(args.inputs)
        summary = batch.run(args.inputs, args.out, weights=args.weights, address=args.address, actors=args.actors,
                            cpus=args.cpus,
                            max_bytes=args.max_bytes or batch.DEFAULT_MAX_BYTES, progress=not args.quiet)
    except (ValueError, FileNotFoundError) as e:
        print(f"python -m ml batch: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {summary.scored} photos scored in {summary.seconds:.1f} s ({summary.per_second:.1f} photos/s), "
          f"{summary.errors} with an error code; {summary.skipped} already there", file=sys.stderr)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from ml.training.evaluate import run

    run(args.folders, args.weights or [DEFAULT_AGE_WEIGHTS], split=args.split, workers=args.workers,
        coverage=args.coverage, json_out=args.json, degradations=tuple(args.degrade or ()))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from ml.paths import SPLIT_FILE
    from ml.training.data import load_split, scan

    samples, skipped = scan(args.folders)
    split = load_split(samples, args.folders, split_file=args.out if args.out.exists() else None)
    split.write(args.out)
    print(f"{args.out}: {split.counts()} ({skipped} files skipped for their names)")
    if args.out != SPLIT_FILE:
        print(f"(the default split file is {SPLIT_FILE})")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from ml.training.train import AUGMENTATIONS, TrainConfig, train

    cfg = TrainConfig.for_arch(
        args.arch, data=[str(d) for d in args.data], data_weights=args.data_weight or [],
        out=str(args.out or Path("runs") / args.arch),
        epochs=args.epochs, batch=args.batch, lr=args.lr, weight_decay=args.weight_decay, sigma=args.sigma,
        init=args.init, init_member=args.init_member, input_size=args.input_size, ema=args.ema, seed=args.seed,
        device=args.device,
        split_file=args.split_file, sigma_slope=args.sigma_slope, aux=args.aux, mixup=args.mixup,
        extra_blocks=args.extra_blocks, teacher=args.teacher, distill=args.distill,
        distill_temperature=args.distill_temperature,
        augmentation=AUGMENTATIONS[args.augment] if args.augment else None, workers=args.workers,
        cache=args.cache, version=args.version)
    train(cfg, resume=args.resume)
    return 0


def cmd_ensemble(args: argparse.Namespace) -> int:
    from ml.training.ensemble import build

    build(args.members, args.data, args.version, args.out, half=not args.float32)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from ml.training.calibrate import recalibrate

    recalibrate(args.weights, args.data, args.out or args.weights, workers=args.workers, cache=args.cache)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from ml.training.onnx_export import export

    export(args.weights, args.out)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml", description="whatsmyage: faces and ages from photos")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("predict", help="faces and ages in photos")
    p.add_argument("photos", nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per photo")
    p.add_argument("--weights", type=Path, default=None, help="age model, an exported .onnx (default: the shipped one)")
    p.set_defaults(func=cmd_predict)

    b = sub.add_parser("batch", help="score folders of photos on Ray into one CSV, Parquet or JSON lines file",
                       description="One row per file: faces, and the largest face's age, interval and box; "
                                   "an error code for a file that cannot be read or decoded. Run again with "
                                   "the same --out to go on where it stopped.")
    b.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="a folder (its .jpg, .jpeg, .png and .webp files, at any depth), a file, or a glob "
                        "pattern in quotes ('photos/**/*.jpg')")
    b.add_argument("--out", type=Path, required=True, help="results: .csv, .parquet or .jsonl")
    b.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                   help="Ray cluster to join ('auto': the one started on this machine with `ray start`); "
                        "default: $RAY_ADDRESS, else a local Ray started for the run")
    b.add_argument("--actors", type=int, default=None, help="scoring actors (default: one per CPU of the cluster)")
    b.add_argument("--cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    b.add_argument("--weights", type=Path, default=None, help="age model, an exported .onnx (default: the shipped one)")
    b.add_argument("--max-bytes", type=int, default=None,
                   help="larger files get file_too_large, as from the API (default 10 MiB, the API's default)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    b.set_defaults(func=cmd_batch)

    from ml.paths import SPLIT_FILE

    e = sub.add_parser("evaluate", help="MAE of age models on UTKFace-style folders (the whole pipeline)")
    e.add_argument("folders", nargs="+", type=Path)
    e.add_argument("--weights", type=Path, action="append",
                   help="age model, .onnx (served) or .safetensors (torch reference); repeat to compare side by side")
    e.add_argument("--split", choices=["train", "val", "test", "all"], default="all",
                   help="only the images of this side of the recorded split (default: every image)")
    e.add_argument("--workers", type=int, default=2)
    e.add_argument("--coverage", type=float, default=0.8, help="of the age interval")
    e.add_argument("--json", type=Path, default=None, help="also write the figures here")
    e.add_argument("--degrade", action="append", choices=["px40", "blur2", "gray", "jpeg15"],
                   help="also on degraded copies of the photos (repeat: px40, blur2, gray, jpeg15)")
    e.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("split", help="write (or extend) the train/val/test split of UTKFace-style folders")
    s.add_argument("folders", nargs="+", type=Path)
    s.add_argument("--out", type=Path, default=SPLIT_FILE)
    s.set_defaults(func=cmd_split)

    t = sub.add_parser("train", help="fine-tune the ResNet-10 or train the VGG regressor")
    t.add_argument("--arch", choices=["resnet10", "vgg"], default="resnet10")
    t.add_argument("--data", type=Path, action="append", required=True, help="UTKFace-style folder; repeatable")
    t.add_argument("--data-weight", type=float, action="append",
                   help="loss weight of the images of the --data folder in the same place (default 1); repeatable")
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--out", type=Path, default=None, help="run folder (default runs/ARCH)")
    t.add_argument("--resume", action="store_true", help="continue the run in --out from its last epoch")
    t.add_argument("--batch", type=int, default=None)
    t.add_argument("--lr", type=float, default=None)
    t.add_argument("--weight-decay", type=float, default=None)
    t.add_argument("--sigma", type=float, default=None, help="resnet10: label distribution width, years")
    t.add_argument("--sigma-slope", type=float, default=None, help="resnet10: label width grows per year of age")
    t.add_argument("--aux", type=float, default=None, help="resnet10: weight of auxiliary gender/race heads")
    t.add_argument("--mixup", type=float, default=None, help="mixup Beta parameter (default off)")
    t.add_argument("--extra-blocks", type=int, default=None, help="resnet10: identity-initialised blocks to add")
    t.add_argument("--teacher", default=None,
                   help="resnet10: a trained model (.safetensors) whose distributions the network also learns")
    t.add_argument("--distill", type=float, default=None,
                   help="weight of the teacher's distributions in the loss, 0-1 (the labels get the rest)")
    t.add_argument("--distill-temperature", type=float, default=None, help="temperature of that term")
    t.add_argument("--augment", choices=["none", "default", "strong"], default=None,
                   help="augmentation preset (default: default)")
    t.add_argument("--init", default=None, help="resnet10: starting weights, or 'none' (default: the imported ones)")
    t.add_argument("--init-member", type=int, default=None, help="resnet10: which network of an ensemble --init "
                   "starts from (default 0)")
    t.add_argument("--input-size", type=int, default=None, help="vgg: input side in pixels")
    t.add_argument("--ema", type=float, default=None, help="weight EMA decay, e.g. 0.999 (default off)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--device", default=None, help="auto (default: cuda when present), cpu or cuda")
    t.add_argument("--workers", type=int, default=None, help="processes for chip extraction")
    t.add_argument("--split-file", default=None, help="recorded split (default ml/splits/utkface.csv)")
    t.add_argument("--cache", default=None, help="chip cache folder (default data/chips)")
    t.add_argument("--version", default=None, help="version string of the weights")
    t.set_defaults(func=cmd_train)

    en = sub.add_parser("ensemble", help="combine trained networks into one served model, calibrated on validation")
    en.add_argument("members", nargs="+", type=Path, help="model.safetensors of training runs")
    en.add_argument("--data", type=Path, action="append", required=True, help="folders holding the validation split")
    en.add_argument("--version", required=True)
    en.add_argument("--out", type=Path, required=True)
    en.add_argument("--float32", action="store_true", help="store float32 weights (default float16)")
    en.set_defaults(func=cmd_ensemble)

    c = sub.add_parser("calibrate", help="fit a trained model's calibrated interval again, on the validation "
                       "split and degraded copies of it (the temperatures and the age stay)")
    c.add_argument("weights", type=Path, help="the model's .safetensors")
    c.add_argument("--data", type=Path, action="append", required=True, help="folders holding the validation split")
    c.add_argument("--out", type=Path, default=None, help="where to write it (default: in place)")
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--cache", type=Path, default=Path("data/chips"))
    c.set_defaults(func=cmd_calibrate)

    x = sub.add_parser("export", help="write the ONNX file the service runs from trained weights (needs torch)")
    x.add_argument("weights", type=Path, help="model.safetensors (a training run's, an ensemble's or a shipped one)")
    x.add_argument("--out", type=Path, required=True, help="the .onnx file to write, e.g. ml/weights/NAME.onnx")
    x.set_defaults(func=cmd_export)

    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
