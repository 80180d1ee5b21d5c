"""bench/load.py in short (row 48 of the hardening table): 30 uploads at once, good and bad, against
the app served by uvicorn in a process of its own on loopback, on a scratch database."""

from __future__ import annotations

import pytest

from bench import load


@pytest.mark.slow
def test_30_uploads_at_once_are_all_answered_and_every_201_is_stored(scratch_url):
    with load.Server(scratch_url, slots=2) as server:
        assert server.proc is not None
        result = load.load(server.url, server.token, uploads=30, timeout=60, server_pid=server.proc.pid)
    print(load.report(result))
    assert result.problems(load.expected_statuses()) == []
    statuses = {a.status for a in result.answers}
    assert statuses <= {200, 201, 400, 413, 415, 422, 503}  # every one answered: no timeout, no reset
    assert 201 in statuses and len(result.answers) == 30
    assert result.rows_after - result.rows_before == len(result.created) > 0
