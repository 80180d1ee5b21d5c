"""Which database errors mean "unreachable, retry later" (503) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.core.errors import database_unreachable


def wrapped(orig: Exception) -> DBAPIError:
    """What SQLAlchemy raises around a driver error."""
    return DBAPIError("INSERT ...", {}, orig)


@pytest.mark.parametrize("error", [
    wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle of operation")),
    wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
    wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")),
    ConnectionRefusedError(111, "Connect call failed"),
    FileNotFoundError(2, "No such file or directory"),
    TimeoutError(),
])
def test_lost_or_refused_connections_count_as_unreachable(error):
    assert database_unreachable(error)


def test_an_error_raised_while_handling_a_lost_connection_counts_too():
    try:
        try:
            raise ConnectionResetError(104, "Connection reset by peer")
        except ConnectionResetError as lost:
            raise wrapped(RuntimeError("cleanup failed")) from lost
    except DBAPIError as e:
        assert database_unreachable(e)


@pytest.mark.parametrize("error", [
    IntegrityError("INSERT ...", {}, asyncpg.exceptions.UniqueViolationError("duplicate key")),
    wrapped(asyncpg.exceptions.UndefinedTableError('relation "x" does not exist')),
    ValueError("not a database error"),
])
def test_query_errors_are_not_unreachable(error):
    assert not database_unreachable(error)
