"""Sliding time windows with bounded memory.

A :class:`TimeWindow` is a ring buffer of rows ordered by arrival time with
named numpy columns.  Rows leave the window when they are older than its
duration.  Memory is fixed at start-up: ``capacity x columns``, whatever the
traffic.

When traffic would put more than ``capacity`` rows into one window duration
(1000 req/s is 3.6 million rows an hour), the window *samples*: each arriving
row is admitted with probability ``p = 0.95 * capacity / (rate * duration)``,
where ``rate`` is the arrival rate measured over the recent past.  The rows
held are then a random sample spread over the whole duration, so a "1h"
window really describes the last hour and not only its last minutes.  Each
row remembers ``1/p`` so :meth:`TimeWindow.estimated_count` still estimates
how many rows *arrived* in the window (a Horvitz-Thompson sum).  If the rate
jumps faster than the estimate follows, the ring overwrites its oldest rows:
the cap holds in every case.

*Counted* columns hold small integer codes (a reference bin, a category, an
error flag); the window keeps their per-code counts up to date as rows enter
and leave, so anything computed from counts (PSI, Jensen-Shannon, chi-square,
missing rates) costs O(codes) at scrape time instead of O(rows).

Windows are keyed by *arrival* time at the exporter, not by the event's own
timestamp: arrival order is monotone, which is what makes eviction O(evicted)
and keeps "the last 5 minutes" meaning "what the exporter saw in the last 5
minutes", the same thing Prometheus's ``rate()`` looks at.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Mapping

import numpy as np


@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """A column: ``width`` parallel series of ``dtype``.

    ``codes > 0`` makes it a counted column with codes ``0..codes-1``
    (negative codes, e.g. -1 for missing, are stored but not counted).
    """

    dtype: type | np.dtype
    width: int = 1
    codes: int = 0
    fill: float = 0


class TimeWindow:
    """A bounded, time-ordered ring of rows.  Thread-safe."""

    #: Share of the capacity the sampler aims at, leaving room for rate jumps.
    TARGET_FILL = 0.95

    def __init__(self, name: str, duration: float, capacity: int, columns: Mapping[str, ColumnSpec],
                 sampling: bool = True, seed: int | None = None):
        self.name = name
        self.sampling = sampling
        self._rng = np.random.default_rng(seed)
        self._arrivals = 0
        #: (time, arrivals so far) checkpoints over about one window duration.
        self._checkpoints: deque[tuple[float, int]] = deque()
        self.duration = float(duration)
        self.capacity = int(capacity)
        self.specs = dict(columns)
        self._lock = threading.Lock()
        self._ts = np.zeros(self.capacity, dtype=np.float64)
        self._weight = np.ones(self.capacity, dtype=np.float64)
        self._cols = {
            k: np.full((s.width, self.capacity), s.fill, dtype=s.dtype) for k, s in self.specs.items()
        }
        self._counts = {k: np.zeros((s.width, s.codes), dtype=np.int64) for k, s in self.specs.items() if s.codes}
        self._start = 0  # index of the oldest row
        self._size = 0

    # ------------------------------------------------------------------ writes
    def append(self, ts: np.ndarray | float, columns: Mapping[str, np.ndarray], now: float | None = None) -> None:
        """Append rows.  ``columns[k]`` has shape ``(width, n)`` (or ``(n,)`` for width 1)."""
        cols = {k: np.asarray(v).reshape(self.specs[k].width, -1) for k, v in columns.items()}
        n = next(iter(cols.values())).shape[1] if cols else int(np.size(ts))
        ts_arr = np.broadcast_to(np.asarray(ts, dtype=np.float64), (n,))
        if n == 0:
            return
        with self._lock:
            t = float(ts_arr[-1]) if now is None else now
            p = self._admission(t, n)
            if p < 1.0:
                keep = self._rng.random(n) < p
                ts_arr = ts_arr[keep]
                cols = {k: v[:, keep] for k, v in cols.items()}
                n = int(keep.sum())
                if n == 0:
                    if now is not None:
                        self._evict(now)
                    return
            if n >= self.capacity:
                # Only the newest `capacity` rows can survive.
                ts_arr = ts_arr[-self.capacity :]
                cols = {k: v[:, -self.capacity :] for k, v in cols.items()}
                self._drop_oldest(self._size)
                self._start = 0
                n = self.capacity
            overflow = self._size + n - self.capacity
            if overflow > 0:
                self._drop_oldest(overflow)
            end = (self._start + self._size) % self.capacity
            first = min(n, self.capacity - end)
            self._ts[end : end + first] = ts_arr[:first]
            self._weight[end : end + first] = 1.0 / p
            if first < n:
                self._ts[: n - first] = ts_arr[first:]
                self._weight[: n - first] = 1.0 / p
            for k, arr in self._cols.items():
                src = cols.get(k)
                if src is None:
                    src = np.full((arr.shape[0], n), self.specs[k].fill, dtype=arr.dtype)
                arr[:, end : end + first] = src[:, :first]
                if first < n:
                    arr[:, : n - first] = src[:, first:]
                if k in self._counts:
                    self._count(k, src, +1)
            self._size += n
            if now is not None:
                self._evict(now)

    def _admission(self, now: float, n: int) -> float:
        """Probability of admitting each of ``n`` rows arriving at ``now``."""
        if not self.sampling:
            return 1.0
        cps = self._checkpoints
        if not cps or now - cps[-1][0] >= self.duration / 20:
            cps.append((now, self._arrivals))
        while len(cps) > 2 and now - cps[1][0] >= self.duration:
            cps.popleft()
        t0, a0 = cps[0]
        self._arrivals += n
        span = now - t0
        if span < min(1.0, self.duration):
            return 1.0  # too young to know the rate
        rate = (self._arrivals - a0) / span
        expected = rate * self.duration
        return 1.0 if expected <= 0 else min(1.0, self.TARGET_FILL * self.capacity / expected)

    def evict(self, now: float) -> None:
        """Drop rows older than ``now - duration``."""
        with self._lock:
            self._evict(now)

    def _evict(self, now: float) -> None:
        if not self._size:
            return
        cutoff = now - self.duration
        live = self._ordered(self._ts)
        drop = int(np.searchsorted(live, cutoff, side="left"))
        if drop:
            self._drop_oldest(drop)

    def _drop_oldest(self, k: int) -> None:
        k = min(k, self._size)
        if k <= 0:
            return
        for name in self._counts:
            seg = self._segment(self._cols[name], self._start, k)
            self._count(name, seg, -1)
        self._start = (self._start + k) % self.capacity
        self._size -= k

    def _count(self, name: str, codes: np.ndarray, sign: int) -> None:
        ncodes = self.specs[name].codes
        counts = self._counts[name]
        for row in range(codes.shape[0]):
            c = codes[row]
            c = c[(c >= 0) & (c < ncodes)]
            if c.size:
                counts[row] += sign * np.bincount(c.astype(np.int64), minlength=ncodes)

    def _segment(self, arr: np.ndarray, start: int, k: int) -> np.ndarray:
        end = start + k
        if arr.ndim == 1:
            return arr[start:end] if end <= self.capacity else np.concatenate([arr[start:], arr[: end - self.capacity]])
        if end <= self.capacity:
            return arr[:, start:end]
        return np.concatenate([arr[:, start:], arr[:, : end - self.capacity]], axis=1)

    def _ordered(self, arr: np.ndarray) -> np.ndarray:
        return self._segment(arr, self._start, self._size)

    # ------------------------------------------------------------------- reads
    def __len__(self) -> int:
        return self._size

    def estimated_count(self, now: float | None = None) -> float:
        """Estimated rows that arrived within the window (equals ``len`` while not sampling)."""
        with self._lock:
            if now is not None:
                self._evict(now)
            return float(self._ordered(self._weight).sum()) if self._size else 0.0

    def snapshot(self, now: float | None = None, columns: tuple[str, ...] | None = None) -> "WindowSnapshot":
        """A consistent copy of the live rows (oldest first) and their counts."""
        with self._lock:
            if now is not None:
                self._evict(now)
            names = columns if columns is not None else tuple(self._cols)
            return WindowSnapshot(
                size=self._size,
                ts=self._ordered(self._ts).copy(),
                columns={k: self._ordered(self._cols[k]).copy() for k in names},
                counts={k: v.copy() for k, v in self._counts.items()},
            )

    def counts(self, name: str, now: float | None = None) -> np.ndarray:
        """Per-code counts of a counted column, shape ``(width, codes)``."""
        with self._lock:
            if now is not None:
                self._evict(now)
            return self._counts[name].copy()


@dataclass(slots=True)
class WindowSnapshot:
    size: int
    ts: np.ndarray
    columns: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]
