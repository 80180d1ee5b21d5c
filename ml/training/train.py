"""Training: fine-tune the ResNet-10 or train the VGG regressor on UTKFace-style folders.

    python -m ml train --arch resnet10 --data ../shared/data/utkface/images --epochs 12 --out runs/r10

A run folder holds `config.json`, `metrics.csv` (one row per epoch), `last.pt` (to resume with
`--resume`), `model.safetensors` (the best epoch by validation MAE, calibrated: see below) and
plots: `learning_curve.png`, `predicted_vs_true.png`, `mae_by_band.png`.

Chips come from `ml.training.chips` (the serving pipeline, cached on disk); images without a detected face
are left out. After the last epoch the best weights are calibrated on the validation split (see
`calibrate`). `python -m ml ensemble` combines several runs into one served model.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ml.bands import band_names, band_of
from ml.paths import IMPORTED_AGE_WEIGHTS, SPLIT_FILE
from ml.serving import quality
from ml.training import conformal
from ml.training.agemodel import AgeModel, load_age_model, save_age_model, summarise
from ml.training.agenet import AgeNet
from ml.training.augment import Augmentation, augment
from ml.training.chips import MARGIN, ChipSet, cached_training_chips
from ml.training.data import load_split, scan
from ml.training.degrade import DEGRADATIONS
from ml.training.evaluate import evaluate_model
from ml.training.vgg import VGGRegressor

AUGMENTATIONS = {
    "none": asdict(Augmentation.none()),
    "default": asdict(Augmentation()),
    "strong": asdict(Augmentation(scale=(0.85, 1.15), rotate=10.0, shift=4.0, contrast=(0.7, 1.3), brightness=25.0,
                                  grayscale=0.15)),
}


@dataclass
class TrainConfig:
    arch: str = "resnet10"
    data: list[str] = field(default_factory=list)
    data_weights: list[float] = field(default_factory=list)  # loss weight of each --data folder's images; 1 if absent
    out: str = "runs/run"
    epochs: int = 12
    batch: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup: float = 0.5  # epochs of linear warm-up (resnet10)
    classes: int = 117  # resnet10 head: ages 0..116
    sigma: float = 2.5  # years, of the Gaussian label distribution (resnet10)
    init: str = str(IMPORTED_AGE_WEIGHTS)  # resnet10 start; "none" trains from scratch
    init_member: int = 0  # which network of an ensemble in `init` to start from
    input_size: int = 64  # vgg
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    sigma_slope: float = 0.0  # resnet10: the label width grows by this many years per year of age
    aux: float = 0.0  # resnet10: weight of auxiliary gender and race heads (training only)
    mixup: float = 0.0  # Beta(a, a) parameter of mixup; 0 = off
    extra_blocks: int = 0  # resnet10: identity-initialised 256-channel blocks added after the imported ones
    teacher: str = ""  # resnet10: a trained model whose (mirror-averaged) distributions are soft targets
    distill: float = 0.0  # weight of the teacher's distribution in the loss (the labels get 1 - distill)
    distill_temperature: float = 1.0  # both teacher and student logits are divided by it in that term
    seed: int = 0
    device: str = "auto"
    workers: int = 2  # chip extraction processes
    split_file: str = str(SPLIT_FILE)  # the recorded split; files it does not list are assigned by hash
    cache: str = "data/chips"
    version: str = ""
    augmentation: dict = field(default_factory=lambda: asdict(Augmentation()))

    @classmethod
    def for_arch(cls, arch: str, **kw: object) -> TrainConfig:
        """Defaults per architecture: the VGG keeps the first design's MSE, Adam 1e-4, batch 12."""
        base = cls(arch=arch) if arch == "resnet10" else cls(arch=arch, batch=12, lr=1e-4, weight_decay=0.0)
        for k, v in kw.items():
            if v is not None:
                setattr(base, k, v)
        return base


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build(cfg: TrainConfig) -> torch.nn.Module:
    if cfg.arch == "vgg":
        return VGGRegressor(cfg.input_size)
    if cfg.init and cfg.init != "none":
        net = load_age_model(Path(cfg.init), fold=False).nets[cfg.init_member]
    else:
        net = AgeNet(num_classes=81)
    assert isinstance(net, AgeNet)
    return net.widen(cfg.classes).deepen(cfg.extra_blocks)


def label_distribution(ages: torch.Tensor, class_ages: torch.Tensor, sigma: float, slope: float = 0.0) -> torch.Tensor:
    width = sigma + slope * ages[:, None].float()
    d = torch.exp(-0.5 * ((class_ages[None, :] - ages[:, None].float()) / width) ** 2)
    return d / d.sum(dim=1, keepdim=True)


def teacher_distributions(cfg: TrainConfig, chips: ChipSet) -> torch.Tensor:
    """The teacher's class probabilities for each chip (centre 64 px, averaged with the mirrored
    chip, logits divided by `distill_temperature`), computed once and cached beside the chips: the
    teacher sees the unaugmented chip while the student sees its augmented copy."""
    path = Path(cfg.teacher)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    names_digest = hashlib.sha256("\n".join(chips.names).encode()).hexdigest()[:12]
    cached = Path(cfg.cache) / f"teacher-{path.stem}-{digest}-T{cfg.distill_temperature:g}-{names_digest}.npy"
    if cached.exists():
        return torch.from_numpy(np.load(cached))
    teacher = load_age_model(path)
    if teacher.arch != "resnet10":
        raise SystemExit(f"{path}: a teacher must output age distributions (resnet10)")
    teacher.mirror = True
    faces = chips.centre(64)
    probs = [teacher.probabilities(faces[i : i + 256], cfg.distill_temperature).float()
             for i in tqdm(range(0, len(faces), 256), desc="teacher", leave=False)]
    out = torch.cat(probs).cpu()
    cached.parent.mkdir(parents=True, exist_ok=True)
    np.save(cached, out.numpy())
    return out


def targets(cfg: TrainConfig, net: torch.nn.Module, ages: torch.Tensor, genders: torch.Tensor,
            races: torch.Tensor, teacher: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """What each output is trained towards; soft (one row per sample) so that mixup can blend them."""
    if cfg.arch == "vgg":
        return {"age": ages.float()}
    t = {"age": label_distribution(ages, net.ages, cfg.sigma, cfg.sigma_slope)}
    if teacher is not None:
        t["teacher"] = teacher
    if cfg.aux:
        t["gender"] = F.one_hot(genders.clamp(min=0), 2).float() * (genders >= 0).float()[:, None]
        t["race"] = F.one_hot(races.clamp(min=0), 5).float() * (races >= 0).float()[:, None]
    return t


def weighted_mean(per_sample: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    return per_sample.mean() if weight is None else (per_sample * weight).sum() / weight.sum()


def soft_ce(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    return weighted_mean(-(target * F.log_softmax(logits, dim=1)).sum(dim=1), weight)


def loss_of(cfg: TrainConfig, net: torch.nn.Module, aux_head: torch.nn.Module | None, x: torch.Tensor,
            t: dict[str, torch.Tensor], weight: torch.Tensor | None = None) -> torch.Tensor:
    """The batch's loss; `weight` (one per sample) makes some images count more than others."""
    if cfg.arch == "vgg":
        return weighted_mean((net(x) - t["age"]) ** 2, weight)
    feats = net.features(x)
    logits = net.head(feats)
    if "teacher" in t:
        # Hinton et al.'s distillation: the temperature-squared factor keeps the term's gradients
        # on the scale of the label term's whatever the temperature.
        temp = cfg.distill_temperature
        loss = ((1 - cfg.distill) * soft_ce(logits, t["age"], weight)
                + cfg.distill * temp**2 * soft_ce(logits / temp, t["teacher"], weight))
    else:
        loss = soft_ce(logits, t["age"], weight)
    if aux_head is not None:
        extra = aux_head(feats)
        loss = loss + cfg.aux * (soft_ce(extra[:, :2], t["gender"], weight) + soft_ce(extra[:, 2:], t["race"], weight))
    return loss


def sample_weights(cfg: TrainConfig, names: np.ndarray) -> np.ndarray | None:
    """The loss weight of each training image: its folder's entry of `cfg.data_weights` (1 if none);
    None when every weight is 1. A name found in several folders takes the first folder's weight."""
    if not any(w != 1.0 for w in cfg.data_weights):
        return None
    of_name: dict[str, float] = {}
    for folder, w in zip(cfg.data, cfg.data_weights, strict=False):
        for path in Path(folder).rglob("*"):
            of_name.setdefault(path.name, float(w))
    return np.array([of_name.get(n, 1.0) for n in names], dtype=np.float32)


def lr_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    if cfg.arch == "vgg":
        return cfg.lr  # the first design: a constant rate
    warm = max(1, int(cfg.warmup * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch
    if step < warm:
        return cfg.lr * (step + 1) / warm
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def serving_model(cfg: TrainConfig, net: torch.nn.Module, version: str) -> AgeModel:
    return AgeModel(nets=[net], version=version, arch=cfg.arch)



POINT_TEMPERATURES = (0.25, 0.3, 0.35, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def _coverage(probs: torch.Tensor, ages_of_classes: torch.Tensor, ages: np.ndarray, coverage: float) -> float:
    est = summarise(probs, ages_of_classes, coverage)
    return float(np.mean([(e.low <= a <= e.high) for e, a in zip(est, ages, strict=True)]))


def interval_faces(model: AgeModel, sets: dict[str, ChipSet]) -> conformal.Faces:
    """The model's uncalibrated age and spread on each set of chips (`conformal.SHARP` for the
    validation chips, a degradation's name for its copies), with their quality measures."""
    saved, model.interval = model.interval, None
    try:
        parts = []
        for kind, chips in sets.items():
            faces = chips.centre(64)
            est = [e for i in range(0, len(faces), 512) for e in model.estimate(faces[i : i + 512])]
            face_px = chips.face_px if chips.face_px is not None else np.full(len(chips), np.nan)
            parts.append((np.array([e.age for e in est]), np.array([e.spread for e in est]),
                          quality.sharpness(faces), face_px, chips.ages.astype(np.float64),
                          np.full(len(chips), kind, dtype=object)))
    finally:
        model.interval = saved
    return conformal.Faces(*(np.concatenate([p[i] for p in parts]) for i in range(6)))


def calibrate_interval(model: AgeModel, val: ChipSet, copies: dict[str, ChipSet] | None = None,
                       coverage: float = 0.8) -> dict[str, float]:
    """Fit the calibrated interval (`ml.training.conformal`) on the validation chips and degraded copies of
    them, and store it in the model (its metadata). Returns the fitted figures on those chips."""
    if model.arch != "resnet10" or len(val) == 0:
        return {}
    sets = {conformal.SHARP: val, **{k: v for k, v in (copies or {}).items() if len(v)}}
    faces = interval_faces(model, sets)
    fitted_on = ", ".join(f"{k} {len(v)}" for k, v in sets.items())
    model.interval = conformal.fit(faces, coverage, fitted_on=f"validation faces: {fitted_on}")
    low, high = model.interval.bounds(faces.age, faces.spread, faces.sharpness, faces.face_px)
    covered = (faces.true_age >= low) & (faces.true_age <= high)
    sharp = faces.kind == conformal.SHARP
    return {"interval_coverage_sharp": float(covered[sharp].mean()),
            "interval_median_width_sharp": float(np.median((high - low)[sharp]))}


def calibrate(model: AgeModel, val: ChipSet, coverage: float = 0.8,
              copies: dict[str, ChipSet] | None = None) -> dict[str, float]:
    """On the validation split: mirror averaging if it lowers MAE; for resnet10 the temperature of
    the point estimate with the lowest MAE (from a grid), then by bisection the interval's
    temperature for which it covers `coverage` of the true ages, then the calibrated interval on
    the validation chips and their degraded `copies` (`calibrate_interval`); for a regressor, its
    residual percentiles. The networks run once per mirror setting; temperatures only re-read their
    output."""
    faces = val.centre(64)
    ages = val.ages.astype(np.float64)
    n = len(faces)
    if model.arch != "resnet10":
        model.mirror = False
        plain = evaluate_model(model, val).mae
        model.mirror = True
        mirrored = evaluate_model(model, val).mae
        model.mirror = mirrored < plain
        pred = np.array([e.age for e in model.estimate(faces)])
        res = ages - pred
        model.residuals = (float(np.percentile(res, 10)), float(np.percentile(res, 90)), float(res.std()))
        return {"val_mae_plain": plain, "val_mae_mirrored": mirrored, "mirror": float(model.mirror)}

    class_ages = model.net.ages.double().cpu()
    outputs, mae = {}, {}
    for mirror in (False, True):
        model.mirror = mirror
        outputs[mirror] = [o.cpu() for o in model._outputs(faces)]
        for t in POINT_TEMPERATURES:
            probs = model._average(outputs[mirror], n, t).double()
            mae[mirror, t] = float(np.abs((probs @ class_ages).numpy() - ages).mean())
    model.mirror, model.point_temperature = min(mae, key=mae.get)
    lo, hi = 0.3, 5.0
    for _ in range(20):
        mid = math.sqrt(lo * hi)
        covered = _coverage(model._average(outputs[model.mirror], n, mid), class_ages, ages, coverage)
        lo, hi = (mid, hi) if covered < coverage else (lo, mid)
    model.temperature = math.sqrt(lo * hi)
    interval = calibrate_interval(model, val, copies, coverage)
    return {"val_mae_plain": mae[False, 1.0], "val_mae_mirrored": mae[True, 1.0], "mirror": float(model.mirror),
            "point_temperature": model.point_temperature, "temperature": model.temperature,
            "val_mae_calibrated": mae[model.mirror, model.point_temperature], **interval}


def plots(run: Path, history: list[dict], model: AgeModel, val: ChipSet) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="training loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["val_mae"] for h in history], "s-", color="tab:red", label="validation MAE")
    ax2.set_ylabel("validation MAE (years)")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(run / "learning_curve.png", dpi=100)
    plt.close(fig)

    pred = np.array([e.age for e in model.estimate(val.centre(64))])
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(val.ages, pred, s=3, alpha=0.4)
    ax.plot([0, 116], [0, 116], "k--", lw=1)
    ax.set_xlabel("true age")
    ax.set_ylabel("predicted age")
    ax.set_title(f"{model.version}: validation")
    fig.tight_layout()
    fig.savefig(run / "predicted_vs_true.png", dpi=100)
    plt.close(fig)

    err = np.abs(pred - val.ages)
    bands = np.array([band_of(a) for a in val.ages])
    names = [b for b in band_names() if (bands == b).any()]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.bar(names, [err[bands == b].mean() for b in names])
    ax.set_xlabel("true age")
    ax.set_ylabel("MAE (years)")
    ax.set_title(f"{model.version}: validation MAE by age band")
    fig.tight_layout()
    fig.savefig(run / "mae_by_band.png", dpi=100)
    plt.close(fig)


def load_data(cfg: TrainConfig) -> tuple[ChipSet, ChipSet]:
    folders = [Path(d) for d in cfg.data]
    samples, skipped = scan(folders)
    split = load_split(samples, folders, split_file=Path(cfg.split_file) if cfg.split_file else None)
    train_s, val_s = split.of(samples, "train"), split.of(samples, "val")
    if not train_s or not val_s:
        raise SystemExit(f"the split leaves {len(train_s)} training and {len(val_s)} validation images: "
                         "give more images or a split file")
    chips = cached_training_chips(train_s + val_s, Path(cfg.cache), cfg.workers)
    train = chips.subset({s.name for s in train_s})
    val = chips.subset({s.name for s in val_s})
    print(f"{len(samples)} images ({skipped} skipped for their names): train {len(train)} faces "
          f"({len(train.missed)} without a detected face, left out), validation {len(val)} "
          f"({len(val.missed)} without a face)")
    return train, val


def validation_copies(cfg: TrainConfig) -> dict[str, ChipSet]:
    """Chips of degraded copies (`ml.training.degrade`) of the validation photos, cached beside the training
    chips: what the calibrated interval is fitted on besides the validation chips themselves."""
    folders = [Path(d) for d in cfg.data]
    samples, _ = scan(folders)
    split = load_split(samples, folders, split_file=Path(cfg.split_file) if cfg.split_file else None)
    val_s = split.of(samples, "val")
    return {d: cached_training_chips(val_s, Path(cfg.cache), cfg.workers, degradation=d) for d in DEGRADATIONS}


def train(cfg: TrainConfig, resume: bool = False, data: tuple[ChipSet, ChipSet] | None = None) -> AgeModel:
    run = Path(cfg.out)
    run.mkdir(parents=True, exist_ok=True)
    version = cfg.version or f"{cfg.arch}-{run.name}"
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    train_set, val = data or load_data(cfg)

    net = build(cfg).to(device)
    aux_head = torch.nn.Linear(256, 7).to(device) if cfg.aux and cfg.arch == "resnet10" else None
    params = list(net.parameters()) + (list(aux_head.parameters()) if aux_head is not None else [])
    opt_cls = torch.optim.AdamW if cfg.arch == "resnet10" else torch.optim.Adam
    opt = opt_cls(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = torch.optim.swa_utils.AveragedModel(
        net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    aug = Augmentation(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg.augmentation.items()})
    chips = torch.from_numpy(train_set.chips).to(device)
    ages = torch.from_numpy(train_set.ages).to(device)
    genders = torch.from_numpy(train_set.genders).to(device)
    races = torch.from_numpy(train_set.races).to(device)
    per_sample = sample_weights(cfg, train_set.names)
    weights = torch.from_numpy(per_sample).to(device) if per_sample is not None else None
    soft = teacher_distributions(cfg, train_set).to(device) if cfg.teacher and cfg.distill else None
    if soft is not None and soft.shape[1] != net.num_classes:
        raise SystemExit(f"the teacher has {soft.shape[1]} age classes, the student {net.num_classes}")
    out_size = cfg.input_size if cfg.arch == "vgg" else 64
    steps = math.ceil(len(chips) / cfg.batch)
    history: list[dict] = []
    start, best = 0, float("inf")
    if resume and (run / "last.pt").exists():
        state = torch.load(run / "last.pt", map_location=device, weights_only=False)
        net.load_state_dict(state["net"])
        if aux_head is not None and state.get("aux"):
            aux_head.load_state_dict(state["aux"])
        opt.load_state_dict(state["opt"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        gen.set_state(state["gen"].cpu())
        start, best, history = state["epoch"], state["best"], state["history"]
        print(f"resuming after epoch {start} (best validation MAE {best:.3f})")

    for epoch in range(start, cfg.epochs):
        net.train()
        order = torch.randperm(len(chips), generator=gen, device=device)
        total, seen, t0 = 0.0, 0, time.perf_counter()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch * steps + i, steps)
            idx = order[i * cfg.batch : (i + 1) * cfg.batch]
            x = net.preprocess(augment(chips[idx], aug, gen, out=out_size, margin_px=MARGIN))
            t = targets(cfg, net, ages[idx], genders[idx], races[idx], None if soft is None else soft[idx])
            w = weights[idx] if weights is not None else None
            if cfg.mixup:
                lam = float(np.random.beta(cfg.mixup, cfg.mixup))
                perm = torch.randperm(len(idx), generator=gen, device=device)
                x = lam * x + (1 - lam) * x[perm]
                t = {k: lam * v + (1 - lam) * v[perm] for k, v in t.items()}
                w = lam * w + (1 - lam) * w[perm] if w is not None else None
            loss = loss_of(cfg, net, aux_head, x, t, w)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(net)
            total += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{total / seen:.3f}")
        scored = ema.module if ema is not None else net
        scored.eval()
        model = serving_model(cfg, scored, version)
        val_mae = evaluate_model(model, val).mae
        minutes = (time.perf_counter() - t0) / 60
        history.append({"epoch": epoch + 1, "train_loss": total / seen, "val_mae": val_mae, "minutes": minutes})
        print(f"epoch {epoch + 1}: training loss {total / seen:.4f}, validation MAE {val_mae:.3f}, "
              f"{minutes:.2f} min")
        if val_mae < best:
            best = val_mae
            save_age_model(run / "best.safetensors", model)
        with (run / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(history[0]))
            w.writeheader()
            w.writerows(history)
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "ema": ema.state_dict() if ema else None,
                    "aux": aux_head.state_dict() if aux_head is not None else None,
                    "gen": gen.get_state(), "epoch": epoch + 1, "best": best, "history": history}, run / "last.pt")

    model = load_age_model(run / "best.safetensors", fold=False)
    model.net.to(device)
    model.version = version
    # degraded copies of the validation photos only when this run found its own data (a member of a
    # fine-tuned ensemble is calibrated again as part of the ensemble, with them)
    calib = calibrate(model, val, copies=validation_copies(cfg) if data is None else None)
    save_age_model(run / "model.safetensors", model,
                   extra={"trained": json.dumps({"data": cfg.data, "epochs": cfg.epochs, "best_val_mae": best})})
    final = evaluate_model(model, val)
    summary = {"version": version, "best_val_mae": best, "calibrated_val_mae": final.mae,
               "val_coverage": final.coverage, **calib,
               "minutes_per_epoch": float(np.mean([h["minutes"] for h in history])) if history else 0.0,
               "device": str(device), "val_by_band": final.by_band}
    (run / "summary.json").write_text(json.dumps(summary, indent=2))
    plots(run, history, model, val)
    print(json.dumps(summary, indent=2))
    return model
