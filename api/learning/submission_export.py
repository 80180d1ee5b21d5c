"""Consented submissions as a UTKFace-style folder, so that the model can be retrained with them:

    python -m api export-submissions --out data/submissions
    python -m ml train --data ../shared/data/utkface/images --data data/submissions

Each stored photo (already re-encoded: no EXIF, nothing appended) is written as
`AGE_x_x_YYYYMMDDHHMMSSffffff_ID.jpg`: the true age the person gave, `x` for gender and race (the
service does not ask for them), when it was stored, and the first 12 hex digits of its id. Names
are never exported. The folder mirrors the database: files of submissions deleted since an earlier
export are removed, so a withdrawal (or a retention purge) reaches the training data too. Each export
is recorded in the audit trail (`submissions.export`, with its counts).
"""

from __future__ import annotations

import re
from pathlib import Path

import anyio
from sqlalchemy import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.privacy import audit
from api.storage.tables import Submission

EXPORTED = re.compile(r"^\d{1,3}_x_x_\d{20}_[0-9a-f]{12}\.jpg$")


def file_name(s: Submission) -> str:
    return f"{s.true_age}_x_x_{s.created_at:%Y%m%d%H%M%S%f}_{s.id.hex[:12]}.jpg"


def _write(path: Path, data: bytes) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)


def _remove_others(out: Path, wanted: set[str]) -> int:
    """Delete exported files that no stored submission stands for any more."""
    removed = 0
    for path in out.iterdir() if out.exists() else []:
        if EXPORTED.match(path.name) and path.name not in wanted:
            path.unlink()
            removed += 1
    return removed


async def export_submissions(session: AsyncSession, out: Path) -> tuple[int, int]:
    """Write every stored submission into `out`; remove exported files whose submission is gone.
    Returns (submissions in the folder, files removed)."""
    wanted: set[str] = set()
    rows = await session.stream(select(Submission).execution_options(yield_per=100))
    async for (submission,) in rows:
        name = file_name(submission)
        wanted.add(name)
        await anyio.to_thread.run_sync(_write, out / name, submission.img_data)
    removed = await anyio.to_thread.run_sync(_remove_others, out, wanted)
    audit.record(session, action=audit.SUBMISSIONS_EXPORT, actor="admin",
                 detail={"submissions": len(wanted), "files_removed": removed})
    await session.commit()
    return len(wanted), removed
