"""The model registry over HTTP: `GET /model` (public), `GET /models` and `POST /models/{version}/activate`
(admin). See `api.learning.registry` for the states and `api.learning.swap` for how every worker follows an
activation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response

from api.core.errors import (
    DatabaseUnavailable,
    ModelFileInvalid,
    ModelNotFound,
    ModelRejected,
    problem_response,
    problem_responses,
)
from api.deps import AdminDep, ModelFollowerDep, SessionDep
from api.http.schemas import ModelList, ModelRead, ModelVersionRead
from api.learning import registry

router = APIRouter(tags=["model"])

CACHE_SECONDS = 5  # GET /model: short, so an activation shows within seconds


@router.get("/model", summary="The model that answers: its training data and accuracy", responses={
    404: problem_response("No version is registered yet (the service has not reached its database since it "
                          "started)", ModelNotFound),
    503: problem_response("The database cannot be reached; see Retry-After", DatabaseUnavailable)})
async def read_model(session: SessionDep, response: Response) -> ModelRead:
    """The active model version: what it was trained on, its accuracy on the validation split (mean
    absolute error overall and by age band, the interval's coverage) and on held-out submissions, and
    the history of every version, newest first. Public: for the UI and any client."""
    row = await registry.active(session)
    versions = await registry.all_versions(session)
    response.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
    return ModelRead.of(row, versions)


@router.get("/models", dependencies=[AdminDep], summary="Every model version (admin)",
            responses=problem_responses(401, 403, 429))
async def list_models(session: SessionDep) -> ModelList:
    """Every registered version with its state, weights file, SHA-256, training data and figures,
    newest first."""
    return ModelList(models=[ModelVersionRead.of(r) for r in await registry.all_versions(session)])


@router.post(
    "/models/{version}/activate", dependencies=[AdminDep], summary="Serve this model version (admin)",
    responses={
        **problem_responses(401, 403, 422, 429),
        404: problem_response("No such version", ModelNotFound),
        409: problem_response("The version failed its checks (activate it with `force=true`), or its weights "
                              "file is missing or not the one registered (never forced)",
                              ModelRejected, ModelFileInvalid),
    },
)
async def activate_model(
    session: SessionDep,
    follower: ModelFollowerDep,
    version: Annotated[str, Path(max_length=128, description="e.g. `resnet10-utkface-v2`.")],
    force: Annotated[bool, Query(description="Activate a rejected version anyway.")] = False,
) -> ModelVersionRead:
    """Make `version` the model that answers: every worker serves it within a few seconds
    (`WMA_MODEL_POLL_SECONDS`), without a restart and without a failed request; the version served
    before is retired. Rolling back is activating the previous version. Audited as `model.activate`."""
    row = await registry.activate(session, version, actor="admin", force=force)
    await session.commit()
    follower.wake()  # this worker at once; the others at their next poll
    return ModelVersionRead.of(row)
