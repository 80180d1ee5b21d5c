"""Post-hoc corrections of the age itself, against the old faces read young (validation split only):
the median of the predicted distribution instead of its mean, logit adjustment against the training
split's age prior, an isotonic correction E[true | predicted], and the inverse of E[predicted | true]
(undoing the shrinkage). The isotonic fits are cross-fitted: fitted on four fifths of the faces
(split by file name), applied to the fifth left out.

    python bench/point_corrections.py ../shared/data/utkface/images --weights ml/weights/resnet10x3-utkface-v2.onnx

Prints the MAE overall and by true age band, the signed error by band, and the MAE's change against the
shipped age with its paired-bootstrap 95% noise (`ml.training.evaluate.paired_difference`).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from ml.bands import band_names, band_of
from ml.paths import SPLIT_FILE
from ml.serving import runtime
from ml.training.chips import extract
from ml.training.data import Split, load_split, parse_name, scan
from ml.training.evaluate import paired_difference

FOLDS = 5


def pav(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Isotonic (non-decreasing) least squares of y on x, as knots: one per block, at its mean x."""
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    values, weights, counts = [], [], []
    for v in ys:
        values.append(float(v))
        weights.append(1.0)
        counts.append(1)
        while len(values) > 1 and values[-2] > values[-1]:
            w = weights[-2] + weights[-1]
            values[-2] = (values[-2] * weights[-2] + values[-1] * weights[-1]) / w
            weights[-2], counts[-2] = w, counts[-2] + counts[-1]
            del values[-1], weights[-1], counts[-1]
    ends = np.cumsum(counts)
    starts = ends - np.array(counts)
    return np.array([xs[a:b].mean() for a, b in zip(starts, ends, strict=True)]), np.array(values)


def training_prior(classes: int) -> np.ndarray:
    """The training split's ages, smoothed (Gaussian, 2 years) and floored, as a distribution."""
    split = Split.read(SPLIT_FILE)
    ages = [parse_name(n)[0] for n, side in split.assignment.items() if side == "train" and parse_name(n)]
    hist = np.bincount(np.clip(ages, 0, classes - 1), minlength=classes).astype(np.float64)
    kernel = np.exp(-0.5 * (np.arange(-8, 9) / 2.0) ** 2)
    prior = np.convolve(hist, kernel / kernel.sum(), "same") + 1.0
    return prior / prior.sum()


def row(name: str, pred: np.ndarray, y: np.ndarray, base: np.ndarray) -> None:
    bands = np.array([band_of(a) for a in y])
    err = pred - y
    mae = " ".join(f"{np.abs(err[bands == b]).mean():5.2f}" for b in band_names())
    signed = " ".join(f"{err[bands == b].mean():+5.1f}" for b in band_names())
    d = paired_difference(np.abs(base - y), np.abs(err))
    print(f"{name:44s} {np.abs(err).mean():5.3f} | {mae} | {signed} | {d.difference:+.3f} +- {d.noise:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path)
    p.add_argument("--weights", type=Path, default=Path("ml/weights/resnet10x3-utkface-v2.onnx"))
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    samples, _ = scan([args.folder])
    val = extract(load_split(samples, [args.folder]).of(samples, "val"), workers=args.workers)
    model = runtime.load_age_model(args.weights)
    outputs = np.concatenate([model.outputs(val.chips[i : i + 256]) for i in range(0, len(val), 256)], axis=1)
    y = val.ages.astype(np.float64)
    ages = model.ages
    fold = np.array([int(hashlib.sha256(n.encode()).hexdigest(), 16) % FOLDS for n in val.names])

    def probs(temperature: float, tau: float = 0.0, prior: np.ndarray | None = None) -> np.ndarray:
        logits = outputs / temperature
        if tau:
            logits = logits - tau * np.log(prior)[None, None, :]
        return runtime.softmax(logits, 1.0).mean(axis=0)

    def median(pr: np.ndarray) -> np.ndarray:
        edges = np.concatenate([[0.0], np.arange(len(ages)) + 0.5])
        cdf = np.concatenate([np.zeros((len(pr), 1)), np.cumsum(pr, axis=1)], axis=1)
        return np.array([np.interp(0.5, c, edges) for c in cdf])

    pt = model.point_temperature or model.temperature
    base = probs(pt) @ ages
    print(f"{len(y)} validation faces; MAE | by band {' '.join(band_names())} | signed error by band | "
          "change of MAE +- 95% noise")
    row(f"shipped: mean at point temperature {pt:g}", base, y, base)
    for t in (pt, model.temperature, 1.0):
        row(f"median of the distribution, T {t:.2f}", median(probs(t)), y, base)
    prior = training_prior(len(ages))
    for tau, t in ((0.1, pt), (0.3, pt), (0.5, pt), (0.3, 0.7), (0.5, 0.7)):
        row(f"logit adjustment tau {tau}, T {t:g}", probs(t, tau, prior) @ ages, y, base)

    def crossfit(fit, share: float) -> np.ndarray:
        out = np.empty_like(base)
        for k in range(FOLDS):
            tr = fold != k
            corrected = fit(base[tr], y[tr], base[~tr])
            out[~tr] = base[~tr] + share * (corrected - base[~tr])
        return out

    def isotonic(a: np.ndarray, t: np.ndarray, new: np.ndarray) -> np.ndarray:
        kx, ky = pav(a, t)
        return np.interp(new, kx, ky)

    def inverse(a: np.ndarray, t: np.ndarray, new: np.ndarray) -> np.ndarray:
        kx, ky = pav(t, a)  # E[predicted | true], increasing in the true age
        keep = np.concatenate([[True], np.diff(ky) > 1e-9])
        return np.interp(new, ky[keep], kx[keep])

    for share in (1.0, 0.5):
        row(f"isotonic E[true | predicted], x{share}", crossfit(isotonic, share), y, base)
    for share in (1.0, 0.5, 0.3):
        row(f"inverse of E[predicted | true], x{share}", crossfit(inverse, share), y, base)


if __name__ == "__main__":
    main()
