"""Bulk scoring on Ray Data: `python -m ml batch INPUT... --out FILE`.

One row per photo file: the number of faces worth an age and of faces set aside (`POST /predict`'s
`faces` and `set_aside`) and, for the largest face, its age, the 80% interval, why that is wider
(`range_note`) and the box, with the model's version; a file that cannot be read or decoded is a row with the
error `code` the API would answer (`ml.serving.images.ImageError.code`, `file_too_large`), or
`unreadable_file` for a file that cannot be opened at all (the API never opens files).

The driver lists the inputs as it walks them (folders, glob patterns, files), writing the paths
into Ray's object store in blocks of `LISTING_BLOCK` files, so a listing of millions never sits in
the driver's memory. Ray Data then reads the files in parallel tasks and scores them in a pool of
actors that each hold a `Predictor`; the driver writes the rows as they come back, to CSV,
Parquet or JSON lines by the extension of `--out`. Run again with the same `--out` and the files it
already has a row for are skipped. Photos must lie at the same path on every node of a cluster.
"""

from __future__ import annotations

import atexit
import glob
import logging
import os
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from ml.batch_output import COLUMNS, SCHEMA, open_output, output_format

log = logging.getLogger("ml.batch")

# What `python -m ml batch` (ml/__main__.py) and the tests use; the output file is ml/batch_output.py's.
__all__ = ["COLUMNS", "DEFAULT_MAX_BYTES", "UNREADABLE", "Summary", "check_inputs", "connect", "list_files",
           "output_format", "run"]

# Walking a folder takes these; files named on the command line (or matched by a pattern) are all taken.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Paths per block of the listing: the unit of work of one read task, then of one actor call. Small
# enough that a few thousand photos spread over every actor; 10 million files make 100,000 blocks.
LISTING_BLOCK = 100
READ_BATCH = 16  # files a read task hands on at once (at most 16 x max_bytes in flight per task)
SCORE_BATCH = 16  # photos an actor scores per call
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # the API's default upload limit (WMA_MAX_UPLOAD_BYTES)
# Logical CPUs an actor asks of Ray. An actor runs one thread, but asking a whole CPU per actor
# with one actor per CPU leaves nothing for the read tasks, and the pipeline stalls.
ACTOR_CPUS = 0.5
READ_CPUS = 0.25  # reading a file waits on the disk more than it computes

UNREADABLE = "unreadable_file"  # the file cannot be opened or read (missing, not a regular file, I/O error)
TOO_LARGE = "file_too_large"  # as the API answers a file over its upload limit
INTERNAL = "internal_error"  # as the API answers an unexpected failure (logged)


# --- the listing -------------------------------------------------------------------------------------


def shown(path: str) -> str:
    """The path as written in the output: file names that are not UTF-8 get backslash escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_inputs(inputs: Iterable[str]) -> None:
    """Fail before any work for an input that is neither a file, a folder nor a glob pattern."""
    for item in inputs:
        if not glob.has_magic(item) and not os.path.lexists(item):
            raise FileNotFoundError(f"no such file or folder: {item}")


def walk(folder: str) -> Iterator[str]:
    """Photo files under `folder`, as the file system lists them (no sorting, nothing held but the
    folders still to visit). Symbolic links to folders are not followed (no cycles)."""
    pending = [folder]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError as e:
            log.warning("cannot list a folder: %s", e.strerror)
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    elif os.path.splitext(entry.name)[1].lower() in PHOTO_SUFFIXES:
                        yield entry.path
                except OSError:
                    continue


def list_files(inputs: Iterable[str]) -> Iterator[str]:
    """Absolute paths of the files to score, streamed: folders walked (photo files only), glob
    patterns expanded lazily (`**` for any depth; a matched folder is walked), files taken as named."""
    for item in inputs:
        if glob.has_magic(item):
            matches = glob.iglob(item, recursive=True)
        else:
            matches = iter([item])
        for match in matches:
            path = os.path.abspath(match)
            if os.path.isdir(path):
                yield from walk(path)
            else:
                yield path


class DoneKeys:
    """The files an earlier run wrote a row for, as a sorted array of 64-bit keys (8 bytes a file).

    A key is Python's own string hash: random per process, but the output is read and the inputs
    listed by this one process. Two of ten million names share a key with a chance of about 3 in
    a million (a file then skipped as done)."""

    def __init__(self, names: Iterable[str]) -> None:
        names = iter(names)
        chunks = [np.empty(0, np.int64)]
        while len(chunk := np.fromiter(map(hash, islice(names, 100_000)), dtype=np.int64)):
            chunks.append(chunk)
        self.keys = np.unique(np.concatenate(chunks))

    def __len__(self) -> int:
        return len(self.keys)

    def missing(self, names: list[str]) -> list[bool]:
        """For each name, whether it still has to be scored."""
        if not len(self.keys):
            return [True] * len(names)
        keys = np.fromiter(map(hash, names), dtype=np.int64, count=len(names))
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return (self.keys[at] != keys).tolist()


@dataclass
class Listing:
    blocks: list[Any]  # Ray object refs of Arrow tables: file (as shown), path (bytes, to open)
    to_score: int
    skipped: int  # already in the output


def put_listing(paths: Iterable[str], done: DoneKeys) -> Listing:
    import ray

    blocks: list[Any] = []
    to_score = skipped = 0
    pending: list[str] = []

    def flush() -> None:
        nonlocal to_score, skipped
        names = [shown(p) for p in pending]
        keep = done.missing(names)
        names = [n for n, k in zip(names, keep, strict=True) if k]
        raw = [os.fsencode(p) for p, k in zip(pending, keep, strict=True) if k]
        skipped += len(pending) - len(names)
        if names:
            blocks.append(ray.put(pa.table({"file": pa.array(names, pa.string()), "path": pa.array(raw, pa.binary())})))
            to_score += len(names)
        pending.clear()

    for path in paths:
        pending.append(path)
        if len(pending) == LISTING_BLOCK:
            flush()
    flush()
    return Listing(blocks, to_score, skipped)


# --- the work done on the cluster --------------------------------------------------------------------


def read_files(batch: pa.Table, max_bytes: int) -> pa.Table:
    """Each file's bytes, or the code saying why there are none. Never blocks on a FIFO or a device:
    only regular files are read."""
    data: list[bytes | None] = []
    errors: list[str | None] = []
    for raw in batch.column("path").to_pylist():
        content: bytes | None = None
        error: str | None = None
        try:
            fd = os.open(raw, os.O_RDONLY | os.O_NONBLOCK)
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    error = UNREADABLE
                elif info.st_size > max_bytes:
                    error = TOO_LARGE
                else:
                    with os.fdopen(fd, "rb", closefd=False) as f:
                        content = f.read(max_bytes + 1)
                    if len(content) > max_bytes:  # it grew since the stat
                        content, error = None, TOO_LARGE
            finally:
                os.close(fd)
        except OSError:
            error = UNREADABLE
        data.append(content)
        errors.append(error)
    return pa.table({"file": batch.column("file"), "data": pa.array(data, pa.binary()),
                     "error": pa.array(errors, pa.string())})


def error_row(file: str, code: str) -> dict[str, Any]:
    return {"file": file, "error": code}


def result_row(file: str, prediction: Any) -> dict[str, Any]:
    """The row of a scored photo: the largest face (the predictor answers largest first)."""
    row: dict[str, Any] = {"file": file, "faces": len(prediction.faces), "set_aside": len(prediction.set_aside),
                           "model_version": prediction.model_version}
    if prediction.faces:
        face = prediction.faces[0]
        box = face.face.box
        row.update(age=face.age, age_low=face.age_interval[0], age_high=face.age_interval[1],
                   range_note=face.range_note, box_x=box.x, box_y=box.y, box_width=box.width, box_height=box.height)
    return row


class ScorePhotos:
    """A Ray actor's work: holds one `Predictor` (loaded once) and scores batches of photos."""

    def __init__(self, weights: str | None) -> None:
        from ml.serving.predictor import Predictor, PredictorSettings

        # One thread, one detector graph: the pool has an actor per CPU, each scoring one photo at a time.
        self.predictor = Predictor.load(weights, PredictorSettings(parallel=1), threads=1)
        atexit.register(self.predictor.close)  # before the interpreter tears down MediaPipe's modules

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ml.serving.images import ImageError

        rows = []
        for file, data, error in zip(batch.column("file").to_pylist(), batch.column("data").to_pylist(),
                                     batch.column("error").to_pylist(), strict=True):
            if error is not None:
                rows.append(error_row(file, error))
                continue
            try:
                rows.append(result_row(file, self.predictor.predict(data)))
            except ImageError as e:
                rows.append(error_row(file, e.code))
            except Exception:  # one bad photo must not sink a run of millions; logged without its name
                log.exception("scoring a photo failed")
                rows.append(error_row(file, INTERNAL))
        return pa.Table.from_pylist(rows, schema=SCHEMA)



# --- the run -----------------------------------------------------------------------------------------


@dataclass
class Summary:
    scored: int  # rows written by this run
    skipped: int  # files that already had a row
    errors: int  # rows of this run with an error code
    seconds: float  # from the first file listed to the last row written

    @property
    def per_second(self) -> float:
        return self.scored / self.seconds if self.seconds > 0 else 0.0


def connect(address: str | None, cpus: int | None) -> None:
    """Join the cluster at `address` ("auto": the one running here), or start a local Ray."""
    import ray

    if ray.is_initialized():  # a caller (a test, a notebook) set Ray up already
        return
    local = address in (None, "local")
    # The workers' output (MediaPipe's native library logs each model it loads) stays in Ray's log
    # files (/tmp/ray/session_latest/logs); a failed actor or task still raises here.
    ray.init(address="local" if local else address, num_cpus=cpus if local else None,
             include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    logging.getLogger("ray.data").setLevel(logging.ERROR)  # its progress bars are off: ours counts photos


def run(inputs: list[str], out: Path, *, weights: str | None = None, address: str | None = None,
        actors: int | None = None, cpus: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
        progress: bool = True) -> Summary:
    """Score every photo file of `inputs` into `out`, skipping the files `out` already has."""
    import ray
    import ray.data
    from tqdm import tqdm

    output = open_output(out)
    check_inputs(inputs)
    start = time.perf_counter()
    done = DoneKeys(output.done())
    connect(address, cpus)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # ours counts photos
    context.print_on_execution_start = False
    listing = put_listing(list_files(inputs), done)
    if actors is None:  # one per CPU of the cluster
        actors = int(ray.cluster_resources().get("CPU", 1))
    actors = max(1, min(actors, len(listing.blocks)))  # an actor without a block would only load a model
    summary = Summary(scored=0, skipped=listing.skipped, errors=0, seconds=0.0)
    output.open()
    try:
        if listing.blocks:
            dataset = (
                ray.data.from_arrow_refs(listing.blocks)
                .map_batches(read_files, fn_kwargs={"max_bytes": max_bytes}, batch_size=READ_BATCH,
                             batch_format="pyarrow", num_cpus=READ_CPUS)
                .map_batches(ScorePhotos, fn_constructor_kwargs={"weights": str(weights) if weights else None},
                             batch_size=SCORE_BATCH, batch_format="pyarrow", num_cpus=ACTOR_CPUS,
                             compute=ray.data.ActorPoolStrategy(size=actors))
            )
            with tqdm(total=listing.to_score, unit="photo", disable=not progress, file=sys.stderr) as bar:
                for table in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    output.write(table)
                    summary.scored += table.num_rows
                    summary.errors += table.num_rows - table.column("error").null_count
                    bar.update(table.num_rows)
    finally:
        output.close()
    summary.seconds = time.perf_counter() - start
    return summary
