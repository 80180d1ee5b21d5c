"""`python -m ml calibrate`: fit a trained model's calibrated interval again (`ml.training.conformal`) on the
validation split and degraded copies of it, keeping its weights, temperatures and ages as they are;
then `python -m ml export` carries it into the served file.

    python -m ml calibrate ml/weights/resnet10x3-utkface-v2.safetensors --data ../shared/data/utkface/images
"""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from ml.training.agemodel import load_age_model, save_age_model
from ml.training.chips import cached_training_chips
from ml.training.data import load_split, scan
from ml.training.degrade import DEGRADATIONS
from ml.training.train import calibrate_interval


def stored_as_half(path: Path) -> bool:
    with safe_open(str(path), framework="pt") as f:
        return any(str(f.get_slice(k).get_dtype()) == "F16" for k in f.keys())  # noqa: SIM118 (safe_open is not iterable)


def recalibrate(weights: Path, data: list[Path], out: Path, workers: int = 2, cache: Path = Path("data/chips")) -> dict:
    model = load_age_model(weights, fold=False)
    samples, _ = scan(data)
    val_s = load_split(samples, data).of(samples, "val")
    val = cached_training_chips(val_s, cache, workers)
    copies = {d: cached_training_chips(val_s, cache, workers, degradation=d) for d in DEGRADATIONS}
    figures = calibrate_interval(model, val, copies)
    save_age_model(out, model, half=stored_as_half(weights))
    print(f"{out}: {model.version}, interval fitted on {model.interval.fitted_on if model.interval else 'nothing'}")
    print(json.dumps(figures, indent=2))
    return figures
