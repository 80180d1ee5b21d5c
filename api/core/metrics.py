"""Prometheus metrics: what the service did, never what it saw (no photo, name, token, id or raw path).

    whatsmyage_http_requests_total{method, route, status}             requests answered
    whatsmyage_http_request_duration_seconds{method, route, status}   their latency (histogram)
    whatsmyage_faces_per_photo{endpoint}                              faces found per analysed photo
    whatsmyage_stage_seconds{stage}                                   decode, detect, align, age (the network)
    whatsmyage_predicted_age_years                                    each predicted age
    whatsmyage_submissions_stored_total                               rows committed
    whatsmyage_submissions_deleted_total{by}                          rows deleted, by "owner", "admin" or "retention"
    whatsmyage_auth_failures_total{kind}                              wrong tokens: "admin", "metrics", "deletion"
    whatsmyage_auth_throttled_total                                   answered 429 auth_rate_limited
    whatsmyage_live_frames_total{outcome}                             live frames: "answered", "bad_frame", "overloaded"
    whatsmyage_live_frame_seconds                                     a live frame's time, received to answered
    whatsmyage_live_streams_open                                      live streams open now
    whatsmyage_live_streams_total{end}                                streams ended, by why (api/routes/live.py)

`route` is the route's template (`/submissions/{submission_id}`), `unmatched` when no route took the
request. One `Metrics` per app, each with its own registry.

Several worker processes: each has its own memory, so the counters of one worker say nothing about
the others. With `PROMETHEUS_MULTIPROC_DIR` set (before `prometheus_client` is imported: `python -m api
serve --workers N` sets it to a fresh folder itself), every worker writes its values to files there and
`/metrics`, whichever worker answers, adds up all of them (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    multiprocess,
)

if TYPE_CHECKING:  # not at run time: the supervisor of `--workers N` imports this and loads no model
    from ml import Detection, Prediction

__all__ = ["CONTENT_TYPE", "Metrics", "multiprocess_dir"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
FACE_BUCKETS = (0, 1, 2, 3, 4, 5, 10, 20)
AGE_BUCKETS = (5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 80, 90, 100)


def multiprocess_dir() -> str | None:
    """The multiprocess folder, when that mode is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


class Metrics:
    """The service's metrics; thread-safe, so the CPU work may observe from its worker threads."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        if multiprocess_dir() is None:  # process_* series (memory, CPU, open files) of this process
            ProcessCollector(registry=registry)
        labels = ["method", "route", "status"]
        self.requests = Counter("whatsmyage_http_requests", "HTTP requests answered, by route template and status.",
                                labels, registry=registry)
        self.latency = Histogram("whatsmyage_http_request_duration_seconds",
                                 "Time from the request's arrival to its last response byte.", labels,
                                 buckets=LATENCY_BUCKETS, registry=registry)
        self.faces = Histogram("whatsmyage_faces_per_photo", "Faces found per analysed photo.", ["endpoint"],
                               buckets=FACE_BUCKETS, registry=registry)
        self.stages = Histogram("whatsmyage_stage_seconds",
                                "Time per photo in each stage: decode, detect, align, age (the network).",
                                ["stage"], buckets=STAGE_BUCKETS, registry=registry)
        self.ages = Histogram("whatsmyage_predicted_age_years", "Predicted apparent age, one per face.",
                              buckets=AGE_BUCKETS, registry=registry)
        self.stored = Counter("whatsmyage_submissions_stored", "Submissions stored (committed).",
                              registry=registry)
        self.deleted = Counter("whatsmyage_submissions_deleted",
                               'Submissions deleted, by "owner", "admin" or "retention".', ["by"], registry=registry)
        self.auth_failures = Counter("whatsmyage_auth_failures",
                                     'Wrong tokens, by kind: "admin", "metrics", "deletion".', ["kind"],
                                     registry=registry)
        self.auth_throttled = Counter("whatsmyage_auth_throttled",
                                      "Requests answered 429 auth_rate_limited (too many failed authentications).",
                                      registry=registry)
        self.live_frames = Counter("whatsmyage_live_frames",
                                   'Live frames received, by outcome: "answered", "bad_frame", "overloaded".',
                                   ["outcome"], registry=registry)
        self.live_frame_time = Histogram("whatsmyage_live_frame_seconds",
                                         "Time from a live frame's arrival to its answer.",
                                         buckets=LATENCY_BUCKETS, registry=registry)
        self.live_open = Gauge("whatsmyage_live_streams_open", "Live streams open now.",
                               multiprocess_mode="livesum", registry=registry)
        self.live_streams = Counter("whatsmyage_live_streams",
                                    "Live streams ended, by why: client, idle, frame_too_large, too_many_frames, "
                                    "no_slot, origin, off.", ["end"], registry=registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def observe_photo(self, endpoint: str, result: Detection | Prediction,
                      extra_timings: Iterable[tuple[str, float]] = ()) -> None:
        """A photo analysed by `endpoint`: its faces, its stage timings and, for a prediction, its ages."""
        self.faces.labels(endpoint).observe(len(result.faces))
        for stage, seconds in (*result.timings.items(), *extra_timings):
            self.stages.labels(stage).observe(seconds)
        for face in result.faces:
            age = getattr(face, "age", None)  # a prediction's faces have one, a detection's do not
            if age is not None:
                self.ages.observe(age)

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's registry, or every worker's files."""
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry)
