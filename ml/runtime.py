"""How the age networks run when serving: ONNX Runtime on the CPU, with numpy around it.

This module is the one place that decides it: the runtime, its threads and its memory settings.
`ml.predictor` and `api/` call `load_age_model` and `threads_per_slot` and never branch on what runs
underneath. It imports neither torch nor anything of training: the serving process stays free of
torch (about 226 MB of memory, and most of the container image).

A served model is one ONNX file written by `python -m ml export` (`ml.export`, the torch side) from
the training weights (.safetensors). The graph takes uint8 chips N x 64 x 64 x 3 (RGB) and returns
every member's raw output stacked: M x N x classes (logits) for "resnet10", M x N (years) for "vgg".
How to read that output travels in the same file, as ONNX metadata: version, arch, temperatures,
mirror averaging, residuals (vgg), the age of each class. See `ml.agemodel` for what they mean.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

ONNX_SUFFIX = ".onnx"
INPUT = "chips"
OUTPUT = "outputs"


@dataclass(frozen=True, slots=True)
class AgeDistribution:
    """Summary of one face's predicted age, in years."""

    age: float
    low: float
    high: float
    spread: float


# glibc's mallopt parameter for the size from which an allocation gets pages of its own (mmap).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def tune_allocator() -> bool:
    """Keep a serving process's memory flat (glibc; elsewhere a no-op returning False).

    glibc serves an allocation from its own pages (returned to the system when freed) above a
    threshold that starts at 128 KiB but rises to the largest block freed so far, up to 32 MiB.
    Loading the age model frees tens of MB, so afterwards every decoded photo, detector input and
    network buffer comes from the heaps, where freed memory stays with the process: measured with
    `bench/http.py --memory`, 329 MiB after start-up and about 400 under load. Fixing the threshold
    at 128 KiB keeps big buffers out of the heaps: 258 and about 300. Call it before loading models;
    then `release_free_memory` once they are loaded."""
    libc = _libc()
    return bool(libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))


def release_free_memory() -> None:
    """Give the free pages inside the heaps back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


class AgeEstimator(Protocol):
    """What the predictor needs of an age model: `ServedAgeModel` here, or the torch reference
    (`ml.agemodel.AgeModel`) when comparing the two."""

    version: str

    def estimate(self, chips: np.ndarray, coverage: float = 0.8) -> list[AgeDistribution]: ...


class NotExported(ValueError):
    """The serving runtime reads exported ONNX files only."""


def summarise(probs: np.ndarray, ages: np.ndarray, coverage: float = 0.8,
              point_probs: np.ndarray | None = None) -> list[AgeDistribution]:
    """Expected age (of `point_probs` when given), central `coverage` interval and standard
    deviation of each row of `probs` (N x classes).

    Class k stands for the year [k - 0.5, k + 0.5] (class 0 for [0, 0.5]); the interval's ends are
    read off the piecewise-linear cumulative distribution over those bins.
    """
    p = np.asarray(probs, dtype=np.float64)
    a = np.asarray(ages, dtype=np.float64)
    mean = p @ a
    point = np.asarray(point_probs, dtype=np.float64) @ a if point_probs is not None else mean
    spread = np.sqrt(np.maximum((p * (a[None, :] - mean[:, None]) ** 2).sum(axis=1), 0.0))
    edges = np.concatenate([[0.0], np.arange(len(a), dtype=np.float64) + 0.5])
    cdf = np.concatenate([np.zeros((len(p), 1)), np.cumsum(p, axis=1)], axis=1)
    tail = (1.0 - coverage) / 2.0
    out = []
    for i in range(len(p)):
        c = np.maximum.accumulate(np.clip(cdf[i] / cdf[i, -1], 0.0, 1.0))
        low = float(np.interp(tail, c, edges))
        high = float(np.interp(1.0 - tail, c, edges))
        age = float(point[i])
        out.append(AgeDistribution(age, min(low, age), max(high, age), float(spread[i])))
    return out


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def threads_per_slot(slots: int, cpus: int | None = None) -> int:
    """Intra-op threads for each of `slots` photos processed at once, so that together they never
    ask for more threads than there are CPUs: `OMP_NUM_THREADS` when set (several worker processes on
    one machine, which cannot see each other), else the CPUs this process may run on, divided by
    `slots`."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, slots))


def session_options(threads: int) -> ort.SessionOptions:
    """One session is shared by every slot. Its threads: `threads` for one run (the caller's thread
    is one of them), no inter-op pool, no spinning (a spinning pool thread takes a core from the
    other slot's detector). Memory: no arena and no per-shape memory plans, which ONNX Runtime keeps
    for every batch size it has seen and never gives back; these tensors are small."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3  # errors only
    return so


@dataclass
class ServedAgeModel:
    """An exported age model: one network or an ensemble in one ONNX session, plus how to read it.
    Safe to call from several threads at once (ONNX Runtime sessions are)."""

    session: ort.InferenceSession
    version: str
    arch: str = "resnet10"
    ages: np.ndarray = field(default_factory=lambda: np.zeros(0))  # resnet10: the age of each class
    temperature: float = 1.0
    point_temperature: float | None = None
    mirror: bool = False
    residuals: tuple[float, float, float] = (-5.0, 5.0, 5.0)
    meta: dict[str, str] = field(default_factory=dict)

    def outputs(self, chips: np.ndarray) -> np.ndarray:
        """Every member's raw output for uint8 chips N x 64 x 64 x 3, the mirrored chips appended
        when the model averages them: M x N (x classes), or M x 2N."""
        x = np.ascontiguousarray(chips, dtype=np.uint8)
        if self.mirror:
            x = np.concatenate([x, x[:, :, ::-1]])
        return self.session.run([OUTPUT], {INPUT: x})[0]

    def _average(self, outputs: np.ndarray, n: int, temperature: float) -> np.ndarray:
        probs = softmax(outputs, temperature).mean(axis=0)
        return (probs[:n] + probs[n:]) / 2 if self.mirror else probs

    def probabilities(self, chips: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """Averaged class probabilities (resnet10), N x classes."""
        assert self.arch == "resnet10"
        return self._average(self.outputs(chips), len(chips), temperature or self.temperature)

    def estimate(self, chips: np.ndarray, coverage: float = 0.8) -> list[AgeDistribution]:
        """One estimate per chip, all chips in one run. `coverage` applies to resnet10; a regressor's
        interval is its recorded 80% one."""
        n = len(chips)
        if n == 0:
            return []
        outputs = self.outputs(chips)
        if self.arch == "resnet10":
            probs = self._average(outputs, n, self.temperature)
            point = None
            if self.point_temperature and self.point_temperature != self.temperature:
                point = self._average(outputs, n, self.point_temperature)
            return summarise(probs, self.ages, coverage, point)
        years = outputs.astype(np.float64).mean(axis=0)
        years = (years[:n] + years[n:]) / 2 if self.mirror else years
        lo, hi, sd = self.residuals
        return [AgeDistribution(a, max(0.0, min(a, a + lo)), max(a, a + hi), sd) for a in years.tolist()]


KNOWN = {"version", "arch", "temperature", "point_temperature", "mirror", "residuals", "ages"}


def read_metadata(path: Path | str) -> dict[str, str]:
    """The metadata of an exported model, without building a session."""
    import onnx  # only here: the serving process reads the metadata through its session

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def load_age_model(path: Path | str, threads: int = 1) -> ServedAgeModel:
    """The exported age model at `path`, running with `threads` intra-op threads per call.

    Raises `NotExported` for anything but an exported .onnx file (a .safetensors file is the
    training source: `python -m ml export` writes the served file from it)."""
    path = Path(path)
    if path.suffix != ONNX_SUFFIX:
        raise NotExported(
            f"{path} is not an exported age model: the service runs .onnx files. Export it with "
            f"`python -m ml export {path} --out {path.with_suffix(ONNX_SUFFIX)}` (needs the training extra: "
            f"pip install -e '.[train]') and point WMA_AGE_WEIGHTS at the .onnx file.")
    session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "version" not in meta or "arch" not in meta:
        raise NotExported(f"{path} has no age model metadata: write it with `python -m ml export`.")
    arch = meta["arch"]
    return ServedAgeModel(
        session=session,
        version=meta["version"],
        arch=arch,
        ages=np.asarray(json.loads(meta.get("ages", "[]")), dtype=np.float64),
        temperature=float(meta.get("temperature", "1.0")),
        point_temperature=float(meta["point_temperature"]) if "point_temperature" in meta else None,
        mirror=bool(json.loads(meta.get("mirror", "false"))),
        residuals=tuple(json.loads(meta.get("residuals", "[-5, 5, 5]"))),
        meta={k: v for k, v in meta.items() if k not in KNOWN},
    )
