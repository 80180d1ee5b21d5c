"""Consented submissions -> a UTKFace-style folder -> training -> evaluation, end to end."""

from __future__ import annotations

import pytest
from sqlmodel import select

from api.learning.submission_export import export_submissions
from api.storage.tables import Submission
from ml.training.data import scan
from ml.training.evaluate import run as evaluate_folders
from ml.training.train import TrainConfig, train
from tests import badimages as b
from tests.api.conftest import FIXTURES
from tests.utkfolder import make_folder, write_split

pytestmark = pytest.mark.anyio


async def submit(client, image: bytes, age: int, name: str) -> dict:
    response = await client.post("/submissions", data={"first_name": name, "true_age": str(age), "consent": "true"},
                                 files={"image": ("photo.jpg", image, "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()


async def test_export_train_evaluate_end_to_end(client, session, tmp_path):
    photos = [((FIXTURES / "astronaut.png").read_bytes(), 42, "Eileen"),
              ((FIXTURES / "cameraman.png").read_bytes(), 35, "Ansel"),
              (b.astronaut_jpeg(size=(300, 300)), 43, "Eileen")]
    stored = [await submit(client, image, age, name) for image, age, name in photos]
    out = tmp_path / "exported"

    kept, removed = await export_submissions(session, out)
    assert (kept, removed) == (3, 0)
    samples, skipped = scan([out])
    assert skipped == 0 and sorted(s.age for s in samples) == [35, 42, 43]
    assert all(s.gender is None and s.race is None for s in samples)
    rows = (await session.exec(select(Submission))).all()
    assert sorted(p.read_bytes() for p in out.iterdir()) == sorted(r.img_data for r in rows)
    assert not any(b"Eileen" in p.name.encode() or b"Ansel" in p.name.encode() for p in out.iterdir())

    gone = stored[1]
    response = await client.delete(f"/submissions/{gone['id']}", headers={"X-Deletion-Token": gone["deletion_token"]})
    assert response.status_code == 204
    kept, removed = await export_submissions(session, out)
    assert (kept, removed) == (2, 1)
    assert sorted(s.age for s in scan([out])[0]) == [42, 43]

    shared = make_folder(tmp_path / "shared", 12)
    write_split(tmp_path / "split.csv", shared + sorted(out.iterdir()))
    cfg = TrainConfig.for_arch("resnet10", data=[str(tmp_path / "shared"), str(out)], out=str(tmp_path / "run"),
                               epochs=1, batch=8, workers=1, cache=str(tmp_path / "cache"),
                               split_file=str(tmp_path / "split.csv"), device="cpu")
    train(cfg)
    results = evaluate_folders([out], [tmp_path / "run" / "model.safetensors"], split="all", workers=1)
    (metrics,) = results.values()
    assert metrics.n == 2 and metrics.missed == 0 and metrics.mae >= 0
