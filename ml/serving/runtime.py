"""How the age networks run when serving: ONNX Runtime on the CPU, with numpy around it.

This module is the one place that decides it: the runtime, its threads and its memory settings.
`ml.serving.predictor` and `api/` load models through `load_age_model` and never branch on what runs
underneath. It imports neither torch nor anything of training: the serving process stays free of
torch (about 226 MB of memory, and most of the container image).

A served model is one ONNX file written by `python -m ml export` (`ml.training.onnx_export`, the torch side) from
the training weights (.safetensors). The graph takes uint8 chips N x 64 x 64 x 3 (RGB) and has one
output per member of the model, `member0`, `member1`, ...: N x classes (logits) for "resnet10", N
(years) for "vgg". How to read them travels in the same file, as ONNX metadata: version, arch,
temperatures, mirror averaging, residuals (vgg), the age of each class, and (models calibrated since
December 2026) the calibrated interval (`ml.serving.interval`). See `ml.training.agemodel` for what they
mean.

Threads: every run of the session uses one thread, and `CpuShare` decides how many runs one call
makes at once. A photo alone spreads its age step over the CPUs that no other photo holds and the
machine leaves idle (its chips, or the members, split between threads); under load each photo keeps
to its own thread, so that photos in flight never ask for more threads than there are CPUs.

Memory: `tune_allocator` (the serving process calls it before loading) keeps glibc from holding on to
what each photo frees; `photo_done` trims now and then. `hugepage_env`: the environment a serving
process starts with, so that those fresh pages come two megabytes at a time.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime as ort

from ml.serving import quality
from ml.serving.interval import IntervalCalibration, from_metadata

ONNX_SUFFIX = ".onnx"
INPUT = "chips"


def member_output(i: int) -> str:
    return f"member{i}"


@dataclass(frozen=True, slots=True)
class AgeDistribution:
    """Summary of one face's predicted age, in years."""

    age: float
    low: float
    high: float
    spread: float
    range_note: str | None = None  # why the range is wider, when the face's quality made it so (`ml.serving.interval`)


# glibc's mallopt parameter for the size from which an allocation gets pages of its own (mmap).
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1024 * 1024
TRIM_EVERY = 50  # photos between two malloc_trim calls (about 1 ms each in a serving process)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


class _Allocator:
    """The process's allocator policy (process-wide, as the allocator is): off until `tune_allocator`."""

    def __init__(self) -> None:
        self.trim_every = 0
        self.photos = itertools.count(1)


_allocator = _Allocator()


def tune_allocator() -> bool:
    """Keep a serving process's memory flat (glibc; elsewhere a no-op returning False).

    glibc serves an allocation from pages of its own (returned to the system when freed) above a
    threshold that starts at 128 KiB but rises to the largest block freed so far, up to 32 MiB, and
    keeps up to twice that free at the top of each thread's heap. Loading the age model frees tens of
    MB, so afterwards decoded photos, detector inputs and network buffers all come from the heaps and
    what they free stays with the process. Measured with `bench/http_latency.py --memory 1800` (mixed uploads,
    concurrency 8), resident memory after start-up / under load, and the CPU time of one 640x480
    photo: glibc's default 329 / about 400 MiB, 13.0 ms; a fixed 128 KiB threshold 258 / 300, 15.5-18
    ms (every buffer over 128 KiB is fresh pages to fault in); 1 MiB 255 / 315, 14.0 ms; 1 MiB and
    `malloc_trim` every 50 photos 255 / 300, 14.0 ms. That last is this: call it before loading the
    models (then `release_free_memory` once they are loaded); the predictor reports each photo done."""
    libc = _libc()
    if not (libc and libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)):
        return False
    _allocator.trim_every = TRIM_EVERY
    return True


# glibc's tunable (2.35 and later) that has malloc ask the kernel for transparent huge pages (madvise)
# for what it maps, read once when a process starts. With the 1 MiB threshold above every large buffer
# of a photo (the decoded image, the detectors' inputs, libjpeg's whole-image buffers of a progressive
# JPEG) is fresh memory, faulted in 4 KiB at a time, which on this 2-CPU virtual machine (load 14-16)
# costs a good part of a photo's CPU. With the tunable, the served predictor's CPU per photo (one thread, same
# process, 20 photos each): 640x480 one face 25.0 -> 21.7 ms, the 6-face photo 98-102 -> 85-92 ms, the
# 4352x2903 progressive JPEG 116-126 -> 98-104 ms; resident memory 246-247 -> 249-251 MiB. Over HTTP,
# beside main's server (`python -m bench.photo_cost`, server CPU per request over a 640x480 Pillow
# decode, three runs at load 2-15): the 6-face photo 3-15% less, the 4352x2903 photo 11-20% less, the
# 640x480 JPEG no clear change (-2, +10, -1%; two servers on the same code differ by up to 4%). Results
# are the same to the bit: only where the memory comes from changes. The kernel must allow it
# (/sys/kernel/mm/transparent_hugepage/enabled "madvise" or "always"); elsewhere it does nothing.
HUGEPAGE_TUNABLE = "glibc.malloc.hugetlb"


def hugepage_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """`env` with glibc's huge-page tunable added (`GLIBC_TUNABLES`), for the serving process to start
    with; None where there is nothing to add: not Linux, or the tunable already set (which is how to
    keep 4 KiB pages: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`)."""
    tunables = env.get("GLIBC_TUNABLES", "")
    if not sys.platform.startswith("linux") or HUGEPAGE_TUNABLE in tunables:
        return None
    return {**env, "GLIBC_TUNABLES": ":".join(filter(None, [tunables, f"{HUGEPAGE_TUNABLE}=1"]))}


def release_free_memory() -> None:
    """Give the free pages inside the heaps back to the system (glibc's malloc_trim)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)


def photo_done() -> None:
    """Called after each photo: every `TRIM_EVERY` photos once `tune_allocator` is on, trims the heaps."""
    every = _allocator.trim_every
    if every and next(_allocator.photos) % every == 0:
        release_free_memory()


class AgeEstimator(Protocol):
    """What the predictor needs of an age model: `ServedAgeModel` here, or the torch reference
    (`ml.training.agemodel.AgeModel`) when comparing the two."""

    version: str

    def estimate(self, chips: np.ndarray, coverage: float = 0.8,
                 face_px: np.ndarray | None = None) -> list[AgeDistribution]: ...


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


def calibrated(estimates: list[AgeDistribution], interval: IntervalCalibration | None, chips: np.ndarray,
               coverage: float, face_px: np.ndarray | None = None) -> list[AgeDistribution]:
    """`estimates` with the model's calibrated interval (`ml.serving.interval`) when it has one for this
    `coverage`; as they are otherwise (older models, or another coverage). `face_px`: the width of
    each face in pixels of the photo as sent, when known."""
    if interval is None or abs(coverage - interval.coverage) > 1e-9 or not estimates:
        return estimates
    ages = np.array([e.age for e in estimates])
    spreads = np.array([e.spread for e in estimates])
    sharp = quality.sharpness(chips)
    low, high = interval.bounds(ages, spreads, sharp, face_px)
    notes = interval.range_notes(ages, spreads, sharp, face_px)
    return [AgeDistribution(e.age, float(lo), float(hi), e.spread, note)
            for e, lo, hi, note in zip(estimates, low, high, notes, strict=True)]


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def available_cpus() -> int:
    """The CPUs this process may use: `OMP_NUM_THREADS` when set (several worker processes on one
    machine cannot see each other: each is told its share), else those it may run on."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class CpuShare:
    """The CPUs of a process and the photos it has in flight, one CPU each (decoding, detection and
    alignment run on the photo's own thread). `width()` is how many threads the age step of a photo
    may use now: its own, plus CPUs that no other photo of this process holds and that the machine
    leaves idle (by its load average: on a machine busy with other processes a second thread only
    waits for a CPU; measured on this shared 2-CPU host at load 7-10, spreading made a lone photo
    slower and cost about half again the CPU). Helper threads are created on first need.

    A photo that arrives while another's age step is spread out briefly shares a CPU with it; a
    photo never starts more threads than there are idle CPUs.
    """

    def __init__(self, cpus: int | None = None, load: Callable[[], float] | None = None) -> None:
        self.cpus = max(1, cpus or available_cpus())
        self._load = load or (lambda: os.getloadavg()[0])
        self._in_flight = 0
        self._lock = threading.Lock()
        self._helpers: ThreadPoolExecutor | None = None

    @contextmanager
    def photo(self) -> Iterator[None]:
        with self._lock:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight -= 1

    def width(self) -> int:
        free = self.cpus - max(0, self._in_flight - 1)  # this photo's CPU and those no other photo holds
        if free <= 1:
            return 1
        idle = self.cpus - self._load()  # CPUs the whole machine left idle, on average over a minute
        return max(1, min(free, 1 + int(idle)))

    def helpers(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._helpers is None:
                self._helpers = ThreadPoolExecutor(max(1, self.cpus - 1), thread_name_prefix="age-step")
            return self._helpers

    def close(self) -> None:
        if self._helpers is not None:
            self._helpers.shutdown(wait=False)


def session_options() -> ort.SessionOptions:
    """One session is shared by every photo in flight, each run on the caller's thread alone (no
    intra- or inter-op pools: `CpuShare` decides the parallelism). Memory: no arena and no per-shape
    memory plans, which ONNX Runtime keeps for every batch size it has seen and never gives back;
    these tensors are small."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3  # errors only
    return so


def balanced(costs: list[float], parts: int) -> list[list[int]]:
    """Indices of `costs` in `parts` groups of about equal total (largest first, each to the lightest)."""
    groups: list[list[int]] = [[] for _ in range(parts)]
    totals = [0.0] * parts
    for i in sorted(range(len(costs)), key=lambda i: -costs[i]):
        k = totals.index(min(totals))
        groups[k].append(i)
        totals[k] += costs[i]
    return [g for g in groups if g]


@dataclass
class ServedAgeModel:
    """An exported age model: one network or an ensemble in one ONNX session, plus how to read it.
    Safe to call from several threads at once (ONNX Runtime sessions are)."""

    session: ort.InferenceSession
    version: str
    cpus: CpuShare
    arch: str = "resnet10"
    ages: np.ndarray = field(default_factory=lambda: np.zeros(0))  # resnet10: the age of each class
    temperature: float = 1.0
    point_temperature: float | None = None
    mirror: bool = False
    residuals: tuple[float, float, float] = (-5.0, 5.0, 5.0)
    member_costs: list[float] = field(default_factory=lambda: [1.0])  # relative work of each member
    meta: dict[str, str] = field(default_factory=dict)
    interval: IntervalCalibration | None = None  # resnet10: the calibrated interval (`ml.serving.interval`)

    def outputs(self, chips: np.ndarray) -> np.ndarray:
        """Every member's raw output for uint8 chips N x 64 x 64 x 3, the mirrored chips appended
        when the model averages them: M x N (x classes), or M x 2N. Spread over `cpus.width()`
        threads: by chips when there are enough of them, else by members."""
        x = np.ascontiguousarray(chips, dtype=np.uint8)
        if self.mirror:
            x = np.concatenate([x, x[:, :, ::-1]])
        members = list(range(len(self.member_costs)))
        width = min(self.cpus.width(), max(len(x), len(members)))
        if width <= 1:
            return self._run(x, members)
        if len(x) >= width:
            bounds = np.linspace(0, len(x), width + 1).round().astype(int)
            parts = self._parallel([(x[a:b], members) for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
            return np.concatenate(parts, axis=1)
        groups = balanced(self.member_costs, width)
        parts = self._parallel([(x, g) for g in groups])
        out = np.empty((len(members), *parts[0].shape[1:]), dtype=parts[0].dtype)
        for g, part in zip(groups, parts, strict=True):
            out[g] = part
        return out

    def _run(self, x: np.ndarray, members: list[int]) -> np.ndarray:
        return np.stack(self.session.run([member_output(i) for i in members], {INPUT: x}))

    def _parallel(self, jobs: list[tuple[np.ndarray, list[int]]]) -> list[np.ndarray]:
        """The first job on this thread, the others on helper threads (ONNX Runtime lets go of the GIL)."""
        helpers = self.cpus.helpers()
        futures = [helpers.submit(self._run, x, m) for x, m in jobs[1:]]
        first = self._run(*jobs[0])
        return [first, *(f.result() for f in futures)]

    def _average(self, outputs: np.ndarray, n: int, temperature: float) -> np.ndarray:
        probs = softmax(outputs, temperature).mean(axis=0)
        return (probs[:n] + probs[n:]) / 2 if self.mirror else probs

    def probabilities(self, chips: np.ndarray, temperature: float | None = None) -> np.ndarray:
        """Averaged class probabilities (resnet10), N x classes."""
        assert self.arch == "resnet10"
        return self._average(self.outputs(chips), len(chips), temperature or self.temperature)

    def estimate(self, chips: np.ndarray, coverage: float = 0.8,
                 face_px: np.ndarray | None = None) -> list[AgeDistribution]:
        """One estimate per chip. `coverage` applies to resnet10 (calibrated when the model carries
        a calibration for it; `face_px`, each face's width in the photo, widens the range of a small
        face); a regressor's interval is its recorded 80% one."""
        n = len(chips)
        if n == 0:
            return []
        outputs = self.outputs(chips)
        if self.arch == "resnet10":
            probs = self._average(outputs, n, self.temperature)
            point = None
            if self.point_temperature and self.point_temperature != self.temperature:
                point = self._average(outputs, n, self.point_temperature)
            return calibrated(summarise(probs, self.ages, coverage, point), self.interval, chips, coverage, face_px)
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


def load_age_model(path: Path | str, cpus: CpuShare | None = None) -> ServedAgeModel:
    """The exported age model at `path`; `cpus` is the share of the process it runs in (the
    predictor's, so that it sees the photos in flight; default: a share of its own).

    Raises `NotExported` for anything but an exported .onnx file (a .safetensors file is the
    training source: `python -m ml export` writes the served file from it)."""
    path = Path(path)
    if path.suffix != ONNX_SUFFIX:
        raise NotExported(
            f"{path} is not an exported age model: the service runs .onnx files. Export it with "
            f"`python -m ml export {path} --out {path.with_suffix(ONNX_SUFFIX)}` (needs the training extra: "
            f"pip install -e '.[train]') and point WMA_AGE_WEIGHTS at the .onnx file.")
    session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if "version" not in meta or "arch" not in meta:
        raise NotExported(f"{path} has no age model metadata: write it with `python -m ml export`.")
    members = json.loads(meta.get("members", "[{}]"))
    outputs = [o.name for o in session.get_outputs()]
    if outputs != [member_output(i) for i in range(len(members))]:
        raise NotExported(f"{path} was exported by an older `python -m ml export`: export it again.")
    return ServedAgeModel(
        session=session,
        version=meta["version"],
        cpus=cpus or CpuShare(),
        arch=meta["arch"],
        ages=np.asarray(json.loads(meta.get("ages", "[]")), dtype=np.float64),
        temperature=float(meta.get("temperature", "1.0")),
        point_temperature=float(meta["point_temperature"]) if "point_temperature" in meta else None,
        mirror=bool(json.loads(meta.get("mirror", "false"))),
        residuals=tuple(json.loads(meta.get("residuals", "[-5, 5, 5]"))),
        # A ResNet-10 is five residual blocks; each appended block is about a fifth more work.
        member_costs=[1.0 + 0.2 * int(m.get("extra_blocks", 0)) for m in members],
        meta={k: v for k, v in meta.items() if k not in KNOWN},
        interval=from_metadata(meta),
    )
