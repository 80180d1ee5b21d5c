"""The audit trail: who read, deleted, exported or purged personal data, and who changed the model.

    record(session, action=SUBMISSION_READ, actor="owner", submission_id=row.id)

adds one row to the append-only `audit_event` table in the caller's transaction (so the event is
committed with what it records, or not at all) and, once that transaction commits, writes one JSON
log line (logger `api.privacy.audit`). The request id, when there is one, is taken from the request being
served. An event holds ids, counts and paging, never a photo, a name or a token.

Actions (the `action` column) and who does them (`actor`):

    submissions.list        admin           a page of the listing; detail: limit, offset, submission_ids
    submission.read         admin, owner    one submission's fields
    submission.image.read   admin, owner    one submission's stored photo
    submission.delete       admin, owner    a submission withdrawn (its row, photo and idempotency key)
    submission.purge        system          removed by the retention policy; detail: retention_days
    submissions.export      admin           `python -m api export-submissions`; detail: counts
    model.activate          admin           a model version made the served one (model_version)
    model.retrain           admin, system   a retraining run that produced model_version

`model.activate` and `model.retrain` are recorded by the learning loop, with `model_version` set.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Literal, get_args

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.logs import request_id
from api.storage.tables import AuditEvent

log = logging.getLogger("api.audit")

Actor = Literal["admin", "owner", "system"]

Action = Literal["submissions.list", "submission.read", "submission.image.read", "submission.delete",
                 "submission.purge", "submissions.export", "model.activate", "model.retrain"]
SUBMISSIONS_LIST: Action = "submissions.list"
SUBMISSION_READ: Action = "submission.read"
SUBMISSION_IMAGE_READ: Action = "submission.image.read"
SUBMISSION_DELETE: Action = "submission.delete"
SUBMISSION_PURGE: Action = "submission.purge"
SUBMISSIONS_EXPORT: Action = "submissions.export"
MODEL_ACTIVATE: Action = "model.activate"
MODEL_RETRAIN: Action = "model.retrain"
ACTIONS = frozenset(get_args(Action))
ACTORS = frozenset(get_args(Actor))

_PENDING = "audit_events_to_log"  # session.info key: log lines waiting for the commit


def record(session: AsyncSession, *, action: Action, actor: Actor, submission_id: uuid.UUID | None = None,
           model_version: str | None = None, detail: dict[str, Any] | None = None) -> AuditEvent:
    """Add an audit event to `session`; it is committed with the caller's transaction, then logged."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    if actor not in ACTORS:
        raise ValueError(f"unknown audit actor {actor!r}")
    row = AuditEvent(action=action, actor=actor, submission_id=submission_id, model_version=model_version,
                     request_id=request_id.get(), detail=detail or {})
    session.add(row)
    # The log line is made now, from values known now: after the commit the row may be expired.
    line = {"action": action, "actor": actor, "submission_id": str(submission_id) if submission_id else None,
            "model_version": model_version, "detail": row.detail or None, "request_id": row.request_id}
    _pending(session.sync_session).append({k: v for k, v in line.items() if v is not None})
    return row


def _pending(session: Session) -> list[dict[str, Any]]:
    if _PENDING not in session.info:
        session.info[_PENDING] = []
        event.listen(session, "after_commit", _log_committed)
        event.listen(session, "after_soft_rollback", _forget)
    return session.info[_PENDING]


def _log_committed(session: Session) -> None:
    lines, session.info[_PENDING] = session.info[_PENDING], []
    for line in lines:
        log.info("audit", extra=line)


def _forget(session: Session, previous_transaction: SessionTransaction) -> None:
    if not previous_transaction.nested:  # the whole transaction, not a savepoint inside it
        session.info[_PENDING] = []
