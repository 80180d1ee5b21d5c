"""Shared fixtures: the real predictor, loaded once per test run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from ml.serving.predictor import Predictor

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def predictor() -> Iterator[Predictor]:
    with Predictor.load() as p:
        yield p


@pytest.fixture(scope="session")
def astronaut_png() -> bytes:
    return (FIXTURES / "astronaut.png").read_bytes()
