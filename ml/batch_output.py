"""The output file of `python -m ml batch` (`ml.batch`): its columns, and CSV, JSON lines or Parquet by
the extension of `--out`. Each format writes rows as they come and, on a rerun, reads back the files
it already has a row for (the run skips them), after undoing what an interrupted run left half written."""

from __future__ import annotations

import csv
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

PARQUET_ROWS = 10_000  # rows per Parquet part: what an interrupted run may have to redo

SCHEMA = pa.schema([
    ("file", pa.string()),
    ("faces", pa.int32()),
    ("set_aside", pa.int32()),
    ("age", pa.float64()),
    ("age_low", pa.float64()),
    ("age_high", pa.float64()),
    ("range_note", pa.string()),
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


class LineOutput:
    """An output of one row a line. A rerun reads back the files it has rows for, after cutting a
    last line an interrupted run left unfinished; a file that does not begin as ours is refused."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def ours(self, head: bytes) -> bool:
        """Whether a complete first line is one this output writes."""
        raise NotImplementedError

    def line_starts(self, head: bytes) -> tuple[bytes, ...]:
        """How an unfinished last line of ours begins, given the file's first line."""
        raise NotImplementedError

    def rows(self) -> Iterator[str]:
        """The file of each row."""
        raise NotImplementedError

    def done(self) -> Iterator[str]:
        if not self.path.exists():
            return
        head = first_line(self.path)
        if head.endswith(b"\n") and not self.ours(head):
            raise not_ours(self.path)
        drop_partial_line(self.path, self.line_starts(head))
        yield from self.rows()

    def close(self) -> None:
        self.file.close()


class CsvOutput(LineOutput):
    header = (",".join(COLUMNS) + "\r\n").encode()  # the csv module ends lines with CRLF

    def ours(self, head: bytes) -> bool:
        return head.rstrip(b"\r\n") == self.header.rstrip(b"\r\n")

    def line_starts(self, head: bytes) -> tuple[bytes, ...]:
        # An unfinished header, or an unfinished row: rows begin with an absolute path, maybe quoted.
        return (self.header,) if not head.endswith(b"\n") else (b"/", b'"/')

    def rows(self) -> Iterator[str]:
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


class JsonLinesOutput(LineOutput):
    start = b'{"file": '  # every row begins so: json.dumps keeps the schema's order

    def ours(self, head: bytes) -> bool:
        return head.startswith(self.start)

    def line_starts(self, head: bytes) -> tuple[bytes, ...]:
        return (self.start,)

    def rows(self) -> Iterator[str]:
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
