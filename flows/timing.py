"""Where the flows' time goes: with $CONCEPTLAB_TIMINGS naming a file, each span (a DVC command, the
push, the registration, the gate, ...) appends one JSON line {"part", "seconds", "pid"} to it.
benchmarks/orchestration.py reads them; without the variable nothing is written."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

ENV = "CONCEPTLAB_TIMINGS"


def record(part: str, seconds: float, **extra) -> None:
    path = os.environ.get(ENV)
    if not path:
        return
    line = json.dumps({"part": part, "seconds": round(seconds, 3), "pid": os.getpid(), **extra})
    with open(path, "a", encoding="utf-8") as f:  # one short append per line: safe across processes
        f.write(line + "\n")


@contextmanager
def span(part: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        record(part, time.perf_counter() - started)
