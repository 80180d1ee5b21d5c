"""Age bands that figures are broken down by (evaluation, training plots, the API's model figures).
Imports nothing, so that the API and serving-side code can use them without training's modules."""

from __future__ import annotations

AGE_BANDS = ((0, 12), (13, 19), (20, 39), (40, 59), (60, 79), (80, 200))


def band_names() -> list[str]:
    return [f"{lo}-{hi}" if hi < 200 else f"{lo}+" for lo, hi in AGE_BANDS]


def band_of(age: float) -> str:
    """The age band (0-12, 13-19, 20-39, 40-59, 60-79, 80+) a true age falls in."""
    names = band_names()
    for (lo, _), name in zip(reversed(AGE_BANDS), reversed(names), strict=True):
        if age >= lo:
            return name
    return names[0]
