"""Throughput, measured the one way every report in cnncompile uses: images per second over
real images in fixed-size batches, median of rounds that interleave the models compared, so
a shared machine's noise falls on all of them alike. Framework-free (callers pass runners).

Two clocks: wall time (what a user waits for; on a busy shared machine it includes the time
other processes held the cores) and this process's CPU time (the work itself; with one
runtime thread there is no spin-waiting in it, so it stays stable under load).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Literal

import numpy as np

Runner = Callable[[np.ndarray], object]  # runs one batch
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def images_per_second(run: Runner, images: np.ndarray, batch_size: int, budget_seconds: float,
                      clock: Literal["wall", "cpu"] = "wall") -> float:
    """Consecutive `batch_size` slices of `images` (wrapping round) for about `budget_seconds`
    of wall time; images per second of `clock`."""
    starts = range(0, max(len(images) - batch_size, 0) + 1, batch_size)
    done, began, began_clock = 0, time.perf_counter(), CLOCKS[clock]()
    while True:
        for start in starts:
            run(images[start:start + batch_size])
            done += batch_size
            if time.perf_counter() - began >= budget_seconds:
                return done / max(CLOCKS[clock]() - began_clock, 1e-9)


def interleaved_throughput(runners: dict[str, Runner], images: np.ndarray, batch_sizes: tuple[int, ...],
                           rounds: int = 5, budget_seconds: float = 0.3,
                           clock: Literal["wall", "cpu"] = "wall") -> dict[int, dict[str, float]]:
    """{batch size: {runner name: median images/s}}; each runner is warmed up first (graph
    optimization, tracing and allocation happen on the first call)."""
    results = {}
    for batch_size in batch_sizes:
        for run in runners.values():
            run(images[:batch_size])
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(rounds):
            for name, run in runners.items():
                samples[name].append(images_per_second(run, images, batch_size, budget_seconds, clock))
        results[batch_size] = {name: statistics.median(values) for name, values in samples.items()}
    return results
