"""Fine-tune a served age model on more data: every network of an ensemble in turn, then the members
combined again, calibrated on the validation split and exported to the ONNX file the service runs.

    finetune(FinetuneConfig(init=Path("ml/weights/resnet10x3-utkface-v2.safetensors"),
                            data=[utkface, submissions], data_weights=[1.0, 5.0], ...))

Each member starts from its own weights in `init` and trains with `ml.training.train.train` (a run folder of
its own, with its plots and progress bar); the data is loaded once for all of them. Fine-tuning every
member keeps the ensemble what it was (three networks averaged), at three times the cost of one.
`api/learning/retrain.py` drives this from the database; it works on any UTKFace-style folders.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ml.paths import SPLIT_FILE
from ml.training.agemodel import AgeModel, read_metadata, save_age_model
from ml.training.chips import ChipSet
from ml.training.train import TrainConfig, calibrate, load_data, train, validation_copies


@dataclass
class FinetuneConfig:
    init: Path  # the .safetensors of the model to start from (a single network or an ensemble)
    data: list[Path]
    out: Path  # run folder: member0/, member1/, ..., model.safetensors, model.onnx
    version: str
    data_weights: list[float] = field(default_factory=list)  # one per data folder; 1 if absent
    split_file: Path = SPLIT_FILE  # decides train and validation (see ml.training.data.load_split)
    epochs: int = 1
    lr: float = 3e-4  # a third of a full run's 1e-3: the start is already a good model
    batch: int = 128
    weight_decay: float = 0.05
    ema: float = 0.0  # decay of an exponential moving average of the weights (ml.training.train); 0 = off
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    cache: Path = Path("data/chips")


def member_count(weights: Path) -> int:
    meta = read_metadata(weights)
    return len(json.loads(meta["members"])) if "members" in meta else 1


def member_config(cfg: FinetuneConfig, member: int) -> TrainConfig:
    return TrainConfig.for_arch(
        "resnet10", data=[str(d) for d in cfg.data], data_weights=list(cfg.data_weights), init=str(cfg.init),
        init_member=member, out=str(cfg.out / f"member{member}"), epochs=cfg.epochs, lr=cfg.lr, batch=cfg.batch,
        weight_decay=cfg.weight_decay, ema=cfg.ema, warmup=0.2, seed=cfg.seed + member, device=cfg.device,
        workers=cfg.workers, cache=str(cfg.cache), version=f"{cfg.version}-m{member}", split_file=str(cfg.split_file))


def finetune(cfg: FinetuneConfig, data: tuple[ChipSet, ChipSet] | None = None) -> tuple[Path, Path, ChipSet]:
    """Train every member, combine and calibrate them, write `out/model.safetensors` and export
    `out/model.onnx`. Returns both paths and the validation chips (to evaluate on)."""
    from ml.training.onnx_export import export

    cfg.out.mkdir(parents=True, exist_ok=True)
    members = member_count(cfg.init)
    train_set, val = data or load_data(member_config(cfg, 0))
    nets = []
    for i in range(members):
        print(f"member {i + 1} of {members}: {len(train_set)} training faces, {cfg.epochs} epoch(s)")
        nets.append(train(member_config(cfg, i), data=(train_set, val)).net)
    model = AgeModel(nets=nets, version=cfg.version)
    # the average of the members, as served; its interval on validation and degraded copies of it
    calib = calibrate(model, val, copies=validation_copies(member_config(cfg, 0)))
    weights = cfg.out / "model.safetensors"
    save_age_model(weights, model, half=members > 1,  # as `ml ensemble` stores ensembles
                   extra={"fine_tuned_from": cfg.init.name,
                          "trained": json.dumps({"data": [str(d) for d in cfg.data], "epochs": cfg.epochs,
                                                 "data_weights": cfg.data_weights, "calibration": calib})})
    onnx = cfg.out / "model.onnx"
    export(weights, onnx)
    return weights, onnx, val
