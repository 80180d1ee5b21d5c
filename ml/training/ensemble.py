"""Combine trained age networks into one served model, calibrated on the validation split.

    python -m ml ensemble runs/a/model.safetensors runs/b/model.safetensors ... \\
        --data ../shared/data/utkface/images --version resnet10-ens4-v2 --out ml/weights/resnet10-ens4-v2.safetensors

The members' distributions are averaged (each member's logits divided by the same temperature);
mirror averaging and both temperatures are then chosen on the validation chips, as for one run.
"""

from __future__ import annotations

import json
from pathlib import Path

from ml.training.agemodel import AgeModel, load_age_model, save_age_model
from ml.training.evaluate import evaluate_model, format_table
from ml.training.train import TrainConfig, calibrate, load_data, validation_copies


def build(members: list[Path], data: list[Path], version: str, out: Path, half: bool = True) -> AgeModel:
    loaded = [load_age_model(m, fold=False) for m in members]
    if {m.arch for m in loaded} != {"resnet10"} or len({m.net.num_classes for m in loaded}) != 1:
        raise SystemExit("an ensemble needs ResNet-10 members with the same age classes")
    model = AgeModel(nets=[n for m in loaded for n in m.nets], version=version)
    cfg = TrainConfig(data=[str(d) for d in data])
    _, val = load_data(cfg)
    calib = calibrate(model, val, copies=validation_copies(cfg))
    members_info = json.dumps([{"file": m.name, "version": v.version} for m, v in zip(members, loaded, strict=True)])
    save_age_model(out, model, extra={"ensemble_of": members_info}, half=half)
    served = load_age_model(out)
    print(format_table({version: evaluate_model(served, val)}))
    print(json.dumps(calib, indent=2))
    return served
