"""Schemathesis against /openapi.json, in-process: every operation, with schema-driven valid and
invalid requests, checked for server errors, documented status codes, content types, response
schemas, auth and use after delete. A bounded number of examples per operation keeps it short.

The multipart operations are not excluded: in valid requests their `image` is drawn from real
photos (with a face, without, unusable ones) as well as the bytes Schemathesis makes up, and their
fields sometimes from valid values, so that the success paths (200, 201) are reached too.

The app runs with its own lifespan in Schemathesis's event-loop thread, on a scratch database of
its own (created on the tests' server, migrated, dropped at the end). tests/test_contract.py runs the
Schemathesis CLI against the served app with every check, that one included, and its stateful phase.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.core.settings import Settings
from api.main import create_app
from tests import badimages as b
from tests.api.conftest import ADMIN_TOKEN, FIXTURES

PHOTOS = [
    (FIXTURES / "astronaut.png").read_bytes(),  # one face
    b.astronaut_jpeg((256, 256)),  # one face, JPEG
    (FIXTURES / "coffee.png").read_bytes(),  # no face
    b.webp(),
    b.encode(b.photo(), "JPEG"),
    b.png_header_only(20000, 20000),  # 413
    b.gif_animated(),  # 415
    b"",  # 422 empty_file
]
VALID_FIELDS = {"first_name": "Eileen", "true_age": 42, "consent": True}


@pytest.fixture(scope="module")
def api_schema(scratch_url: str, settings: Settings) -> Iterator[schemathesis.schemas.BaseSchema]:
    from schemathesis.python.asgi import shutdown_lifespans

    app = create_app(settings.model_copy(update={"database_url": scratch_url}))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    yield schema
    shutdown_lifespans()


# One test per operation. (schemathesis.pytest.from_fixture would do this, but its lazy loader reads
# a private attribute that pytest 9 no longer has; the operations are listed from the document of an
# app that is never started, and each test generates against the started one.)
DOCUMENT = create_app(Settings(_env_file=None)).openapi()
OPERATIONS = [(method.upper(), path) for path, methods in DOCUMENT["paths"].items() for method in methods]


@pytest.mark.slow
@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_the_api_conforms_to_its_openapi_document(api_schema, method, path, mode):
    """Every check but `positive_data_acceptance` (a schema-valid request must be accepted): the
    document cannot say what the service rightly refuses among schema-valid requests, such as bytes
    that are no photo (415), a photo without a face (422 on /submissions) or a name that is not
    letters (422; JSON Schema patterns have no Unicode classes)."""
    operation = api_schema[path][method]
    if mode is GenerationMode.NEGATIVE and not DOCUMENT["paths"][path][method.lower()].get("parameters") \
            and "requestBody" not in DOCUMENT["paths"][path][method.lower()]:
        pytest.skip("nothing in the request to make invalid")
    cases = operation.as_strategy(generation_mode=mode)
    if mode is GenerationMode.POSITIVE:
        photos = st.one_of(st.sampled_from(PHOTOS[:2]), st.sampled_from(PHOTOS), st.none())  # faces more often
        cases = st.builds(with_real_photo, cases, photos, st.booleans())
    # Valid requests are sent as the admin (Schemathesis's `ignored_auth` check tries them without);
    # invalid ones as generated, so that a missing or broken Authorization header stays what it is.
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"} if mode is GenerationMode.POSITIVE else None

    @given(case=cases)
    @settings(max_examples=10, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def conforms(case):
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance])

    conforms()


def with_real_photo(case, photo: bytes | None, valid_fields: bool):
    """A valid multipart case with, sometimes, a real photo and valid fields (to reach 200 and 201)."""
    if isinstance(case.body, dict) and "image" in case.body:
        if photo is not None:
            case.body["image"] = photo
        if valid_fields:
            case.body.update({k: v for k, v in VALID_FIELDS.items() if k in case.body or k == "consent"})
    return case
