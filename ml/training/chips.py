"""Face chips for training and evaluation, made with exactly the serving pipeline.

Each image is decoded by `ml.serving.images.load_image`, its largest face found by `ml.serving.faces`, and
aligned by `ml.serving.align` as the service does. Besides the 64 px serving chip, training keeps an 80 px
chip at the same scale (padding 0.375 instead of 0.2: an 8 px margin all round), so that
augmentation can shift and scale and still crop back to 64 px; its centre 64x64 equals the
serving chip (mean absolute difference about 0.5 grey levels, from resampling).

Images where no face is found are recorded as such: training leaves them out (the service would
answer "no face" for them too) and evaluation reports their share separately.
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ml.training.data import Sample

TRAIN_CHIP = 80
TRAIN_PADDING = 0.375
MARGIN = (TRAIN_CHIP - 64) // 2
PIPELINE_TAG = "mp-passes+dlib5-v4"  # change when detection or alignment changes


@dataclass
class ChipSet:
    """Chips of the images where a face was found, with their labels."""

    names: np.ndarray  # str
    chips: np.ndarray  # N x size x size x 3 uint8
    ages: np.ndarray  # int
    genders: np.ndarray  # int, -1 when not known
    races: np.ndarray  # int, -1 when not known
    missed: list[str]  # names of images where no face was found
    face_px: np.ndarray | None = None  # float: the face box's width in the photo; None when not recorded

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, names: set[str]) -> ChipSet:
        keep = np.array([n in names for n in self.names], dtype=bool)
        return ChipSet(self.names[keep], self.chips[keep], self.ages[keep], self.genders[keep],
                       self.races[keep], [m for m in self.missed if m in names],
                       None if self.face_px is None else self.face_px[keep])

    def centre(self, size: int = 64) -> np.ndarray:
        m = (self.chips.shape[1] - size) // 2
        return self.chips[:, m : m + size, m : m + size]


_worker: dict[str, object] = {}


def _init_worker() -> None:
    from ml.serving.align import FaceAligner
    from ml.serving.faces import FaceDetector

    _worker["detector"] = FaceDetector(size=1)
    _worker["aligner"] = FaceAligner()


def _chip_one(args: tuple[str, int, float, str | None]) -> tuple[np.ndarray, float] | None:
    """The chip of the largest face and that face's width in pixels of the photo."""
    from ml.serving.align import FaceAligner
    from ml.serving.faces import FaceDetector
    from ml.serving.images import ImageError, load_image
    from ml.training.degrade import degrade

    path, size, padding, degradation = args
    detector: FaceDetector = _worker["detector"]  # type: ignore[assignment]
    aligner: FaceAligner = _worker["aligner"]  # type: ignore[assignment]
    try:
        data = Path(path).read_bytes()
        img = load_image(degrade(data, degradation) if degradation else data)
    except (ImageError, OSError):
        return None
    faces = detector.detect(img.rgb)
    if not faces:
        return None
    return aligner.chip(img.rgb, faces[0].box, size, padding), faces[0].box.width / img.scale


def extract(samples: list[Sample], size: int = 64, padding: float = 0.2, workers: int = 2,
            desc: str = "chips", degradation: str | None = None) -> ChipSet:
    """Run the serving pipeline on every sample, in `workers` processes; on a degraded copy of each
    photo when `degradation` names one of `ml.training.degrade.DEGRADATIONS`."""
    jobs = [(str(s.path), size, padding, degradation) for s in samples]
    ctx = mp.get_context("spawn")  # MediaPipe graphs do not survive a fork
    if workers > 1:
        with ctx.Pool(workers, initializer=_init_worker) as pool:
            results = list(tqdm(pool.imap(_chip_one, jobs, chunksize=16), total=len(jobs), desc=desc))
    else:
        _init_worker()
        try:
            results = [_chip_one(j) for j in tqdm(jobs, desc=desc)]
        finally:
            _worker.pop("detector").close()  # type: ignore[attr-defined]
            _worker.clear()
    found = [i for i, r in enumerate(results) if r is not None]
    chips = np.stack([results[i][0] for i in found]) if found else np.zeros((0, size, size, 3), np.uint8)
    return ChipSet(
        names=np.array([samples[i].name for i in found], dtype=object),
        chips=chips,
        ages=np.array([samples[i].age for i in found], dtype=np.int64),
        genders=np.array([-1 if samples[i].gender is None else samples[i].gender for i in found], dtype=np.int64),
        races=np.array([-1 if samples[i].race is None else samples[i].race for i in found], dtype=np.int64),
        missed=[s.name for s, r in zip(samples, results, strict=True) if r is None],
        face_px=np.array([results[i][1] for i in found], dtype=np.float64),
    )


def cached_training_chips(samples: list[Sample], cache_dir: Path, workers: int = 2,
                          degradation: str | None = None) -> ChipSet:
    """80 px training chips for `samples`, computed once per folder and kept in `cache_dir`; files
    added to a folder later are computed and appended on the next call. With `degradation`, chips
    of degraded copies (`ml.training.degrade`), cached apart."""
    by_folder: dict[Path, list[Sample]] = {}
    for s in samples:
        by_folder.setdefault(s.path.parent.resolve(), []).append(s)
    parts = []
    for folder, members in by_folder.items():
        key = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
        kind = f"-{degradation}" if degradation else ""
        path = cache_dir / f"chips-{PIPELINE_TAG}-{TRAIN_CHIP}px{kind}-{folder.name}-{key}.npz"
        cached = load_chipset(path) if path.exists() else None
        if cached is not None:
            cached = _forget_gone(path, cached, folder)
        known = set(cached.names) | set(cached.missed) if cached else set()
        todo = [s for s in members if s.name not in known]
        if todo:
            fresh = extract(todo, TRAIN_CHIP, TRAIN_PADDING, workers, desc=f"training chips ({folder.name}{kind})",
                            degradation=degradation)
            cached = concat([cached, fresh]) if cached else fresh
            save_chipset(path, cached)
        assert cached is not None
        parts.append(cached.subset({s.name for s in members}))
    return concat(parts)


def _forget_gone(path: Path, cached: ChipSet, folder: Path) -> ChipSet:
    """The cache without the chips of files no longer in `folder` (a withdrawn submission, say),
    rewritten when that removed any: a chip does not outlive its photo."""
    present = {p.name for p in folder.rglob("*")}
    kept = cached.subset(present)
    if len(kept) < len(cached) or len(kept.missed) < len(cached.missed):
        save_chipset(path, kept)
    return kept


def concat(parts: list[ChipSet]) -> ChipSet:
    parts = [p for p in parts if p is not None]
    known = all(p.face_px is not None for p in parts)
    return ChipSet(
        names=np.concatenate([p.names for p in parts]),
        chips=np.concatenate([p.chips for p in parts]),
        ages=np.concatenate([p.ages for p in parts]),
        genders=np.concatenate([p.genders for p in parts]),
        races=np.concatenate([p.races for p in parts]),
        missed=[m for p in parts for m in p.missed],
        face_px=np.concatenate([p.face_px for p in parts]) if known else None,  # type: ignore[misc]
    )


def save_chipset(path: Path, c: ChipSet) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    extra = {} if c.face_px is None else {"face_px": c.face_px}
    np.savez(tmp, names=c.names.astype(str), chips=c.chips, ages=c.ages, genders=c.genders, races=c.races,
             missed=np.array(c.missed, dtype=str), **extra)
    tmp.replace(path)


def load_chipset(path: Path) -> ChipSet:
    with np.load(path) as z:
        return ChipSet(z["names"].astype(object), z["chips"], z["ages"], z["genders"], z["races"],
                       list(z["missed"].astype(str)), z["face_px"] if "face_px" in z.files else None)
