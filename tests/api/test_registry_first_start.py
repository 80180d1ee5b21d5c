"""The first start on an empty registry (a database of this module's own): WMA_AGE_WEIGHTS picks the
active version, and workers starting at once register each shipped model exactly once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from api.learning import registry
from api.storage import db
from ml.paths import WEIGHTS_DIR
from tests.test_runtime import SHIPPED

pytestmark = pytest.mark.anyio


async def test_workers_starting_at_once_register_each_model_once_with_the_configured_one_active(scratch_url):
    engine = db.create_engine(scratch_url)
    sessionmaker = async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)
    chosen = WEIGHTS_DIR / "cydral-resnet10-v1.onnx"  # WMA_AGE_WEIGHTS, not the shipped default

    async def start() -> None:  # what each worker's first sync does
        async with sessionmaker() as session:
            await registry.ensure_shipped(session, chosen)
            await session.commit()

    try:
        await asyncio.gather(*(start() for _ in range(3)))
        async with sessionmaker() as session:
            rows = await registry.all_versions(session)
    finally:
        await engine.dispose()
    assert sorted(r.version for r in rows) == sorted(SHIPPED)  # the age models, not the face detector's file
    assert [r.version for r in rows if r.state == "active"] == [chosen.stem]
    assert all(r.state == "candidate" and r.activated_at is None for r in rows if r.version != chosen.stem)
