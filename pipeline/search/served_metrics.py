"""What ``mote serve`` has done, in the Prometheus text format (``GET /metrics``): requests by
route and status, and the latency of each route as a histogram. A few counters need no client
library; the exposition format is the one Prometheus scrapes (version 0.0.4)."""

from __future__ import annotations

import threading
from collections import defaultdict

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServedMetrics:
    """Counters and latency histograms per route, safe to update from any thread."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.lock = threading.Lock()
        self.requests: dict[tuple[str, int], int] = defaultdict(int)
        self.counts: dict[str, list[int]] = {}  # route -> per-bucket counts, then +Inf
        self.sums: dict[str, float] = defaultdict(float)

    def observe(self, route: str, status: int, seconds: float) -> None:
        with self.lock:
            self.requests[(route, status)] += 1
            counts = self.counts.setdefault(route, [0] * (len(BUCKETS) + 1))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    counts[i] += 1
            counts[-1] += 1
            self.sums[route] += seconds

    def total(self) -> int:
        """Requests answered so far, on every route."""
        with self.lock:
            return sum(self.requests.values())

    def text(self) -> str:
        """The exposition text: one family per metric, HELP and TYPE first."""
        lines = [
            "# HELP mote_rows Videos in the served collection.",
            "# TYPE mote_rows gauge",
            f"mote_rows {self.rows}",
            "# HELP mote_requests_total Requests answered, by route and HTTP status.",
            "# TYPE mote_requests_total counter",
        ]
        with self.lock:
            for (route, status), n in sorted(self.requests.items()):
                lines.append(f'mote_requests_total{{route="{route}",status="{status}"}} {n}')
            lines += [
                "# HELP mote_request_seconds Time to answer a request, by route.",
                "# TYPE mote_request_seconds histogram",
            ]
            for route, counts in sorted(self.counts.items()):
                for bound, n in zip((*map(str, BUCKETS), "+Inf"), counts, strict=True):
                    lines.append(f'mote_request_seconds_bucket{{route="{route}",le="{bound}"}} {n}')
                lines.append(f'mote_request_seconds_sum{{route="{route}"}} {self.sums[route]:.6f}')
                lines.append(f'mote_request_seconds_count{{route="{route}"}} {counts[-1]}')
        return "\n".join(lines) + "\n"
