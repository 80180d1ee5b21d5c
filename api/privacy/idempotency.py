"""`Idempotency-Key` on `POST /submissions` (after the IETF draft "The Idempotency-Key HTTP Header Field").

A client that did not get an answer (timeout, lost connection, 503) sends the same request again
with the same key, and stores at most one submission:

- same key, same request, answered before: the first 201 again (same id, same deletion token), with
  `Idempotent-Replayed: true`; nothing new is stored;
- same key, same request, still running elsewhere: 409 `idempotency_in_progress` with Retry-After;
- same key, different request (another photo, name, age or file name): 422 `idempotency_key_reused`;
- a key is kept 24 hours, and goes at once with its submission when that is withdrawn.

Everything is in the database, so it holds across workers and replicas. The request holds a
transaction-level advisory lock on the key from its first look-up to its commit: a concurrent
request with the key finds it taken (409), and a request that dies (a lost database, a crash) takes
its lock with it, so a retry never waits on a stale "in progress" mark. The submission and its key
row are committed together, so a 201 lost on the way is found again by the retry.

The deletion token is replayed too, since the retry may come from a client that never saw the first
answer. Only who sends the same key *and* the same photo and fields gets it, and the database does
not hold it readably: the key is stored as its SHA-256, and the token sealed with a pad derived from
the key itself (SHAKE-256 over the key and the request hash).
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Header
from sqlalchemy import delete, func, select
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from api.core.errors import IdempotencyInProgress, IdempotencyKeyReused
from api.http.schemas import SubmissionCreated
from api.storage.tables import IdempotencyKey, utcnow

TTL = timedelta(hours=24)
# Printable ASCII without space or quote, 16-255 characters, optionally quoted (the draft sends an
# RFC 8941 string: "..."). 16 at least, since the key is what guards the replayed deletion token.
KEY_PATTERN = r'^([!#-~]{16,255}|"[!#-~]{16,255}")$'

IdempotencyKeyHeader = Annotated[str | None, Header(
    pattern=KEY_PATTERN,
    description="Any unique string of 16-255 printable characters (a UUID, say), the same for every retry of "
                "one submission: a retry then returns the first answer instead of storing it twice.",
    examples=["8e03978e-40d5-43e8-bc93-6894a57f9324"],
)]


def _pad(key: str, request_hash: bytes, size: int) -> bytes:
    return hashlib.shake_256(b"whatsmyage deletion token\0" + key.encode() + b"\0" + request_hash).digest(size)


def seal(token: str, key: str, request_hash: bytes) -> bytes:
    data = token.encode()
    return bytes(a ^ b for a, b in zip(data, _pad(key, request_hash, len(data)), strict=True))


def unseal(sealed: bytes, key: str, request_hash: bytes) -> str:
    return bytes(a ^ b for a, b in zip(sealed, _pad(key, request_hash, len(sealed)), strict=True)).decode()


@dataclass(frozen=True, slots=True)
class Idempotency:
    """One request's key and fingerprint; `begin` before the work, `record` beside the new row."""

    key: str
    key_hash: bytes
    request_hash: bytes

    @classmethod
    def of(cls, key: str, photo: bytes, **fields: object) -> Idempotency:
        key = key.strip('"')
        fingerprint = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode())
        fingerprint.update(b"\0" + hashlib.sha256(photo).digest())
        return cls(key, hashlib.sha256(key.encode()).digest(), fingerprint.digest())

    @property
    def lock_id(self) -> int:
        return int.from_bytes(self.key_hash[:8], "big", signed=True)

    async def begin(self, session: AsyncSession) -> SubmissionCreated | None:
        """Take the key for this transaction: the first answer when this request was answered
        already, else None (go on, and `record` before committing). 409 while another request holds
        the key, 422 when the key was used with another request."""
        cutoff = utcnow() - TTL
        # Expired keys go, a few at a time, skipping those another request is deleting already (it
        # holds them until it commits: waiting for it would queue keyed requests behind each other).
        expired = (select(IdempotencyKey.key_hash).where(col(IdempotencyKey.created_at) < cutoff)
                   .limit(100).with_for_update(skip_locked=True))
        await session.exec(delete(IdempotencyKey).where(col(IdempotencyKey.key_hash).in_(expired)))
        if not (await session.exec(select(func.pg_try_advisory_xact_lock(self.lock_id)))).scalar_one():
            raise IdempotencyInProgress()
        row = await session.get(IdempotencyKey, self.key_hash)
        if row is not None and row.created_at < cutoff:  # expired, and skipped above
            await session.delete(row)
            await session.flush()
            row = None
        if row is None:
            return None
        if not secrets.compare_digest(row.request_hash, self.request_hash):
            raise IdempotencyKeyReused()
        token = unseal(row.sealed_token, self.key, self.request_hash)
        return SubmissionCreated.model_validate({**row.response, "deletion_token": token})

    def record(self, session: AsyncSession, created: SubmissionCreated) -> None:
        """Add the key's row to the session, to be committed with the submission."""
        session.add(IdempotencyKey(
            key_hash=self.key_hash, request_hash=self.request_hash, submission_id=created.id,
            response=created.model_dump(mode="json", exclude={"deletion_token"}),
            sealed_token=seal(created.deletion_token, self.key, self.request_hash),
        ))
