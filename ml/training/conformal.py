"""Fit the calibrated age interval (`ml.serving.interval`) on labelled faces: validation chips and degraded
copies of them. numpy only.

Each cell (predicted-age group x good / poor quality) gets a lower and an upper quantile of the
normalised residual z = (true - predicted) / spread of its faces. Plain split conformal prediction
takes the 10% and 90% quantiles of every cell; that covers 80% within each cell but not within each
true-age group (teenagers are predicted as people in their twenties and fall below their cell's low
end). So the levels are then moved one step (1%) at a time, each time the step that best lowers

    100 x (shortfall of coverage below, or excess above, its band, summed over every true-age group
           of every set: the sharp faces and each degraded copy) + mean width of a sharp face / 13

until no step lowers it. The bands: sharp faces 78-85% in every true-age group and 79.5-81.5%
overall; each degraded copy 72-88% by group and 78-84% overall (the issue's goals, with a margin).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ml.serving import quality
from ml.serving.interval import IntervalCalibration

EDGES = [13.0, 20.0, 25.0, 35.0, 45.0, 55.0, 65.0]  # predicted-age groups
TRUE_EDGES = [13, 20, 40, 60, 80]  # true-age groups checked: 0-12, 13-19, 20-39, 40-59, 60-79, 80+
POOR_FROM = 0.4  # quality shortfall (log units) from which a face is poor
MIN_CELL = 30  # faces; a smaller cell takes its quantiles from its whole group, or from all faces
SHARP = "sharp"
STEPS = (0.01, 0.03, 0.06)  # a longer step crosses a plateau where one step changes nothing
LEVELS = (0.005, 0.3)  # the tail levels a step may reach
SHARP_BANDS = (0.78, 0.85, 0.795, 0.815)  # by group low, high; overall low, high
DEGRADED_BANDS = (0.72, 0.88, 0.78, 0.84)
MIN_GROUP = 20  # faces of a true-age group in a set for it to count
WIDTH_COST = 1 / 13  # of a year of mean width against a point of coverage outside its band


@dataclass
class Faces:
    """The calibration faces: point age, spread, quality measures, true age and the set of each."""

    age: np.ndarray
    spread: np.ndarray
    sharpness: np.ndarray
    face_px: np.ndarray
    true_age: np.ndarray
    kind: np.ndarray  # "sharp" or the degradation's name


def _quantile(sorted_z: np.ndarray, level: float, lower: bool) -> float:
    """The conformal quantile: the ceil((n + 1)(1 - level))-th smallest for the upper end."""
    n = len(sorted_z)
    if lower:
        return float(sorted_z[max(int(np.floor(level * (n + 1))) - 1, 0)])
    return float(sorted_z[min(int(np.ceil((1 - level) * (n + 1))) - 1, n - 1)])


def fit(faces: Faces, coverage: float = 0.8, edges: list[float] | None = None, poor_from: float = POOR_FROM,
        max_steps: int = 400, fitted_on: str = "") -> IntervalCalibration:
    edges = list(edges or EDGES)
    if coverage != 0.8:
        raise ValueError("the balancing bands are set for an 80% interval")
    a, s, y = (np.asarray(x, dtype=np.float64) for x in (faces.age, faces.spread, faces.true_age))
    s = np.maximum(s, 1e-3)
    short = quality.shortfall(faces.sharpness, faces.face_px)
    probe = IntervalCalibration(coverage, edges, poor_from, quality.SHARP_CHIP, quality.LARGE_FACE, [], [])
    cell = probe.cells(a, short)
    n_cells = (len(edges) + 1) * 2
    z = (y - a) / s
    # the sample each cell's quantiles come from
    everyone = np.sort(z)
    samples = []
    for k in range(n_cells):
        own = z[cell == k]
        group = z[cell // 2 == k // 2]
        samples.append(np.sort(own) if len(own) >= MIN_CELL else np.sort(group) if len(group) >= MIN_CELL
                       else everyone)

    kinds = [SHARP, *sorted(set(faces.kind.tolist()) - {SHARP})]
    kind_index = np.array([kinds.index(k) for k in faces.kind.tolist()])
    true_group = np.searchsorted(np.asarray(TRUE_EDGES), y, side="right")
    n_true = len(TRUE_EDGES) + 1
    key = kind_index * (n_true + 1) + true_group  # the last slot of each set is unused: overall below
    n_keys = len(kinds) * (n_true + 1)
    size = np.bincount(key, minlength=n_keys).astype(np.float64)
    set_size = np.bincount(kind_index, minlength=len(kinds)).astype(np.float64)
    sharp_spread = np.bincount(cell[kind_index == 0], weights=s[kind_index == 0], minlength=n_cells)
    n_sharp = max(1.0, float((kind_index == 0).sum()))
    members = [np.flatnonzero(cell == k) for k in range(n_cells)]

    levels = np.full((n_cells, 2), (1 - coverage) / 2)  # lower tail, upper tail

    def ends(k: int, lv: np.ndarray) -> tuple[float, float]:
        return _quantile(samples[k], lv[0], True), _quantile(samples[k], lv[1], False)

    def covered_keys(k: int, lo: float, hi: float) -> np.ndarray:
        i = members[k]
        return np.bincount(key[i], weights=((z[i] >= lo) & (z[i] <= hi)).astype(np.float64), minlength=n_keys)

    bounds = np.array([ends(k, levels[k]) for k in range(n_cells)])
    per_cell = np.array([covered_keys(k, *bounds[k]) for k in range(n_cells)])

    def objective(covered: np.ndarray, bounds: np.ndarray) -> float:
        penalty = 0.0
        for j in range(len(kinds)):
            lo_g, hi_g, lo_all, hi_all = SHARP_BANDS if j == 0 else DEGRADED_BANDS
            base = j * (n_true + 1)
            for t in range(n_true):
                if size[base + t] >= MIN_GROUP:
                    c = covered[base + t] / size[base + t]
                    penalty += max(0.0, lo_g - c) + max(0.0, c - hi_g)
            c = covered[base : base + n_true].sum() / max(1.0, set_size[j])
            penalty += 2 * (max(0.0, lo_all - c) + max(0.0, c - hi_all))
        width = ((np.maximum(bounds[:, 1], 0) - np.minimum(bounds[:, 0], 0)) * sharp_spread).sum() / n_sharp
        return 100 * penalty + WIDTH_COST * width

    covered = per_cell.sum(axis=0)
    best = objective(covered, bounds)
    for _ in range(max_steps):
        choice = None
        for k in range(n_cells):
            if not len(members[k]):
                continue
            for side in (0, 1):
                for step in (*STEPS, *(-x for x in STEPS)):
                    lv = levels[k].copy()
                    lv[side] = round(lv[side] + step, 3)
                    if not LEVELS[0] <= lv[side] <= LEVELS[1]:
                        continue
                    b = np.array(ends(k, lv))
                    row = covered_keys(k, *b)
                    trial_bounds = bounds.copy()
                    trial_bounds[k] = b
                    value = objective(covered - per_cell[k] + row, trial_bounds)
                    if choice is None or value < choice[0]:
                        choice = (value, k, lv, b, row)
        if choice is None or choice[0] >= best - 1e-9:
            break
        best, k, levels[k], bounds[k], row = choice
        covered = covered - per_cell[k] + row
        per_cell[k] = row
    fit.levels = levels  # type: ignore[attr-defined]  # for inspection
    return IntervalCalibration(
        coverage=coverage, edges=edges, poor_from=poor_from, sharp_ref=quality.SHARP_CHIP,
        face_ref=quality.LARGE_FACE, lower=[round(float(x), 4) for x in bounds[:, 0]],
        upper=[round(float(x), 4) for x in bounds[:, 1]], fitted_on=fitted_on)
