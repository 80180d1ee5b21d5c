"""`python -m ml batch` on a real local Ray: the same answers as `POST /predict` for the same files
(errors included), a row for every file that cannot be read, the three output formats, resuming an
interrupted run, and the listing of folders and glob patterns."""

from __future__ import annotations

import asyncio
import csv
import inspect
import json
import math
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from api.core.settings import REPO_ROOT, Settings
from api.main import create_app
from tests.conftest import blurred

ray = pytest.importorskip("ray", reason="the batch extra: pip install -e '.[batch]' (make install does)")
from ml import batch  # noqa: E402  (it needs pyarrow, which comes with ray[data])

pytestmark = pytest.mark.slow

FIXTURES = Path(__file__).parent / "fixtures"
MAX_BYTES = 1_000_000  # astronaut.png (792 KB) passes, big.png does not
AGE_TOLERANCE = 1e-4  # years: the same predictor on the same bytes, in another process
BOX_TOLERANCE = 1e-3  # pixels


def write_photos(folder: Path) -> dict[str, Path]:
    """Photos with faces, without, and broken in each way the API names."""
    folder.mkdir()
    files = {name: folder / name for name in ("astronaut.png", "cameraman.png", "coffee.png", "rocket.jpg", "dog.jpg")}
    for name, path in files.items():
        shutil.copy(FIXTURES / name, path)
    rocket = (FIXTURES / "rocket.jpg").read_bytes()
    astronaut = (FIXTURES / "astronaut.png").read_bytes()
    files["blurred.png"] = folder / "blurred.png"  # a face worth an age whose range says why it is wider
    files["blurred.png"].write_bytes(blurred(astronaut))
    broken = {
        "empty.jpg": b"",
        "noise.png": random.Random(16).randbytes(3000),
        "truncated.jpg": rocket[: len(rocket) * 6 // 10],
        "big.png": astronaut + bytes(MAX_BYTES + 1 - len(astronaut)),  # one byte over the limit
    }
    for name, data in broken.items():
        files[name] = folder / name
        files[name].write_bytes(data)
    return files


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray for the module (2 CPUs, as on the machines the tests run on)."""
    batch.connect(None, cpus=2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_photos(tmp_path_factory.mktemp("batch") / "photos")


@pytest.fixture(scope="module")
def outputs(local_ray, photos, tmp_path_factory) -> dict[str, Path]:
    """The photo folder scored once into each format."""
    out = tmp_path_factory.mktemp("out")
    results = {}
    for ext in ("jsonl", "csv", "parquet"):
        results[ext] = out / f"ages.{ext}"
        summary = batch.run([str(next(iter(photos.values())).parent)], results[ext], max_bytes=MAX_BYTES,
                            progress=False)
        assert summary.scored == len(photos) and summary.skipped == 0
        assert summary.errors == 4
    return results


def read_rows(path: Path) -> dict[str, dict]:
    """file -> row, with CSV's empty cells as None and its numbers as numbers."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
    elif path.suffix == ".csv":
        with path.open(newline="") as f:
            rows = [{k: parse_cell(k, v) for k, v in row.items()} for row in csv.DictReader(f)]
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    by_file = {row["file"]: row for row in rows}
    assert len(by_file) == len(rows), "a file has two rows"
    return by_file


def parse_cell(column: str, value: str) -> object:
    if value == "":
        return None
    if column in ("faces", "set_aside"):
        return int(value)
    if column in ("file", "model_version", "error", "range_note"):
        return value
    return float(value)


def api_answers(photos: dict[str, Path], tmp_path: Path) -> dict[str, httpx.Response]:
    """POST /predict for each photo, on the real app (its database unreachable: /predict needs none).
    In a thread of its own: the browser tests leave Playwright's event loop running in this one."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, post_each(photos, tmp_path)).result()


async def post_each(photos: dict[str, Path], tmp_path: Path) -> dict[str, httpx.Response]:
    settings = Settings(_env_file=None, database_url="postgresql://postgres@127.0.0.1:1/none", data_dir=tmp_path,
                        frontend_dir=tmp_path / "no-frontend", rate_limit_per_minute=0, max_upload_bytes=MAX_BYTES)
    async with LifespanManager(create_app(settings), startup_timeout=120, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            return {name: await client.post("/predict", files={"image": (name, path.read_bytes())})
                    for name, path in photos.items()}


def test_batch_answers_as_post_predict_does_for_the_same_files(outputs, photos, tmp_path):
    rows = read_rows(outputs["jsonl"])
    answers = api_answers(photos, tmp_path)
    assert set(rows) == {str(p) for p in photos.values()}
    for name, response in answers.items():
        row = rows[str(photos[name])]
        body = response.json()
        if response.status_code != 200:
            assert row["error"] == body["code"], name
            assert row["faces"] is None and row["age"] is None and row["model_version"] is None
            continue
        assert row["error"] is None and row["model_version"] == body["model_version"]
        assert row["faces"] == len(body["faces"]), name
        assert row["set_aside"] == len(body["set_aside"]), name
        if not body["faces"]:
            assert row["age"] is None and row["box_x"] is None and row["range_note"] is None
            continue
        largest = body["faces"][0]
        assert row["range_note"] == largest["range_note"], name
        assert math.isclose(row["age"], largest["age"], abs_tol=AGE_TOLERANCE)
        assert math.isclose(row["age_low"], largest["age_interval"][0], abs_tol=AGE_TOLERANCE)
        assert math.isclose(row["age_high"], largest["age_interval"][1], abs_tol=AGE_TOLERANCE)
        for key in ("x", "y", "width", "height"):
            assert math.isclose(row[f"box_{key}"], largest["box"][key], abs_tol=BOX_TOLERANCE)
    codes = {name: answers[name].json().get("code") for name in ("empty.jpg", "noise.png", "truncated.jpg", "big.png")}
    assert codes == {"empty.jpg": "empty_file", "noise.png": "unsupported_image", "truncated.jpg": "corrupt_image",
                     "big.png": "file_too_large"}
    assert sum(1 for name in ("astronaut.png", "cameraman.png") if rows[str(photos[name])]["faces"]) == 2
    dog, soft = rows[str(photos["dog.jpg"])], rows[str(photos["blurred.png"])]
    assert dog["faces"] == 0 and dog["set_aside"] >= 1 and dog["age"] is None  # no age for a dog
    assert soft["faces"] == 1 and soft["range_note"] == "the photo is blurred"


def test_each_output_format_holds_the_same_rows(outputs):
    jsonl, csv_rows, parquet = (read_rows(outputs[ext]) for ext in ("jsonl", "csv", "parquet"))
    assert jsonl == csv_rows == parquet  # CSV writes floats with repr: they read back exactly
    assert outputs["csv"].read_text().splitlines()[0] == ",".join(batch.COLUMNS)


def test_files_that_cannot_be_read_are_rows_with_a_code_and_never_block(local_ray, tmp_path):
    folder = tmp_path / "odd"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")  # opening it to read would wait for a writer forever
    (folder / "nested.jpg").mkdir()  # a folder with a photo's name is walked, not read
    shutil.copy(FIXTURES / "cameraman.png", folder / "nested.jpg" / "inside.PNG")
    (folder / "notes.txt").write_text("not a photo")  # walking a folder takes photo files only
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.png")  # a name that is not UTF-8
    with open(latin1, "wb") as f:
        f.write((FIXTURES / "coffee.png").read_bytes())
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    out = tmp_path / "odd.jsonl"
    summary = batch.run([str(folder), str(tmp_path / "gone.jpg")], out, progress=False)
    rows = read_rows(out)
    assert summary.scored == 4 and summary.errors == 2
    assert rows[str(folder / "pipe.jpg")]["error"] == batch.UNREADABLE
    assert rows[str(tmp_path / "gone.jpg")]["error"] == batch.UNREADABLE
    assert rows[str(folder / "nested.jpg" / "inside.PNG")]["faces"] == 1
    cafe = rows[str(folder) + "/caf\\xe9.png"]  # written with a backslash escape, read by its real name
    assert cafe["faces"] == 0 and cafe["error"] is None and cafe["model_version"]


def test_an_interrupted_csv_run_goes_on_where_it_stopped_from_the_command_line(outputs, photos, tmp_path):
    """The command as a user runs it (its own local Ray, a progress bar in photos per second), on the
    output of a run cut short in the middle of its third row."""
    complete = outputs["csv"].read_text().splitlines(keepends=True)
    out = tmp_path / "ages.csv"
    out.write_text("".join(complete[:3]) + complete[3][:20])
    folder = str(next(iter(photos.values())).parent)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local Ray
    result = subprocess.run([sys.executable, "-m", "ml", "batch", folder, "--out", str(out), "--max-bytes",
                             str(MAX_BYTES), "--cpus", "2"], capture_output=True, text=True, timeout=300,
                            cwd=REPO_ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "photo/s" in result.stderr
    assert f"{len(photos) - 2} photos scored" in result.stderr and "2 already there" in result.stderr
    assert read_rows(out) == read_rows(outputs["csv"])
    assert out.read_text().startswith("".join(complete[:3]))  # the rows already there are left as they were


def test_an_interrupted_parquet_run_keeps_its_parts_and_takes_new_files(local_ray, outputs, photos, tmp_path):
    out = tmp_path / "ages.parquet"
    parts = tmp_path / "ages.parquet.parts"
    parts.mkdir()
    shutil.copy(outputs["parquet"], parts / "000000.parquet")  # a part written before the run was killed
    (parts / "000001.tmp").write_bytes(b"PAR1 half a part")  # and one it was writing
    folder = next(iter(photos.values())).parent
    extra = tmp_path / "more"
    extra.mkdir()
    shutil.copy(FIXTURES / "moon.png", extra / "moon.png")
    summary = batch.run([str(folder), str(extra)], out, max_bytes=MAX_BYTES, progress=False)
    assert summary.skipped == len(photos) and summary.scored == 1
    rows = read_rows(out)
    assert rows == read_rows(outputs["parquet"]) | {str(extra / "moon.png"): rows[str(extra / "moon.png")]}
    assert rows[str(extra / "moon.png")]["faces"] == 0
    assert not parts.exists()
    again = batch.run([str(folder), str(extra)], out, max_bytes=MAX_BYTES, progress=False)
    assert (again.scored, again.skipped) == (0, len(photos) + 1) and read_rows(out) == rows


def test_folders_and_patterns_are_listed_lazily(tmp_path):
    for name in ("a/1.jpg", "a/2.JPEG", "a/b/3.webp", "a/b/c/4.png", "a/skip.gif", "a/b/notes.txt", "top.jpg"):
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    listing = batch.list_files([str(tmp_path / "a")])
    assert inspect.isgenerator(listing)
    assert sorted(listing) == sorted(str(tmp_path / n) for n in ("a/1.jpg", "a/2.JPEG", "a/b/3.webp", "a/b/c/4.png"))
    # A pattern takes what it matches, photo or not; a folder it matches is walked.
    assert sorted(batch.list_files([str(tmp_path / "a" / "**" / "*.txt")])) == [str(tmp_path / "a/b/notes.txt")]
    assert sorted(batch.list_files([str(tmp_path / "*")])) == sorted(
        str(tmp_path / n) for n in ("a/1.jpg", "a/2.JPEG", "a/b/3.webp", "a/b/c/4.png", "top.jpg"))
    os.chdir(tmp_path / "a")  # relative inputs are written as absolute paths, which every node can open
    try:
        assert list(batch.list_files(["b/c"])) == [str(tmp_path / "a/b/c/4.png")]
    finally:
        os.chdir(REPO_ROOT)


def test_the_command_refuses_an_unknown_format_or_a_missing_input_before_starting_ray(tmp_path, capsys):
    from ml.__main__ import main

    assert main(["batch", str(FIXTURES), "--out", str(tmp_path / "ages.xlsx")]) == 2
    assert "--out must end in .csv, .parquet, .jsonl" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nowhere"), "--out", str(tmp_path / "ages.csv")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    others = {"other.csv": b"name,age\nx,1", "other.jsonl": b'{"name": "x"}\n{"na', "other.parquet": b"PAR1 no",
              "half.csv": b"name,a"}  # the last lines unfinished: still not to be cut
    for name, content in others.items():
        (tmp_path / name).write_bytes(content)
        assert main(["batch", str(FIXTURES), "--out", str(tmp_path / name)]) == 2, name
        assert "not an output of this command" in capsys.readouterr().err
        assert (tmp_path / name).read_bytes() == content  # left alone


def test_the_service_never_imports_ray_and_ml_never_imports_the_api():
    for check in ("import sys, api.main; assert not {'ray', 'ml.batch'} & set(sys.modules)",
                  "import sys, ml.batch; assert not [m for m in sys.modules if m.split('.')[0] == 'api']"):
        result = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120,
                                cwd=REPO_ROOT)
        assert result.returncode == 0, (check, result.stderr[-2000:])
