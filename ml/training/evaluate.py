"""Accuracy of age models on a labelled folder: MAE in years overall, by age band, by gender and
race group, the age interval's coverage, and the share of images where no face was found.

A model is either file: an exported .onnx (what the service runs, `ml.serving.runtime`) or the .safetensors
it came from (the torch reference, `ml.training.agemodel`; needs torch). Both side by side show that the
export changes nothing."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ml.bands import band_names, band_of
from ml.serving import runtime
from ml.training.chips import ChipSet, extract
from ml.training.data import GENDERS, RACES, load_split, scan


@dataclass
class Metrics:
    n: int
    mae: float
    by_band: dict[str, tuple[int, float]]
    by_gender: dict[str, tuple[int, float]]
    by_race: dict[str, tuple[int, float]]
    coverage: float  # share of true ages inside the predicted interval
    mean_width: float  # mean interval width, years
    missed: int = 0  # images with no face found
    extra: dict[str, float] = field(default_factory=dict)
    # by age band: (faces, share covered) and (faces, mean width): the interval should widen where
    # the model errs more, and cover about as often in every band
    coverage_by_band: dict[str, tuple[int, float]] = field(default_factory=dict)
    width_by_band: dict[str, tuple[int, float]] = field(default_factory=dict)
    # Wilson 95% intervals of those shares, and the same by predicted age (what the service knows)
    coverage_ci: tuple[float, float] = (float("nan"), float("nan"))
    coverage_ci_by_band: dict[str, tuple[float, float]] = field(default_factory=dict)
    coverage_by_predicted: dict[str, tuple[int, float]] = field(default_factory=dict)
    coverage_ci_by_predicted: dict[str, tuple[float, float]] = field(default_factory=dict)
    width_by_predicted: dict[str, tuple[int, float]] = field(default_factory=dict)
    median_width: float = float("nan")
    # the same figures on degraded copies of the photos (`ml.training.degrade`), by degradation
    degraded: dict[str, dict] = field(default_factory=dict)

    @property
    def missed_share(self) -> float:
        return self.missed / max(1, self.n + self.missed)


def _groups(keys: np.ndarray, errors: np.ndarray, names: dict) -> dict[str, tuple[int, float]]:
    out = {}
    for k, label in names.items():
        sel = keys == k
        if sel.any():
            out[label] = (int(sel.sum()), float(errors[sel].mean()))
    return out


def wilson(covered: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score 95% interval of a share `covered` / `n` (good at shares near 0 or 1 and small n)."""
    if n == 0:
        return float("nan"), float("nan")
    p = covered / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return float(centre - half), float(centre + half)


def _wilson_groups(keys: np.ndarray, covered: np.ndarray, names: dict) -> dict[str, tuple[float, float]]:
    return {label: wilson(int(covered[keys == k].sum()), int((keys == k).sum()))
            for k, label in names.items() if (keys == k).any()}


def metrics(pred: np.ndarray, low: np.ndarray, high: np.ndarray, chips: ChipSet) -> Metrics:
    ages = chips.ages.astype(np.float64)
    err = np.abs(pred - ages)
    covered = ((ages >= low) & (ages <= high)).astype(np.float64)
    bands = np.array([band_of(a) for a in ages])
    predicted = np.array([band_of(a) for a in pred])
    band_labels = {b: b for b in band_names()}
    return Metrics(
        n=len(ages),
        mae=float(err.mean()) if len(err) else float("nan"),
        by_band=_groups(bands, err, band_labels),
        by_gender=_groups(chips.genders, err, GENDERS),
        by_race=_groups(chips.races, err, RACES),
        coverage=float(covered.mean()) if len(ages) else float("nan"),
        mean_width=float((high - low).mean()) if len(ages) else float("nan"),
        missed=len(chips.missed),
        coverage_by_band=_groups(bands, covered, band_labels),
        width_by_band=_groups(bands, high - low, band_labels),
        coverage_ci=wilson(int(covered.sum()), len(ages)),
        coverage_ci_by_band=_wilson_groups(bands, covered, band_labels),
        coverage_by_predicted=_groups(predicted, covered, band_labels),
        coverage_ci_by_predicted=_wilson_groups(predicted, covered, band_labels),
        width_by_predicted=_groups(predicted, high - low, band_labels),
        median_width=float(np.median(high - low)) if len(ages) else float("nan"),
    )


def degraded_figures(m: Metrics) -> dict:
    """The figures of a degraded copy kept beside the sharp ones."""
    return {"n": m.n, "missed": m.missed, "mae": m.mae, "coverage": m.coverage, "coverage_ci": m.coverage_ci,
            "median_width": m.median_width, "mean_width": m.mean_width, "coverage_by_band": m.coverage_by_band,
            "coverage_ci_by_band": m.coverage_ci_by_band, "by_band": m.by_band}


def load_model(path: Path) -> runtime.AgeEstimator:
    """The served runtime for an .onnx file, the torch reference for anything else."""
    if path.suffix == runtime.ONNX_SUFFIX:
        return runtime.load_age_model(path)
    from ml.training.agemodel import load_age_model

    return load_age_model(path)


def predict(model: runtime.AgeEstimator, chips: ChipSet, coverage: float = 0.8,
            batch: int = 512) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Age, interval low and high of each chip, on 64 px chips (the centre is taken if they are bigger)."""
    faces = chips.centre(64)
    pred, low, high = [], [], []
    for i in range(0, len(faces), batch):
        face_px = None if chips.face_px is None else chips.face_px[i : i + batch]
        for d in model.estimate(faces[i : i + batch], coverage, face_px):
            pred.append(d.age)
            low.append(d.low)
            high.append(d.high)
    return np.array(pred), np.array(low), np.array(high)


def evaluate_model(model: runtime.AgeEstimator, chips: ChipSet, coverage: float = 0.8, batch: int = 512) -> Metrics:
    """Metrics of `model` on 64 px chips (the centre is taken if they are bigger)."""
    return metrics(*predict(model, chips, coverage, batch), chips)


@dataclass(frozen=True)
class PairedDifference:
    """MAE of model B minus MAE of model A on the same faces, and how much of it is chance: the
    half-width of the central 95% of that difference over bootstrap resamples of the faces."""

    n: int
    mae_a: float
    mae_b: float
    difference: float  # mae_b - mae_a; negative: B is better
    noise: float  # 95% half-width, years


def paired_difference(errors_a: np.ndarray, errors_b: np.ndarray, resamples: int = 2000,
                      seed: int = 0) -> PairedDifference:
    """Paired bootstrap of the MAE difference: each resample draws faces with replacement and takes
    both models' errors on the same faces, so what the two share (hard faces) cancels out."""
    a, b = np.asarray(errors_a, np.float64), np.asarray(errors_b, np.float64)
    n = len(a)
    if n == 0:
        return PairedDifference(0, float("nan"), float("nan"), float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    d = b - a
    means = np.array([d[rng.integers(0, n, n)].mean() for _ in range(resamples)])
    lo, hi = np.percentile(means, [2.5, 97.5])
    return PairedDifference(n, float(a.mean()), float(b.mean()), float(d.mean()), float((hi - lo) / 2))


def _degraded_cell(d: dict | None) -> str:
    if not d:
        return ""
    lo, hi = d["coverage_ci"]
    return f"{d['mae']:.2f} / {d['coverage']:.1%} ({lo:.0%}-{hi:.0%}) / {d['median_width']:.1f}"


def format_table(results: dict[str, Metrics]) -> str:
    names = list(results)
    first = next(iter(results.values()))
    rows: list[tuple[str, list[str]]] = [
        ("faces evaluated", [str(m.n) for m in results.values()]),
        ("no face found", [f"{m.missed} ({m.missed_share:.1%})" for m in results.values()]),
        ("MAE, years", [f"{m.mae:.2f}" for m in results.values()]),
    ]
    for title, attr in (("age", "by_band"), ("gender", "by_gender"), ("race", "by_race")):
        for key in getattr(first, attr):
            cells = []
            for m in results.values():
                n, mae = getattr(m, attr).get(key, (0, float("nan")))
                cells.append(f"{mae:.2f} (n={n})")
            rows.append((f"  {title} {key}", cells))
    def share(cells: dict, cis: dict, key: str) -> str:
        n, p = cells.get(key, (0, float("nan")))
        lo, hi = cis.get(key, (float("nan"), float("nan")))
        return f"{p:.1%} ({lo:.0%}-{hi:.0%})"

    rows.append(("80% interval covers (95% CI)", [f"{m.coverage:.1%} ({m.coverage_ci[0]:.0%}-{m.coverage_ci[1]:.0%})"
                                                  for m in results.values()]))
    for title, cov, ci in (("true", "coverage_by_band", "coverage_ci_by_band"),
                           ("predicted", "coverage_by_predicted", "coverage_ci_by_predicted")):
        for key in getattr(first, cov):
            rows.append((f"  covers, {title} age {key}", [share(getattr(m, cov), getattr(m, ci), key)
                                                          for m in results.values()]))
    rows.append(("interval width, median / mean", [f"{m.median_width:.1f} / {m.mean_width:.1f}"
                                                   for m in results.values()]))
    for title, attr in (("true", "width_by_band"), ("predicted", "width_by_predicted")):
        for key in getattr(first, attr):
            rows.append((f"  mean width, {title} age {key}",
                         [f"{getattr(m, attr).get(key, (0, float('nan')))[1]:.1f}" for m in results.values()]))
    for name in first.degraded:
        rows.append((f"{name}: MAE / covers (95% CI) / median width",
                     [_degraded_cell(m.degraded.get(name)) for m in results.values()]))
        for key in first.degraded[name]["coverage_by_band"]:
            rows.append((f"  {name} covers, true age {key}",
                         [share(m.degraded[name]["coverage_by_band"], m.degraded[name]["coverage_ci_by_band"], key)
                          if name in m.degraded else "" for m in results.values()]))
    for key in first.extra:
        rows.append((key, [f"{m.extra.get(key, float('nan')):.1f}" for m in results.values()]))
    w0 = max(len(r[0]) for r in rows)
    widths = [max(len(n), *(len(r[1][i]) for r in rows)) for i, n in enumerate(names)]
    lines = [" " * w0 + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths, strict=True))]
    for label, cells in rows:
        lines.append(label.ljust(w0) + "  " + "  ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def run(folders: list[Path], weights: list[Path], split: str = "val", workers: int = 2,
        coverage: float = 0.8, json_out: Path | None = None, degradations: tuple[str, ...] = ()) -> dict[str, Metrics]:
    """`degradations`: also evaluate on degraded copies of the photos (`ml.training.degrade`), each through
    the whole pipeline again."""
    samples, skipped = scan(folders)
    if split != "all":
        samples = load_split(samples, folders).of(samples, split)
    print(f"{len(samples)} images ({split} split), {skipped} files skipped for their names")
    t = time.perf_counter()
    chips = extract(samples, workers=workers, desc="detect + align")
    pipeline_s = time.perf_counter() - t
    copies = {d: extract(samples, workers=workers, desc=f"detect + align ({d})", degradation=d) for d in degradations}
    results = {}
    for w in weights:
        model = load_model(w)
        t = time.perf_counter()
        m = evaluate_model(model, chips, coverage)
        model_s = time.perf_counter() - t
        m.extra["images per second"] = len(samples) / (pipeline_s + model_s)
        m.degraded = {d: degraded_figures(evaluate_model(model, c, coverage)) for d, c in copies.items()}
        name = model.version
        if name in results or any(Path(x).stem == Path(w).stem and x != w for x in weights):
            name = f"{model.version} ({w.suffix.lstrip('.')})"  # the same model in both formats
        results[name] = m
    print(format_table(results))
    if json_out:
        json_out.write_text(json.dumps({k: asdict(v) for k, v in results.items()}, indent=2))
    return results
