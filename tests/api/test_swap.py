"""The per-worker follower (api/learning/swap.py) on its own, against a scratch database it commits to: it
serves what the registry says is active, and keeps serving what it has when it cannot do better."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.learning import registry
from api.learning.swap import ModelFollower
from api.storage import db
from ml.paths import WEIGHTS_DIR
from ml.serving.predictor import Predictor
from tests.api.conftest import FIXTURES, SHIPPED_VERSION
from tests.api.test_registry import OTHER, copy_model

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def own_predictor() -> Iterator[Predictor]:
    """A predictor of these tests' own: they swap its model."""
    with Predictor.load() as predictor:
        yield predictor


@pytest.fixture
async def sessionmaker(scratch_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = db.create_engine(scratch_url)
    yield async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    await engine.dispose()


async def activate(sessionmaker: async_sessionmaker[AsyncSession], version: str) -> None:
    async with sessionmaker() as session:
        await registry.activate(session, version, actor="admin")
        await session.commit()


async def test_the_follower_serves_the_active_version_and_keeps_it_when_the_next_cannot_load(
        sessionmaker, own_predictor, tmp_path, caplog):
    follower = ModelFollower(sessionmaker, own_predictor, interval=2.0)
    await follower.sync()  # registers the shipped models: the default is active and already served
    assert own_predictor.version == follower.serving == SHIPPED_VERSION
    photo = (FIXTURES / "astronaut.png").read_bytes()
    before = own_predictor.predict(photo)

    await activate(sessionmaker, OTHER)
    await follower.sync()
    after = own_predictor.predict(photo)
    assert own_predictor.version == follower.serving == after.model_version == OTHER
    assert after.faces[0].age != before.faces[0].age  # another network answers

    # A version whose file is gone from this machine after it was activated (another machine wrote it).
    path = copy_model("elsewhere", tmp_path)
    async with sessionmaker() as session:
        await registry.add_candidate(session, version="elsewhere", weights_path=path,
                                     sha256=registry.file_sha256(path), parent_version=OTHER,
                                     created_by="retrain", trained_on={}, evaluation={})
        await session.commit()
    await activate(sessionmaker, "elsewhere")
    path.unlink()
    with caplog.at_level(logging.ERROR, logger="api"):
        await follower.sync()
        await follower.sync()
    assert own_predictor.version == follower.serving == OTHER  # still serving, the same model
    assert own_predictor.predict(photo).faces[0].age == after.faces[0].age
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "cannot serve model elsewhere" in errors[0].getMessage()  # logged once

    shutil.copyfile(WEIGHTS_DIR / f"{OTHER}.onnx", path)  # a file, but not the one registered
    await follower.sync()
    assert follower.serving == OTHER
    await activate(sessionmaker, SHIPPED_VERSION)  # the roll-back reaches it too
    await follower.sync()
    assert own_predictor.version == follower.serving == SHIPPED_VERSION


async def test_a_follower_without_its_database_keeps_serving_and_says_so_once(own_predictor, caplog):
    engine = db.create_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")  # port 9: nothing listens
    follower = ModelFollower(async_sessionmaker(engine, class_=AsyncSession), own_predictor, interval=2.0)
    serving = own_predictor.version
    with caplog.at_level(logging.WARNING, logger="api"):
        await follower.start()  # at start-up: never fatal
        await follower._sync_logged()  # the next polls
    await engine.dispose()
    assert own_predictor.version == follower.serving == serving and not follower.registered
    warnings = [r.getMessage() for r in caplog.records if "model registry unreachable" in r.getMessage()]
    assert len(warnings) == 1
