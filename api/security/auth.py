"""Authentication: the admin's bearer token (`ADMIN_TOKEN`) and the one-time deletion tokens of stored
submissions. A wrong token counts as a failed authentication of its address (`api.security.failed_auth_throttle`);
`api.deps.require_admin` wires the admin check into the routes."""

from __future__ import annotations

import hashlib
import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.core.errors import AdminDisabled, InvalidToken, NotAuthenticated
from api.core.settings import Settings
from api.security.failed_auth_throttle import AuthGuard

bearer = HTTPBearer(auto_error=False, description="The server's ADMIN_TOKEN.")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
# The one-time token handed out with a stored submission: a credential for that submission alone, an
# alternative to the admin bearer (so declared as a security scheme, not as a plain header).
deletion_token_scheme = APIKeyHeader(name="X-Deletion-Token", scheme_name="DeletionToken", auto_error=False,
                                     description="The `deletion_token` returned when the submission was stored.")


async def get_deletion_token(request: Request, _: Annotated[str | None, Depends(deletion_token_scheme)]) -> str | None:
    """The header as sent: an empty one is a wrong token, not none (the scheme would make it None)."""
    return request.headers.get("X-Deletion-Token")


DeletionTokenDep = Annotated[str | None, Depends(get_deletion_token)]


def tokens_match(given: str, expected: str) -> bool:
    """Constant time, also in the length: both sides are hashed to 32 bytes first."""
    return secrets.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def check_admin(settings: Settings, credentials: HTTPAuthorizationCredentials | None) -> None:
    """403 when no admin token is configured, 401 when none or a wrong one is given."""
    expected = settings.admin_token_value
    if expected is None:
        raise AdminDisabled()
    if credentials is None:
        raise NotAuthenticated()
    if not tokens_match(credentials.credentials, expected):
        raise InvalidToken()


async def authenticate_admin(settings: Settings, credentials: HTTPAuthorizationCredentials | None,
                             guard: AuthGuard) -> None:
    """`check_admin`, counting a wrong token as a failed authentication of the client's address.
    The caller has passed `guard.check()` first."""
    guard.gate()  # no await from here to the comparison
    try:
        check_admin(settings, credentials)
    except InvalidToken:
        await guard.failed("admin")
        raise
