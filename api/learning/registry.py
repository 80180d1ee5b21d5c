"""The model registry: every age model the service can serve, one row each in `model_version`.

    await registry.ensure_shipped(session)                    # start-up: the models in ml/weights, once
    row = await registry.active(session)                      # the version to serve
    await registry.activate(session, version, actor="admin")  # then commit: every worker follows (api.learning.swap)

Exactly one version is active. The others are candidates (not served yet), rejected (failed the
retrain rule; activating one takes `force`) or retired (served before, replaced). Rolling back is
activating the previous version. A version's weights file is never changed: its SHA-256 is recorded
and checked before the file is activated or loaded.

Every function works in the caller's transaction and leaves the commit to it, so that a change and
its audit event are committed together or not at all. Errors are the API's problem errors
(`api.core.errors`): a route lets them through as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import ModelExists, ModelFileInvalid, ModelIsActive, ModelNotFound, ModelRejected
from api.core.settings import REPO_ROOT, Settings
from api.privacy import audit
from api.storage.tables import ModelVersion
from ml.paths import DEFAULT_AGE_WEIGHTS, WEIGHTS_DIR
from ml.serving import runtime

log = logging.getLogger("api")

EVALUATION_SUFFIX = ".eval.json"  # beside a shipped model: `python -m ml evaluate --split val --json` of it
ACTIVATE_LOCK = 0x6D6F64656C  # pg advisory lock id ("model"): one activation at a time


def models_dir(settings: Settings) -> Path:
    """Where retrained models are written: WMA_MODELS_DIR, by default <data_dir>/models."""
    return settings.models_dir or settings.data_dir / "models"


def weights_file(row: ModelVersion) -> Path:
    """The row's weights file; a relative path (the shipped models) is relative to the repository."""
    path = Path(row.weights_path)
    return path if path.is_absolute() else REPO_ROOT / path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(row: ModelVersion) -> Path:
    """The row's weights file if it is there and is the one registered; else `ModelFileInvalid`. Blocking."""
    path = weights_file(row)
    if not path.is_file():
        raise ModelFileInvalid(f"The weights file of {row.version} is missing ({row.weights_path}).")
    if file_sha256(path) != row.sha256:
        raise ModelFileInvalid(f"The weights file of {row.version} is not the one registered: its SHA-256 differs.")
    return path


def load_checked(row: ModelVersion, cpus: runtime.CpuShare | None = None) -> runtime.ServedAgeModel:
    """The row's model, loaded for serving, after `check_file`; `ModelFileInvalid` when it cannot serve
    (not an exported model, or one that names another version than the row's). Blocking."""
    path = check_file(row)
    try:
        model = runtime.load_age_model(path, cpus)
    except Exception as e:  # ONNX Runtime's own errors for a file that is no model
        raise ModelFileInvalid(f"The weights file of {row.version} cannot be served: {e}") from e
    if model.version != row.version:
        raise ModelFileInvalid(f"The weights file of {row.version} says it is {model.version}: "
                               "answers would carry the wrong version.")
    return model


def finite(value: Any) -> Any:
    """`value` with NaN and infinities (which `ml evaluate` writes for empty sets) as None: JSONB has none."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


# --- the shipped models ---------------------------------------------------------------------------


def shipped_files(default: Path | None = None) -> list[Path]:
    """The exported age models shipped in ml/weights, and `default` (WMA_AGE_WEIGHTS) if it lies elsewhere.
    A shipped age model carries its validation figures (`<version>.eval.json`): that is what tells it
    from the face detector's ONNX file beside it."""
    files = sorted(p.resolve() for p in WEIGHTS_DIR.glob(f"*{runtime.ONNX_SUFFIX}")
                   if p.with_name(p.stem + EVALUATION_SUFFIX).is_file())
    default = (default or DEFAULT_AGE_WEIGHTS).resolve()
    if default not in files and default.suffix == runtime.ONNX_SUFFIX and default.is_file():
        files.append(default)
    return files


def shipped_validation(path: Path) -> dict[str, Any] | None:
    """The validation figures in `<version>.eval.json` beside a shipped model, if that file exists."""
    figures = path.with_name(path.stem + EVALUATION_SUFFIX)
    if not figures.is_file():
        return None
    by_model = json.loads(figures.read_text())
    return by_model.get(path.stem) or next(iter(by_model.values()), None)


def _stored_path(path: Path) -> str:
    """Relative to the repository when inside it, so a checkout or image can move."""
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _shipped_row(path: Path, state: str) -> dict[str, Any]:
    """The registry row of a shipped model file (named `<version>.onnx`). Blocking (hashes the file)."""
    return {
        "version": path.stem, "state": state, "weights_path": _stored_path(path), "sha256": file_sha256(path),
        "created_by": "shipped" if path.is_relative_to(WEIGHTS_DIR.resolve()) else "admin",
        "activated_at": datetime.now(UTC) if state == "active" else None,
        "trained_on": {"data": ["utkface"], "submissions": 0, "newest_submission": None, "submission_ids": [],
                       "held_out_submissions": 0},
        "evaluation": {"validation": finite(shipped_validation(path)), "held_out": None,
                       "active_validation": None, "active_held_out": None, "rule": None},
    }


async def ensure_shipped(session: AsyncSession, default: Path | None = None) -> None:
    """Register the shipped models that are not registered yet; on a first start (no version active)
    `default` (WMA_AGE_WEIGHTS, else the shipped default) becomes the active one. Idempotent, and safe
    when several workers start at once: a row another worker wrote first is left as it is."""
    default = (default or DEFAULT_AGE_WEIGHTS).resolve()
    known = set((await session.exec(select(ModelVersion.version))).all())
    has_active = (await active_or_none(session)) is not None
    for path in sorted(shipped_files(default), key=lambda p: p != default):  # the default first
        if path.stem in known:
            continue
        known.add(path.stem)
        state = "active" if path == default and not has_active else "candidate"
        row = await anyio.to_thread.run_sync(_shipped_row, path, state)
        # DO NOTHING on any conflict: the same version, or an active row, written by another worker.
        added = await session.exec(insert(ModelVersion).values(**row).on_conflict_do_nothing()  # type: ignore[call-overload]
                                   .returning(col(ModelVersion.version)))
        if added.first() is not None:
            log.info("model registry: registered %s (%s)", path.stem, state)


# --- reading ----------------------------------------------------------------------------------------


async def get(session: AsyncSession, version: str) -> ModelVersion | None:
    return await session.get(ModelVersion, version)


async def active_or_none(session: AsyncSession) -> ModelVersion | None:
    return (await session.exec(select(ModelVersion).where(col(ModelVersion.state) == "active"))).first()


async def active(session: AsyncSession) -> ModelVersion:
    """The active version; `ModelNotFound` only before the shipped models were registered."""
    row = await active_or_none(session)
    if row is None:
        raise ModelNotFound("No model version is active yet: the registry is empty.")
    return row


async def all_versions(session: AsyncSession) -> list[ModelVersion]:
    """Every version, newest first."""
    rows = await session.exec(select(ModelVersion).order_by(col(ModelVersion.created_at).desc(),
                                                            col(ModelVersion.version).desc()))
    return list(rows.all())


# --- changing ---------------------------------------------------------------------------------------


async def add_candidate(session: AsyncSession, *, version: str, weights_path: Path | str, sha256: str,
                        parent_version: str | None, created_by: str, trained_on: dict[str, Any],
                        evaluation: dict[str, Any]) -> ModelVersion:
    """A new version, not served: activate it (or reject it) next. `ModelExists` for a name taken."""
    if await get(session, version) is not None:
        raise ModelExists(f"A model version named {version} is already registered.")
    row = ModelVersion(version=version, state="candidate", weights_path=str(weights_path), sha256=sha256,
                       parent_version=parent_version, created_by=created_by, trained_on=finite(trained_on),
                       evaluation=finite(evaluation))
    session.add(row)
    await session.flush()
    return row


async def _existing(session: AsyncSession, version: str) -> ModelVersion:
    row = await get(session, version)
    if row is None:
        raise ModelNotFound(f"No model version named {version} is registered.")
    return row


async def activate(session: AsyncSession, version: str, *, actor: audit.Actor, force: bool = False) -> ModelVersion:
    """Make `version` the one served: the active one is retired ("replaced by <version>") and the
    event audited (`model.activate`). `ModelNotFound`, `ModelRejected` for a rejected version unless
    `force`, `ModelFileInvalid` when its file is missing, altered or cannot serve (never forced).
    Activating the active version changes nothing."""
    # One activation at a time, until the caller's transaction ends: two at once would both retire
    # the same row, and the second would break the one-active index.
    await session.exec(select(func.pg_advisory_xact_lock(ACTIVATE_LOCK)))
    row = await _existing(session, version)
    await session.refresh(row)  # what the lock holder before us committed
    if row.state == "active":
        return row
    if row.state == "rejected" and not force:
        raise ModelRejected(f"{version} was rejected ({row.reason or 'no reason recorded'}); "
                            "activate it with force=true to serve it anyway.")
    await anyio.to_thread.run_sync(load_checked, row)  # the file, as each worker will load it
    previous = await active_or_none(session)
    if previous is not None:
        previous.state, previous.reason = "retired", f"replaced by {version}"
        session.add(previous)
        await session.flush()  # before the new one is active: the one-active index checks each statement
    row.state, row.reason, row.activated_at = "active", None, datetime.now(UTC)
    session.add(row)
    audit.record(session, action=audit.MODEL_ACTIVATE, actor=actor, model_version=version,
                 detail={"previous": previous.version if previous else None, "forced": force})
    await session.flush()
    return row


async def _leave(session: AsyncSession, version: str, state: str, reason: str) -> ModelVersion:
    row = await _existing(session, version)
    if row.state == "active":
        raise ModelIsActive(f"{version} is the active version: activate another one first.")
    row.state, row.reason = state, reason
    session.add(row)
    await session.flush()
    return row


async def reject(session: AsyncSession, version: str, *, reason: str) -> ModelVersion:
    """Mark a version as having failed its checks; it is activated again only with `force`."""
    return await _leave(session, version, "rejected", reason)


async def retire(session: AsyncSession, version: str, *, reason: str) -> ModelVersion:
    """Take a version out of use (it stays listed and can be activated again)."""
    return await _leave(session, version, "retired", reason)
