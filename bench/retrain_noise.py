"""How much of a validation MAE difference between two models is chance: the paired bootstrap that
`python -m api retrain` applies to the active model and its candidate, here on two shipped models.

    .venv/bin/python -m bench.retrain_noise [--data ../shared/data/utkface/images] [--a A.onnx] [--b B.onnx]

Prints each model's MAE on the validation split, their difference, and the 95% half-width of that
difference over 2000 resamples of the faces (paired: both models' errors on the same faces), beside
the half-width of one model's MAE alone (unpaired), to show what pairing removes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ml.paths import WEIGHTS_DIR
from ml.serving import runtime
from ml.training.evaluate import paired_difference, predict
from ml.training.train import TrainConfig, load_data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/utkface/images"))
    parser.add_argument("--a", type=Path, default=WEIGHTS_DIR / "resnet10x3-utkface-v2.onnx")
    parser.add_argument("--b", type=Path, default=WEIGHTS_DIR / "resnet10-utkface-v2.onnx")
    parser.add_argument("--cache", default="data/chips")
    args = parser.parse_args()
    _, val = load_data(TrainConfig(data=[str(args.data)], cache=args.cache))
    errors = []
    for path in (args.a, args.b):
        pred, _, _ = predict(runtime.load_age_model(path), val)
        errors.append(np.abs(pred - val.ages))
    d = paired_difference(errors[0], errors[1])
    alone = paired_difference(np.zeros_like(errors[0]), errors[0])  # one model's MAE against nothing
    print(f"validation split: {d.n} faces")
    print(f"  {args.a.stem}: MAE {d.mae_a:.3f}")
    print(f"  {args.b.stem}: MAE {d.mae_b:.3f}")
    print(f"  difference (b - a): {d.difference:+.3f} years, paired 95% half-width ±{d.noise:.3f}")
    print(f"  one model's MAE alone: 95% half-width ±{alone.noise:.3f} (what an unpaired comparison would face)")


if __name__ == "__main__":
    main()
