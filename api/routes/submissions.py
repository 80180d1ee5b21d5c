"""Submissions: a photo stored with consent, its owner's first name and age, and the prediction.

POST is open to anyone; listing needs the admin token; reading one and deleting it need the admin
token or the deletion token handed out once when the submission was stored. Every read and deletion
is recorded in the audit trail (`api.privacy.audit`).
"""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
import uuid
from dataclasses import dataclass, replace
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Response
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError
from sqlalchemy import func
from sqlalchemy.orm import defer
from sqlmodel import col, select

from api.core.errors import (
    ConsentRequired,
    InvalidDeletionToken,
    NoFaceDetected,
    NoFaceWorthAnAge,
    NotFound,
    problem_responses,
)
from api.core.metrics import Metrics
from api.deps import (
    AdminDep,
    AuthGuardDep,
    MetricsDep,
    MultipartDep,
    PredictorDep,
    SessionDep,
    SettingsDep,
    SlotsDep,
    read_upload,
)
from api.http.schemas import ImageSize, PredictedFace, SubmissionCreated, SubmissionPage, SubmissionRead
from api.privacy import audit
from api.privacy.idempotency import Idempotency, IdempotencyKeyHeader
from api.routes.detect import IMAGE_ENCODING, ImageFile
from api.security.auth import BearerDep, DeletionTokenDep, authenticate_admin, hash_token
from api.storage.tables import Submission
from ml import FaceAge, LoadedImage, Predictor, reencode_jpeg

router = APIRouter(prefix="/submissions", tags=["submissions"])

# --- form fields --------------------------------------------------------------------------------

NAME_PUNCTUATION = frozenset(" -'\u2010\u2019")  # space, hyphens, apostrophes (ASCII and typographic)


def clean_first_name(value: str) -> str:
    """NFC-normalised, trimmed of spaces, inner runs of spaces collapsed; then letters, marks, spaces,
    hyphens and apostrophes only (so no control characters, tabs or line breaks anywhere)."""
    if len(value) > 1024:  # before any work on it
        raise PydanticCustomError("string_too_long", "String should have at most 64 characters")
    name = re.sub(" {2,}", " ", unicodedata.normalize("NFC", value).strip(" "))
    if any(not (unicodedata.category(c)[0] in "LM" or c in NAME_PUNCTUATION) for c in name):
        raise PydanticCustomError(
            "invalid_characters", "Only letters, marks, spaces, hyphens and apostrophes are allowed")
    if len(name) < 2:
        raise PydanticCustomError("string_too_short", "String should have at least 2 characters")
    if len(name) > 64:
        raise PydanticCustomError("string_too_long", "String should have at most 64 characters")
    return name


def parse_age(value: object) -> object:
    """Digits 0-9 only: '42' is an age, '42.0', ' 42', '+42', '4e1' and '４２' are not."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,3}", value):
        raise PydanticCustomError("int_parsing", "Input should be a whole number of years, in digits")
    return value


CONSENT_TRUE = frozenset({"on", "true", "yes", "1"})
CONSENT_FALSE = frozenset({"off", "false", "no", "0", ""})


def parse_consent(value: object) -> object:
    if isinstance(value, str):
        if value.lower() in CONSENT_TRUE:
            return True
        if value.lower() in CONSENT_FALSE:
            return False
        raise PydanticCustomError("bool_parsing", "Consent should be true or false")
    return value


# What clean_first_name accepts, as a JSON Schema (ECMA-262) pattern, for the OpenAPI document only:
# spaces around are dropped and inner runs of spaces count as one, so after a first letter come 1-63
# units, each a letter (or mark, hyphen, apostrophe) or a run of spaces before one. The length rule
# holds for names in NFC (the handler normalises first; a decomposed "e" + accent counts once).
_NAME_CHAR = "[\\p{L}\\p{M}'\u2019\u2010-]"
FIRST_NAME_PATTERN = f"^ *{_NAME_CHAR}(?:{_NAME_CHAR}| +(?={_NAME_CHAR})){{1,63}} *$"

FirstName = Annotated[str, AfterValidator(clean_first_name), Form(
    description="2-64 characters after trimming: letters, marks, spaces, hyphens, apostrophes.",
    examples=["Eileen"], json_schema_extra={"minLength": 2, "maxLength": 1024, "pattern": FIRST_NAME_PATTERN})]
# Form() first: after the validator its bounds would reach the schema as `ge`/`le`, not minimum/maximum.
TrueAge = Annotated[int, Form(ge=0, le=120, description="Whole years, digits only.", examples=[42]),
                    BeforeValidator(parse_age)]
Consent = Annotated[bool, BeforeValidator(parse_consent), Form(
    description="Must be true (`true`, `on`, `yes` or `1`) for anything to be stored: absent or false is 422 "
                "`consent_required`.", examples=[True])]


def document_consent(openapi: dict) -> None:
    """State in the OpenAPI document what the handler enforces of `consent`: it must be sent, and true.

    (The parameter defaults to false so that an absent one gets the same 422 `consent_required` as a
    false one, which makes FastAPI describe it as optional.)"""
    body = openapi["paths"]["/submissions"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = openapi["components"]["schemas"][body["$ref"].rsplit("/", 1)[-1]]
    form["required"] = [*form.get("required", []), "consent"]
    form["properties"]["consent"].pop("default", None)
    form["properties"]["consent"]["const"] = True


def clean_filename(name: str | None) -> str:
    """The client's file name, for display only: last path part, printable, at most 255 characters."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] not in "CZ" or c == " ").strip()
    if len(name) > 255:
        stem, dot, ext = name.rpartition(".")
        name = stem[: 255 - len(ext) - 1] + dot + ext if dot and len(ext) <= 16 else name[:255]
    return name or "photo"


# --- the photo ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessed:
    face: FaceAge  # the largest face, in pixels of the stored photo
    jpeg: bytes
    width: int
    height: int
    model_version: str


def assess(predictor: Predictor, data: bytes, metrics: Metrics) -> Assessed | list[str]:
    """Decode, predict, keep the largest face worth an age and re-encode the photo; when there is
    none, the reasons the boxes found were set aside (empty: no box at all).

    The stored photo is the decoded one (upright, possibly reduced for large photos), so the box is
    given in its pixels."""
    started = time.perf_counter()
    image: LoadedImage = predictor.decode(data)
    decoded = time.perf_counter() - started
    prediction = predictor.predict(image)
    metrics.observe_photo("submissions", prediction, [("decode", decoded)])
    if not prediction.faces:
        return [s.reason for s in prediction.set_aside]
    largest = max(prediction.faces, key=lambda f: f.face.box.area)
    face = replace(largest, face=largest.face.scaled(image.scale))
    height, width = image.rgb.shape[:2]
    return Assessed(face, reencode_jpeg(image), width, height, prediction.model_version)


# --- routes -------------------------------------------------------------------------------------


# What a client (and Schemathesis's stateful phase) can do next with the 201's body.
CREATED_LINKS = {
    "ReadSubmission": {"operationId": "read_submission_submissions__submission_id__get",
                       "parameters": {"submission_id": "$response.body#/id",
                                      "header.X-Deletion-Token": "$response.body#/deletion_token"},
                       "description": "The stored submission, read by its owner."},
    "ReadSubmissionImage": {"operationId": "read_submission_image_submissions__submission_id__image_get",
                            "parameters": {"submission_id": "$response.body#/id",
                                           "header.X-Deletion-Token": "$response.body#/deletion_token"},
                            "description": "The stored photo, read by its owner."},
    "WithdrawSubmission": {"operationId": "delete_submission_submissions__submission_id__delete",
                           "parameters": {"submission_id": "$response.body#/id",
                                          "header.X-Deletion-Token": "$response.body#/deletion_token"},
                           "description": "Withdraw it, with the deletion token given once."},
}


@router.post("", status_code=201, summary="Store a photo with its owner's age", dependencies=[MultipartDep],
             responses={201: {"links": CREATED_LINKS}, **problem_responses(400, 409, 413, 415, 422, 429, 503)},
             openapi_extra=IMAGE_ENCODING)
async def create_submission(image: ImageFile, first_name: FirstName, true_age: TrueAge, settings: SettingsDep,
                            predictor: PredictorDep, slots: SlotsDep, session: SessionDep, response: Response,
                            metrics: MetricsDep, consent: Consent = False,
                            idempotency_key: IdempotencyKeyHeader = None) -> SubmissionCreated:
    """Predicts the age of the largest face (here, never taken from the client) and stores the photo
    re-encoded as JPEG, without EXIF or anything appended. Answers 201 once the row is committed,
    with a `deletion_token` shown only this once (or to a retry with the same `Idempotency-Key` and
    the same request). Nothing is stored without consent (422 `consent_required`), without a face
    (422 `no_face_detected`) or when no face found is worth an age (422 `no_face_worth_an_age`, with
    the `reasons`: an animal's face, a face too blurred or too small)."""
    if not consent:
        raise ConsentRequired()
    data = await read_upload(image, settings)
    filename = clean_filename(image.filename)
    response.headers["Cache-Control"] = "no-store"  # the deletion token is in it
    idempotency = None
    if idempotency_key is not None:
        idempotency = Idempotency.of(idempotency_key, data, first_name=first_name, true_age=true_age,
                                     consent=consent, filename=filename)
        if (replayed := await idempotency.begin(session)) is not None:
            response.headers["Idempotent-Replayed"] = "true"
            return replayed
    assessed = await slots.run(assess, predictor, data, metrics)
    if not isinstance(assessed, Assessed):
        raise NoFaceWorthAnAge(assessed) if assessed else NoFaceDetected()
    token = secrets.token_urlsafe(32)
    box = assessed.face.face.box
    row = Submission(
        first_name=first_name, true_age=true_age, predicted_age=assessed.face.age,
        face_x=box.x, face_y=box.y, face_width=box.width, face_height=box.height,
        model_version=assessed.model_version, img_filename=filename,
        img_content_type="image/jpeg", img_data=assessed.jpeg, img_width=assessed.width,
        img_height=assessed.height, deletion_token_hash=hash_token(token),
    )
    created = SubmissionCreated(
        id=row.id, first_name=row.first_name, true_age=row.true_age, predicted_age=row.predicted_age,
        error=row.predicted_age - row.true_age, face=PredictedFace.of_age(assessed.face),
        image=ImageSize(width=row.img_width, height=row.img_height), model_version=row.model_version,
        created_at=row.created_at, deletion_token=token,
    )
    session.add(row)
    if idempotency is not None:
        await session.flush()  # the row first: the key's row refers to it
        idempotency.record(session, created)  # committed with the row, or not at all
    await session.commit()
    metrics.stored.inc()
    return created


@router.get("", dependencies=[AdminDep], summary="List submissions (admin)",
            responses=problem_responses(401, 403, 422, 429))
async def list_submissions(session: SessionDep, limit: Annotated[int, Query(ge=1, le=100)] = 20,
                           offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> SubmissionPage:
    """Newest first, without the photos' bytes (each item's `image.url` serves its photo). Each page
    read is recorded in the audit trail, with the ids it showed."""
    total = (await session.exec(select(func.count()).select_from(Submission))).one()
    rows = (await session.exec(
        select(Submission).options(defer(Submission.img_data))  # type: ignore[arg-type]
        .order_by(col(Submission.created_at).desc(), col(Submission.id).desc())
        .offset(offset).limit(limit)
    )).all()
    page = SubmissionPage(items=[SubmissionRead.of(r) for r in rows], total=total, limit=limit, offset=offset)
    audit.record(session, action=audit.SUBMISSIONS_LIST, actor="admin",
                 detail={"limit": limit, "offset": offset, "submission_ids": [str(r.id) for r in rows]})
    await session.commit()
    return page


async def _get(session: SessionDep, submission_id: uuid.UUID) -> Submission:
    row = await session.get(Submission, submission_id, options=[defer(Submission.img_data)])  # type: ignore[arg-type]
    if row is None:
        raise NotFound("No such submission.")
    return row


@dataclass(frozen=True, slots=True)
class Access:
    """Who is asking for one submission, and that submission (without its photo's bytes)."""

    actor: audit.Actor  # "owner" (its deletion token) or "admin"
    submission: Submission


async def submission_access(submission_id: uuid.UUID, session: SessionDep, settings: SettingsDep,
                            credentials: BearerDep, guard: AuthGuardDep,
                            x_deletion_token: DeletionTokenDep = None) -> Access:
    """The submission's owner (with `X-Deletion-Token`) or the admin (with the bearer token), else an error.

    Without a deletion token the admin token is needed (401/403); with one, it must be this
    submission's (403 `invalid_deletion_token`, also when no submission has that id: a token never
    tells what exists). Wrong tokens count against the client's address, which gets 429 after 10 a
    minute (`api.security.failed_auth_throttle`). An unknown id is 404 to the admin."""
    await guard.check()
    if x_deletion_token is None:
        await authenticate_admin(settings, credentials, guard)
        return Access("admin", await _get(session, submission_id))
    row = await session.get(Submission, submission_id, options=[defer(Submission.img_data)])  # type: ignore[arg-type]
    guard.gate()  # no await from here to the comparison
    if row is None or not secrets.compare_digest(hash_token(x_deletion_token), row.deletion_token_hash):
        await guard.failed("deletion")
        raise InvalidDeletionToken()
    return Access("owner", row)


AccessDep = Annotated[Access, Depends(submission_access)]


@router.get("/{submission_id}", summary="Read one submission (its owner, or admin)",
            responses=problem_responses(401, 403, 404, 422, 429))
async def read_submission(access: AccessDep, session: SessionDep) -> SubmissionRead:
    """Everything stored about one submission but the photo's bytes (`image.url` serves them). Its owner
    (with `X-Deletion-Token`) and the admin (`Authorization: Bearer`) see exactly the same."""
    row = access.submission
    audit.record(session, action=audit.SUBMISSION_READ, actor=access.actor, submission_id=row.id)
    await session.commit()
    return SubmissionRead.of(row)


@router.get("/{submission_id}/image", summary="The stored photo (its owner, or admin)",
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "The re-encoded JPEG."},
                       **problem_responses(401, 403, 404, 422, 429)})
async def read_submission_image(access: AccessDep, session: SessionDep) -> Response:
    """The photo as stored: re-encoded JPEG, without metadata. Its owner (with `X-Deletion-Token`) and the
    admin (`Authorization: Bearer`) see exactly the same."""
    submission_id = access.submission.id
    data = (await session.exec(select(Submission.img_data).where(Submission.id == submission_id))).first()
    if data is None:  # withdrawn between the two queries
        raise NotFound("No such submission.")
    audit.record(session, action=audit.SUBMISSION_IMAGE_READ, actor=access.actor, submission_id=submission_id)
    await session.commit()
    return Response(data, media_type=access.submission.img_content_type, headers={
        "Cache-Control": "private, no-store",
        "Content-Disposition": f'inline; filename="{submission_id}.jpg"',
        "X-Content-Type-Options": "nosniff",
    })


@router.delete("/{submission_id}", status_code=204, response_class=Response,
               summary="Withdraw a submission (its owner, or admin)",
               responses=problem_responses(401, 403, 404, 422, 429))
async def delete_submission(access: AccessDep, session: SessionDep, metrics: MetricsDep) -> Response:
    """With `X-Deletion-Token` the submitter withdraws their own submission; without it, the admin
    token is needed. The row, its photo and its idempotency key go together; 204, then 404 for good."""
    row = access.submission
    audit.record(session, action=audit.SUBMISSION_DELETE, actor=access.actor, submission_id=row.id)
    await session.delete(row)
    await session.commit()
    metrics.deleted.labels(access.actor).inc()
    return Response(status_code=204)
