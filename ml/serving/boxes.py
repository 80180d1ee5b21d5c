"""A detected face: its box and keypoints, in pixels of the upright image (every detector's output)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Point:
    x: float
    y: float


@dataclass(frozen=True, slots=True)
class Box:
    """A face's box in pixels of the upright image: top-left corner and size."""

    x: float
    y: float
    width: float
    height: float

    @property
    def area(self) -> float:
        return self.width * self.height

    def scaled(self, factor: float) -> Box:
        return Box(self.x * factor, self.y * factor, self.width * factor, self.height * factor)


@dataclass(frozen=True, slots=True)
class Face:
    """One detected face. Keypoints: right eye, left eye, nose tip, mouth, right ear, left ear
    (the person's right and left), in pixels of the upright image."""

    box: Box
    score: float
    keypoints: tuple[Point, ...]

    def scaled(self, factor: float) -> Face:
        return Face(self.box.scaled(factor), self.score,
                    tuple(Point(p.x * factor, p.y * factor) for p in self.keypoints))

