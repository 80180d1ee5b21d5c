"""The retrain (api/learning/retrain.py): held-out choice, the promotion rule, and real runs on tiny data.

The real runs fine-tune the shipped ensemble (all three networks, on the CPU) on a shared folder of
one fixture face labelled 60 plus submissions made through the API of the other face, then evaluate
both models as served. The active model says about 26 for both faces, so the data decides what a
candidate can learn; each test says how its data makes the rule, not luck, decide.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from pathlib import Path

import numpy as np
import pytest

from api.core.errors import ModelFileInvalid, ModelRejected
from api.learning import registry
from api.learning.retrain import Decision, RetrainError, RetrainOptions, decide, forget_deleted, is_held_out, retrain
from ml.serving.runtime import read_metadata
from ml.training.evaluate import PairedDifference, paired_difference
from tests.api.conftest import SHIPPED_VERSION
from tests.faces import ASTRONAUT, CAMERAMAN, face_folder, face_photo
from tests.utkfolder import write_split

pytestmark = pytest.mark.anyio

SHARE = 0.5  # of submissions held out, in these tests: few submissions make enough of both sides


def test_held_out_submissions_are_chosen_by_their_id_alone():
    ids = [uuid.UUID(int=random.Random(1).getrandbits(128) + i) for i in range(4000)]
    held = [is_held_out(i, 0.2) for i in ids]
    assert 0.18 < np.mean(held) < 0.22
    assert [is_held_out(i, 0.2) for i in reversed(ids)] == held[::-1]  # the same answer, in any order
    assert all(is_held_out(i, 0.3) for i, h in zip(ids, held, strict=True) if h)  # a larger share keeps them
    assert not any(is_held_out(i, 0.0) for i in ids)


def diff(difference: float, noise: float, n: int = 100, active: float = 5.0) -> PairedDifference:
    return PairedDifference(n, active, active + difference, difference, noise)


@pytest.mark.parametrize(("validation", "held_out", "promoted", "why"), [
    (diff(+0.04, 0.05), diff(-2.0, 1.0, 10), True, "not worse on validation"),
    (diff(-0.30, 0.05), diff(-2.0, 1.0, 10), True, "better on the held-out"),
    (diff(+0.06, 0.05), diff(-2.0, 1.0, 10), False, "worse on validation beyond noise"),
    (diff(+0.00, 0.05), diff(-0.9, 1.0, 10), False, "not better on the held-out submissions beyond noise"),
    (diff(+0.00, 0.05), diff(+1.0, 1.0, 10), False, "not better on the held-out submissions beyond noise"),
    (diff(+0.00, 0.05), diff(-9.0, 1.0, 4), False, "only 4 held-out submissions"),
    (diff(math.nan, math.nan, 0), diff(-9.0, 1.0, 10), False, "worse on validation"),
])
def test_the_rule_promotes_only_a_candidate_not_worse_on_validation_and_better_on_held_out(
        validation, held_out, promoted, why):
    decision = decide(validation, held_out, min_held_out=5)
    assert isinstance(decision, Decision) and decision.promoted is promoted
    assert why in decision.why


def test_paired_bootstrap_cancels_what_both_models_share():
    rng = np.random.default_rng(0)
    a = rng.exponential(5.0, 2000)  # hard and easy faces
    same = paired_difference(a, a)
    assert same.difference == 0 and same.noise == 0
    better = paired_difference(a, np.maximum(0, a - 1 + rng.normal(0, 0.3, a.size)))
    assert -1.05 < better.difference < -0.9 and 0 < better.noise < 0.05  # far below one MAE's own ±0.2
    unrelated = paired_difference(a, rng.exponential(5.0, a.size))
    assert unrelated.noise > 5 * better.noise


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> tuple[Path, Path]:
    """The shared data of these runs: 12 photos of the cameraman, aged 60; every 4th is validation."""
    root = tmp_path_factory.mktemp("shared")
    files = face_folder(root / "faces", CAMERAMAN, 60, 12)
    write_split(root / "split.csv", files)
    return root / "faces", root / "split.csv"


def options(shared: tuple[Path, Path]) -> RetrainOptions:
    folder, split = shared
    return RetrainOptions(data=[folder], split_file=split, epochs=2, lr=1e-3, batch=8, workers=1, device="cpu",
                          held_out_share=SHARE, min_held_out=3, submission_weight=5.0)


async def submit(client, photo: bytes, age: int) -> dict:
    response = await client.post("/submissions", data={"first_name": "Eileen", "true_age": str(age), "consent": "true"},
                                 files={"image": ("photo.jpg", photo, "image/jpeg")})
    assert response.status_code == 201, response.text
    return response.json()


async def withdraw(client, body: dict):
    return await client.delete(f"/submissions/{body['id']}", headers={"X-Deletion-Token": body["deletion_token"]})


def held(body: dict) -> bool:
    return is_held_out(uuid.UUID(body["id"]), SHARE)


async def test_a_retrain_without_enough_held_out_submissions_trains_nothing(client, session, settings, shared):
    await submit(client, face_photo(ASTRONAUT, 0), 70)
    with pytest.raises(RetrainError, match="held out"):
        await retrain(session, settings, options(shared), version="retrain-test-too-few")
    assert await registry.get(session, "retrain-test-too-few") is None
    assert not (settings.data_dir / "retrain" / "runs" / "retrain-test-too-few").exists()


async def test_a_candidate_that_learns_what_the_active_model_gets_wrong_is_promoted_and_forgotten_after_deletion(
        client, session, settings, shared):
    # The astronaut, aged 70 in every submission: the active model says about 26, so a candidate that
    # learns from the training submissions is 40 years better on the held-out ones, far beyond any
    # noise; the shared cameraman (60) is trained on too, so validation does not get worse.
    training, held_out = [], []
    for i in range(40):
        body = await submit(client, face_photo(ASTRONAUT, i), 70)
        (held_out if held(body) else training).append(body)
        if len(held_out) >= 4 and len(training) >= 8:
            break
    withdrawn = training.pop()  # withdrawn before the run: never trained on
    assert (await withdraw(client, withdrawn)).status_code == 204

    outcome = await retrain(session, settings, options(shared), version="retrain-test-learns")

    row = await registry.get(session, outcome.version)
    assert outcome.promoted and row.state == "active" and (await registry.active(session)).version == row.version
    assert row.parent_version == SHIPPED_VERSION and row.created_by == "retrain"
    assert (await registry.get(session, SHIPPED_VERSION)).state == "retired"
    rule, figures = row.evaluation["rule"], row.evaluation
    assert rule["promoted"] and rule["held_out"]["difference"] < -rule["held_out"]["noise"]
    assert rule["validation"]["difference"] <= rule["validation"]["noise"]
    assert figures["held_out"]["mae"] < figures["active_held_out"]["mae"] - 20
    assert figures["held_out"]["n"] == len(held_out) and figures["validation"]["n"] == 3
    assert row.trained_on["submission_ids"] == sorted(b["id"] for b in training)  # not the held out, not the withdrawn
    assert row.trained_on["held_out_submissions"] == len(held_out) and row.trained_on["submissions"] == len(training)
    trained_files = {p.name for p in (settings.data_dir / "retrain" / "submissions" / "train").iterdir()}
    assert len(trained_files) == len(training)
    assert not any(uuid.UUID(withdrawn["id"]).hex[:12] in name for name in trained_files)
    served = registry.weights_file(row)
    assert registry.file_sha256(served) == row.sha256 and read_metadata(served)["version"] == row.version
    assert served.with_suffix(".safetensors").is_file()
    # its own calibrated interval, fitted on this run's validation faces and degraded copies of them
    interval = json.loads(read_metadata(served)["interval_calibration"])
    shipped = json.loads(read_metadata(registry.weights_file(await registry.get(session, SHIPPED_VERSION)))[
        "interval_calibration"])
    assert interval["fitted_on"].startswith("validation faces: sharp 3, ") and interval != shipped
    assert "age 60-79" in outcome.table and "held-out n" in outcome.table
    for made in ("comparison.png", "summary.txt", "summary.json", "split.csv", "member0/learning_curve.png",
                 "member2/mae_by_band.png"):
        assert (outcome.run / made).is_file(), made

    # A photo it learnt from is withdrawn; after a rollback the model is no longer active, and the
    # next retrain's sweep retires it and deletes its weights: it can never be served again.
    assert (await withdraw(client, training[0])).status_code == 204
    await registry.activate(session, SHIPPED_VERSION, actor="admin")  # rolling back
    assert await forget_deleted(session, settings) == [row.version]
    await session.refresh(row)
    assert row.state == "retired" and "since deleted" in row.reason
    assert not served.exists() and not served.with_suffix(".safetensors").exists()
    with pytest.raises(ModelFileInvalid):
        await registry.activate(session, row.version, actor="admin")
    assert await forget_deleted(session, settings) == []  # done once


async def test_a_candidate_trained_on_shuffled_labels_is_rejected(client, session, settings, shared):
    # Ages 10 and 80 given at random to photos of the astronaut: the labels say nothing about the
    # photos. Each held-out photo is held out once with each age, so no model is less than 35 years
    # off on them on average (an answer a is |a - 10| + |80 - a| >= 70 years off the pair), and the
    # active model, which says about 26, is exactly 35 off: whatever the candidate learnt from the
    # shuffled labels, it cannot be better there, whatever the bootstrap says.
    rng = random.Random(0)
    training = []
    for i in range(3):
        for age in (10, 80):
            for _ in range(30):
                body = await submit(client, face_photo(ASTRONAUT, i), age)
                if held(body):
                    break
                training.append(body)
    i = 3
    while len(training) < 8:  # more shuffled training photos; one that lands held out is withdrawn
        body = await submit(client, face_photo(ASTRONAUT, i), rng.choice((10, 80)))
        i += 1
        if not held(body):
            training.append(body)
            continue
        assert (await withdraw(client, body)).status_code == 204

    outcome = await retrain(session, settings, options(shared), version="retrain-test-shuffled")

    row = await registry.get(session, outcome.version)
    assert not outcome.promoted and row.state == "rejected" and row.reason == outcome.why
    assert (await registry.active(session)).version == SHIPPED_VERSION
    rule, figures = row.evaluation["rule"], row.evaluation
    assert not rule["promoted"] and rule["held_out"]["n"] == 6
    assert figures["active_held_out"]["mae"] == pytest.approx(35.0)
    assert figures["held_out"]["mae"] >= 35.0 - 1e-6 and rule["held_out"]["difference"] >= -1e-6
    assert "not better on the held-out submissions" in row.reason or "worse on validation" in row.reason
    assert registry.weights_file(row).is_file()  # kept, with its figures, for an admin to look at
    with pytest.raises(ModelRejected):
        await registry.activate(session, row.version, actor="admin")
