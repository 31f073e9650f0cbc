"""One measured run: its throughput and latency percentiles, and the median
of several runs. Shared by the pgbench, Python and HTTP drivers."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One run of one scenario. `rate` is in the scenario's unit (txn/s,
    entries/s or requests/s); latencies are per call, in milliseconds."""

    rate: float
    p50_ms: float | None
    p99_ms: float | None
    count: int
    seconds: float
    errors: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def percentile(sorted_values: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def sample_from_latencies(
    latencies_ms: list[float],
    seconds: float,
    *,
    rate: float | None = None,
    per_call: int = 1,
    errors: int = 0,
) -> Sample:
    """A Sample from the latency of every call of a run; `per_call` scales the
    rate when one call carries several units (entries of a batch)."""
    latencies_ms.sort()
    calls = len(latencies_ms)
    if rate is None:
        rate = calls * per_call / seconds if seconds > 0 else 0.0
    return Sample(
        rate=rate,
        p50_ms=percentile(latencies_ms, 0.50),
        p99_ms=percentile(latencies_ms, 0.99),
        count=calls * per_call,
        seconds=seconds,
        errors=errors,
    )


def median_of(samples: Sequence[Sample]) -> dict[str, float | None]:
    """Median rate and median percentiles over runs."""

    def med(values: list[float | None]) -> float | None:
        present = [v for v in values if v is not None]
        return statistics.median(present) if present else None

    return {
        "rate": med([s.rate for s in samples]),
        "p50_ms": med([s.p50_ms for s in samples]),
        "p99_ms": med([s.p99_ms for s in samples]),
    }
