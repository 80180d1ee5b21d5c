"""Hot swap under load (bench/swap.py in short): the app served for real with 2 workers on an embedded
Postgres, /predict sent without pause by 3 clients while a second shipped model is activated and then
rolled back. No request fails, every answer is wholly one version's, and within seconds every worker
answers with the version just activated."""

from __future__ import annotations

import pytest

from bench import swap
from bench.load import Server

WORKERS = 2


@pytest.mark.slow
def test_activation_and_roll_back_under_load_fail_no_request_and_reach_every_worker():
    server = Server(None, 2, workers=WORKERS, extra_env={"OMP_NUM_THREADS": "1"})  # the default poll: 2 s
    log = server.tmp / "server.log"
    with server:
        swap.wait_for_workers(log, WORKERS)
        swaps = swap.run(server, log, clients=3, rounds=1, before=6, after=6)
    print(swap.report(swaps, WORKERS, 3, 6))
    answers = swaps[0].answers
    assert answers and swaps[0].failures == []
    old, new = swaps[0].previous, swap.NEW  # the shipped default, active on the first start, and another
    assert old != new
    ages = {v: swap.reference_ages(answers, v) for v in (old, new)}
    assert ages[old] and ages[new] and ages[old] != ages[new]  # the check below has teeth
    assert swaps[0].mixed(ages) == []  # each answer's ages are those of the version it names
    for s in swaps:
        assert len(s.worker_swaps) == WORKERS, s.worker_swaps  # every worker swapped, each once
        assert s.last_previous < 5.0  # from then on, every answer carries the version activated
        after = s.window(s.activated + 5.0, s.until)
        assert after and {a.version for a in after} == {s.version}
    assert [(s.previous, s.version) for s in swaps] == [(old, new), (new, old)]
