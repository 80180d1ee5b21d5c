"""Bulk scoring on Ray Data: `python -m ml batch INPUT... --out FILE`.

One row per photo file: the number of faces and, for the largest face, its age, the 80% interval
and the box, with the model's version; a file that cannot be read or decoded is a row with the
error `code` the API would answer (`ml.images.ImageError.code`, `file_too_large`), or
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
import csv
import glob
import json
import logging
import os
import shutil
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
import pyarrow.parquet as pq

log = logging.getLogger("ml.batch")

# Walking a folder takes these; files named on the command line (or matched by a pattern) are all taken.
PHOTO_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
# Paths per block of the listing: the unit of work of one read task, then of one actor call. Small
# enough that a few thousand photos spread over every actor; 10 million files make 100,000 blocks.
LISTING_BLOCK = 100
READ_BATCH = 16  # files a read task hands on at once (at most 16 x max_bytes in flight per task)
SCORE_BATCH = 16  # photos an actor scores per call
PARQUET_ROWS = 10_000  # rows per Parquet part: what an interrupted run may have to redo
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # the API's default upload limit (WMA_MAX_UPLOAD_BYTES)
# Logical CPUs an actor asks of Ray. An actor runs one thread, but asking a whole CPU per actor
# with one actor per CPU leaves nothing for the read tasks, and the pipeline stalls.
ACTOR_CPUS = 0.5
READ_CPUS = 0.25  # reading a file waits on the disk more than it computes

UNREADABLE = "unreadable_file"  # the file cannot be opened or read (missing, not a regular file, I/O error)
TOO_LARGE = "file_too_large"  # as the API answers a file over its upload limit
INTERNAL = "internal_error"  # as the API answers an unexpected failure (logged)

SCHEMA = pa.schema([
    ("file", pa.string()),
    ("faces", pa.int32()),
    ("age", pa.float64()),
    ("age_low", pa.float64()),
    ("age_high", pa.float64()),
    ("box_x", pa.float64()),
    ("box_y", pa.float64()),
    ("box_width", pa.float64()),
    ("box_height", pa.float64()),
    ("model_version", pa.string()),
    ("error", pa.string()),
])
COLUMNS = SCHEMA.names
FORMATS = {".csv": "csv", ".parquet": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def output_format(out: Path) -> str:
    """`csv`, `parquet` or `jsonl` by the extension of `out`; ValueError for anything else."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        raise ValueError(f"--out must end in {', '.join(FORMATS)}: {out}")
    return fmt


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
    row: dict[str, Any] = {"file": file, "faces": len(prediction.faces), "model_version": prediction.model_version}
    if prediction.faces:
        face = prediction.faces[0]
        box = face.face.box
        row.update(age=face.age, age_low=face.age_interval[0], age_high=face.age_interval[1],
                   box_x=box.x, box_y=box.y, box_width=box.width, box_height=box.height)
    return row


class ScorePhotos:
    """A Ray actor's work: holds one `Predictor` (loaded once) and scores batches of photos."""

    def __init__(self, weights: str | None) -> None:
        from ml.predictor import Predictor, PredictorSettings

        # One thread, one detector graph: the pool has an actor per CPU, each scoring one photo at a time.
        self.predictor = Predictor.load(weights, PredictorSettings(parallel=1), threads=1)
        atexit.register(self.predictor.close)  # before the interpreter tears down MediaPipe's modules

    def __call__(self, batch: pa.Table) -> pa.Table:
        from ml.images import ImageError

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


# --- the output --------------------------------------------------------------------------------------


def complete_size(path: Path) -> int:
    """Bytes up to the end of the last complete line (0 when there is none)."""
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        while end > 0:
            start = max(0, end - (1 << 16))
            f.seek(start)
            at = f.read(end - start).rfind(b"\n")
            if at >= 0:
                return start + at + 1
            end = start
    return 0


def not_ours(path: Path) -> ValueError:
    return ValueError(f"{path} exists and is not an output of this command: give another --out")


def drop_partial_line(path: Path, starts: tuple[bytes, ...]) -> None:
    """Cut a last line left unfinished by an interrupted run, if it begins as one of ours would (one
    of `starts`, or a piece of one); anything else is someone else's file, and is left alone."""
    end = complete_size(path)
    with path.open("rb") as f:
        f.seek(end)
        tail = f.read(max(len(s) for s in starts))
    if not tail:
        return
    if not any(tail.startswith(s) or s.startswith(tail) for s in starts):
        raise not_ours(path)
    os.truncate(path, end)


def first_line(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.readline()


class CsvOutput:
    header = (",".join(COLUMNS) + "\r\n").encode()  # the csv module ends lines with CRLF

    def __init__(self, path: Path) -> None:
        self.path = path

    def done(self) -> Iterator[str]:
        if not self.path.exists():
            return
        head = first_line(self.path)
        if head.endswith(b"\n") and head.rstrip(b"\r\n") != self.header.rstrip(b"\r\n"):
            raise not_ours(self.path)
        # An unfinished header, or an unfinished row: rows begin with an absolute path, maybe quoted.
        drop_partial_line(self.path, (self.header,) if not head.endswith(b"\n") else (b"/", b'"/'))
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            next(reader, None)
            for row in reader:
                yield row[0]

    def open(self) -> None:
        new = not self.path.exists() or self.path.stat().st_size == 0
        self.file = self.path.open("a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(COLUMNS)
            self.file.flush()

    def write(self, table: pa.Table) -> None:
        for row in table.to_pylist():
            self.writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class JsonLinesOutput:
    start = b'{"file": '  # every row begins so: json.dumps keeps the schema's order

    def __init__(self, path: Path) -> None:
        self.path = path

    def done(self) -> Iterator[str]:
        if not self.path.exists():
            return
        head = first_line(self.path)
        if head.endswith(b"\n") and not head.startswith(self.start):
            raise not_ours(self.path)
        drop_partial_line(self.path, (self.start,))
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if not isinstance(row, dict) or "file" not in row:
                    raise not_ours(self.path)
                yield row["file"]

    def open(self) -> None:
        self.file = self.path.open("a", encoding="utf-8")

    def write(self, table: pa.Table) -> None:
        self.file.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in table.to_pylist())
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class ParquetOutput:
    """Rows go to complete Parquet files in `<out>.parts/` as the run goes (a Parquet file is only
    readable once closed), and are joined into `<out>` at the end; a rerun counts both as done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.parts = path.with_name(path.name + ".parts")
        self.pending: list[pa.Table] = []
        self.rows = 0

    def _files(self) -> list[Path]:
        files = [self.path] if self.path.exists() else []
        return files + (sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else [])

    def done(self) -> Iterator[str]:
        for file in self._files():
            try:
                parquet = pq.ParquetFile(file)
            except (pa.ArrowException, OSError) as e:
                raise not_ours(file) from e
            if parquet.schema_arrow.names != COLUMNS:
                raise not_ours(file)
            for batch in parquet.iter_batches(columns=["file"]):
                yield from batch.column(0).to_pylist()

    def open(self) -> None:
        self.parts.mkdir(exist_ok=True)
        for partial in self.parts.glob("*.tmp"):  # a part whose writing was interrupted
            partial.unlink()
        self.next_part = len(list(self.parts.glob("*.parquet")))

    def write(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.rows += table.num_rows
        if self.rows >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self.rows:
            return
        part = self.parts / f"{self.next_part:06d}.parquet"
        tmp = part.with_suffix(".tmp")
        pq.write_table(pa.concat_tables(self.pending), tmp)
        tmp.replace(part)
        self.next_part += 1
        self.pending, self.rows = [], 0

    def close(self) -> None:
        """Join the earlier output and every part into `<out>`, one row group per part."""
        self._flush()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with pq.ParquetWriter(tmp, SCHEMA) as writer:  # an empty file too, when nothing was listed
            for file in self._files():
                parquet = pq.ParquetFile(file)
                for group in range(parquet.num_row_groups):
                    writer.write_table(parquet.read_row_group(group))
        tmp.replace(self.path)
        shutil.rmtree(self.parts, ignore_errors=True)


def open_output(out: Path) -> CsvOutput | JsonLinesOutput | ParquetOutput:
    return {"csv": CsvOutput, "jsonl": JsonLinesOutput, "parquet": ParquetOutput}[output_format(out)](out)


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
