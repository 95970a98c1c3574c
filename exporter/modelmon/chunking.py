"""Consecutive chunks of a table's rows.

Two users: the reference statistics of the label-free estimators (sampling
error of CBPE, threshold of the multivariate drift statistic) are spread over
the reference split into consecutive chunks, and ``modelmon drift
--chunk-size`` reports a current file chunk by chunk.
"""

from __future__ import annotations

import itertools

import numpy as np


def split_even(rows: int, count: int, min_rows: int) -> list[tuple[int, int]]:
    """``[start, end)`` of at most ``count`` consecutive chunks of nearly equal
    size, each of at least ``min_rows`` rows.  Raises ``ValueError`` when not
    even two such chunks fit (a spread needs two values)."""
    count = min(int(count), rows // max(int(min_rows), 1))
    if count < 2:
        raise ValueError(f"{rows} rows make fewer than 2 chunks of at least {min_rows} rows")
    edges = np.linspace(0, rows, count + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


def split_fixed(rows: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of consecutive chunks of ``size`` rows; the last one
    holds the remainder (possibly fewer rows)."""
    if size < 1:
        raise ValueError("chunk size must be >= 1")
    return [(a, min(a + size, rows)) for a in range(0, rows, size)]
