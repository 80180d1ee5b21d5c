"""Schemathesis hooks for the CLI run against the served app (tests/test_contract.py, tests/schemathesis.toml).

Photos. The OpenAPI document says an upload's `image` part is a JPEG, PNG or WebP photo
(`encoding.contentType`). Schemathesis cannot make one up, so strategies registered for those media
types give it real ones: photos of a face in the three formats and at several sizes, so that its
schema-valid requests reach 200 and 201 (and its stateful phase follows the 201's links to GET and
DELETE /submissions/{id}). A photo without a face is a valid image that /submissions rightly refuses
(422 `no_face_detected`), a rule no schema can state: the API tests cover it. Its schema-invalid
requests keep the images it makes up (empty, bytes that are none), which must be refused.

Requests Schemathesis calls schema-valid that are not are left out (`filter_case`): those whose image
is not one of these photos (the coverage phase's one-byte file "0", its own 1x1 samples, which carry
no face), and those whose other fields the schema itself refuses, judged by jsonschema-rs: Schemathesis
4.32's coverage phase fills its multipart template with "" for every required field beside the image,
and its approximation of `\\p{M}` in the name's pattern draws unassigned code points (U+20F1-U+20FF).
(The requests are not repaired instead: Schemathesis judges any body a hook edits invalid as soon as
it holds bytes.)

Idempotency keys. A schema-valid request gets an Idempotency-Key of its own: Schemathesis would send
the document's example key with different requests, which is rightly refused (422
`idempotency_key_reused`).

First names are drawn from the schema's pattern. The service counts a name's length in NFC, the form
it stores; a pattern cannot say that, so only names in NFC are sent as valid ones (a decomposed accent
counts once after normalisation: tests/api/test_submissions.py covers it).
"""

from __future__ import annotations

import io
import unicodedata
import uuid
from pathlib import Path

import jsonschema_rs
import schemathesis
from hypothesis import strategies as st
from PIL import Image
from schemathesis.core.parameters import ParameterLocation

FIXTURES = Path(__file__).parent / "fixtures"


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _faces() -> dict[str, list[bytes]]:
    astronaut = Image.open(FIXTURES / "astronaut.png").convert("RGB")
    sizes = [astronaut, astronaut.resize((320, 320)), astronaut.crop((64, 0, 448, 384))]
    return {
        "image/png": [(FIXTURES / "astronaut.png").read_bytes(), *(_encoded(i, "PNG") for i in sizes[1:])],
        "image/jpeg": [_encoded(i, "JPEG", quality=q) for i in sizes for q in (70, 92)],
        "image/webp": [_encoded(i, "WEBP", quality=80) for i in sizes],
    }


FACES = _faces()
PHOTOS = {photo for photos in FACES.values() for photo in photos}
for media_type, photos in FACES.items():
    schemathesis.openapi.media_type(media_type, st.sampled_from(photos))


@schemathesis.hook
def filter_case(ctx: schemathesis.HookContext, case: schemathesis.Case) -> bool:
    meta = case.meta
    if meta is None or meta.is_negative_at(ParameterLocation.BODY) or not isinstance(case.body, dict):
        return True
    body = case.body
    if "image" in body and body["image"] not in PHOTOS:
        return False
    name = body.get("first_name")
    if isinstance(name, str) and unicodedata.normalize("NFC", name) != name:
        return False
    schema = next((b.resolved_schema for b in case.operation.body if b.media_type == case.media_type), None)
    if not schema:
        return True
    fields = {name: value for name, value in body.items() if name != "image"}
    without_image = {**schema, "properties": {k: v for k, v in schema.get("properties", {}).items() if k != "image"},
                     "required": [k for k in schema.get("required", []) if k != "image"]}
    return jsonschema_rs.validator_for(without_image).is_valid(fields)


@schemathesis.hook
def before_call(ctx: schemathesis.HookContext, case: schemathesis.Case, kwargs: dict) -> None:
    meta = case.meta
    if meta is None or meta.is_negative_at(ParameterLocation.HEADER) or not case.headers:
        return
    # A new container rather than an edit: Schemathesis shares them between the cases it derives from one.
    case.headers = {name: str(uuid.uuid4()) if name.lower() == "idempotency-key" else value
                    for name, value in case.headers.items()}
