"""The OpenAPI document states what the server enforces, so that a client (or Schemathesis) can tell a
request the server will take from one it will refuse: the form fields' limits, that consent must be
sent and true, that the photo may not be empty, who may withdraw a submission, and where a 201 leads.

The first name's rule is the handler's own (trim, collapse spaces, letters, 2-64 characters), written
as a JSON Schema pattern; here both judge the same names, by jsonschema-rs, the validator Schemathesis
uses."""

from __future__ import annotations

import jsonschema_rs
import pytest
from pydantic_core import PydanticCustomError

from api.core.settings import Settings
from api.main import create_app
from api.routes.submissions import clean_first_name

DOCUMENT = create_app(Settings(_env_file=None)).openapi()
FORM = DOCUMENT["components"]["schemas"]["Body_create_submission_submissions_post"]


def accepted(name: str) -> bool:
    try:
        clean_first_name(name)
    except PydanticCustomError:
        return False
    return True


NAMES = ["Eileen", "  Eileen  ", "Mary   Ann", "Jean-Luc", "O'Brien", "O\u2019Brien", "Zoë", "Łucja", "美咲", "''",
         "a-", "E", "", " ", "   ", "E ", " E", "Eileen2", "Eileen!", "Eil\teen", "Eil\x00een", "Eileen\r\n",
         "Eil\u202eeen", "a\u20f4b", "x" * 64, "x" * 65, "x " * 32, "x " * 32 + "x", "a" + " " * 900 + "b",
         "a" + " " * 1100 + "b", " " * 30 + "x" * 64 + " " * 30, "x" * 63 + "  " + "y"]


@pytest.mark.parametrize("name", NAMES, ids=[repr(n[:12]) + f"/{len(n)}" for n in NAMES])
def test_the_first_name_schema_accepts_exactly_what_the_handler_accepts(name):
    schema = jsonschema_rs.validator_for(FORM["properties"]["first_name"])
    assert schema.is_valid(name) == accepted(name)


def test_the_form_states_its_limits_and_that_consent_must_be_true():
    properties = FORM["properties"]
    assert set(FORM["required"]) == {"image", "first_name", "true_age", "consent"}
    assert (properties["true_age"]["minimum"], properties["true_age"]["maximum"]) == (0, 120)
    assert properties["consent"]["const"] is True and "default" not in properties["consent"]
    for path in ("/detect", "/predict", "/submissions"):
        body = DOCUMENT["paths"][path]["post"]["requestBody"]["content"]["multipart/form-data"]
        form = DOCUMENT["components"]["schemas"][body["schema"]["$ref"].rsplit("/", 1)[-1]]
        assert form["properties"]["image"]["minLength"] == 1
        assert body["encoding"]["image"]["contentType"] == "image/jpeg, image/png, image/webp"


def test_a_201_links_to_reading_and_withdrawing_the_submission_with_its_deletion_token():
    operations = {op["operationId"]: (method, path) for path, item in DOCUMENT["paths"].items()
                  for method, op in item.items()}
    links = DOCUMENT["paths"]["/submissions"]["post"]["responses"]["201"]["links"]
    targets = {operations[link["operationId"]] for link in links.values()}
    assert targets == {("get", "/submissions/{submission_id}"), ("get", "/submissions/{submission_id}/image"),
                       ("delete", "/submissions/{submission_id}")}
    withdraw = links["WithdrawSubmission"]["parameters"]
    assert withdraw == {"submission_id": "$response.body#/id",
                        "header.X-Deletion-Token": "$response.body#/deletion_token"}
    delete = DOCUMENT["paths"]["/submissions/{submission_id}"]["delete"]
    assert {scheme for requirement in delete["security"] for scheme in requirement} == {"HTTPBearer", "DeletionToken"}
