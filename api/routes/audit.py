"""GET /audit: the audit trail (admin), newest first (see `api.privacy.audit` for what is recorded)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy import func, or_
from sqlmodel import col, select

from api.core.errors import problem_responses
from api.deps import AdminDep, SessionDep
from api.http.schemas import AuditEventRead, AuditPage
from api.privacy.audit import Action
from api.storage.tables import AuditEvent

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", dependencies=[AdminDep], summary="The audit trail (admin)",
            responses=problem_responses(401, 403, 422, 429))
async def list_audit_events(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    action: Annotated[Action | None, Query(description="Only this action.")] = None,
    submission_id: Annotated[uuid.UUID | None, Query(
        description="Only events about this submission, listings that showed it included.")] = None,
) -> AuditPage:
    """Who listed, read, deleted, exported or purged submissions, and changed the model: newest first."""
    where = []
    if action is not None:
        where.append(col(AuditEvent.action) == action)
    if submission_id is not None:
        where.append(or_(col(AuditEvent.submission_id) == submission_id,
                         col(AuditEvent.detail)["submission_ids"].contains([str(submission_id)])))
    total = (await session.exec(select(func.count()).select_from(AuditEvent).where(*where))).one()
    rows = await session.exec(select(AuditEvent).where(*where)
                              .order_by(col(AuditEvent.at).desc(), col(AuditEvent.id).desc())
                              .offset(offset).limit(limit))
    return AuditPage(items=[AuditEventRead.of(r) for r in rows], total=total, limit=limit, offset=offset)
