"""Sliding time windows with bounded memory.

A :class:`TimeWindow` is a ring buffer of rows ordered by arrival time with
named numpy columns.  Rows leave the window when they are older than its
duration.  Memory is fixed at start-up: ``capacity x columns``, whatever the
traffic.

Sampling starts only when the window is really full: while the rows that
arrived within the last ``duration`` fit into ``capacity``, every row is
kept and counts (rows, label coverage, rates) are exact.  When an append
would overflow the ring, the window *thins*: every row held and arriving is
kept independently with a probability chosen so that about
``TARGET_FILL x capacity`` rows remain, and each kept row's weight becomes
``1 / (its overall inclusion probability)``; new rows are then admitted with
that lower probability.  All rows of a steady stream end up with the same
inclusion probability, so the rows held are a uniform random sample of the
whole duration (a "1h" window describes the last hour, not its last
minutes), and :meth:`TimeWindow.estimated_count` (the Horvitz-Thompson sum
of weights) is an unbiased estimate of the arrivals in the window.  When
traffic falls and the window is less than half full, the admission
probability doubles back towards 1.  No rate is extrapolated from a short
burst, so a burst never makes the window drop rows it has room for.

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
from collections.abc import Mapping
from dataclasses import dataclass

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

    #: Share of the capacity a thinning pass leaves (the rest is headroom, so
    #: thinning, an O(capacity) pass, happens about log(N/capacity)/0.1 times
    #: while N arrivals fill a window, not on every append).
    TARGET_FILL = 0.9

    def __init__(self, name: str, duration: float, capacity: int, columns: Mapping[str, ColumnSpec],
                 sampling: bool = True, seed: int | None = None):
        self.name = name
        self.sampling = sampling
        self._rng = np.random.default_rng(seed)
        #: Probability with which a new row is admitted (1 until the window is full).
        self._p = 1.0
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
            if now is not None:
                self._evict(now)  # room freed by old rows is room for these
            weight = np.ones(n)
            if self.sampling:
                if self._p < 1.0 and self._size < self.capacity // 2:
                    self._p = min(1.0, 2.0 * self._p)
                if self._p < 1.0:
                    keep = self._rng.random(n) < self._p
                    ts_arr, cols, weight = ts_arr[keep], {k: v[:, keep] for k, v in cols.items()}, weight[keep] / self._p
                while self._size + len(ts_arr) > self.capacity:
                    ratio = self.TARGET_FILL * self.capacity / (self._size + len(ts_arr))
                    self._p *= ratio
                    self._thin_held(self._p)
                    keep = self._rng.random(len(ts_arr)) < ratio
                    ts_arr, cols, weight = ts_arr[keep], {k: v[:, keep] for k, v in cols.items()}, weight[keep] / ratio
                n = len(ts_arr)
                if n == 0:
                    return
            if n >= self.capacity:
                # Only the newest `capacity` rows can survive (sampling off).
                ts_arr, weight = ts_arr[-self.capacity :], weight[-self.capacity :]
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
            self._weight[end : end + first] = weight[:first]
            if first < n:
                self._ts[: n - first] = ts_arr[first:]
                self._weight[: n - first] = weight[first:]
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

    def _thin_held(self, p: float) -> None:
        """Keep each held row with probability ``min(1, p * weight)`` so its
        overall inclusion probability becomes ``min(1/weight, p)``; compact
        the survivors to the ring's start (O(capacity)) and take the dropped
        rows out of the counts (O(dropped): most rows survive a pass)."""
        if not self._size:
            return
        w = self._ordered(self._weight)
        keep_p = np.minimum(1.0, p * w)
        keep = self._rng.random(self._size) < keep_p
        k = int(keep.sum())
        new_w = w[keep] / keep_p[keep]
        ts = self._ordered(self._ts)[keep]
        dropped = ~keep
        for name in self._counts:
            self._count(name, self._ordered(self._cols[name])[:, dropped], -1)
        kept = {name: np.compress(keep, self._ordered(arr), axis=1) for name, arr in self._cols.items()}
        self._ts[:k] = ts
        self._weight[:k] = new_w
        for name, arr in self._cols.items():
            arr[:, :k] = kept[name]
        self._start, self._size = 0, k

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
        width = codes.shape[0]
        if not codes.size:
            return
        # One bincount for all rows: row r's code c counts at r * ncodes + c.
        c = codes.astype(np.int64)
        valid = (c >= 0) & (c < ncodes)
        if width > 1:
            c += (np.arange(width, dtype=np.int64) * ncodes)[:, None]
        flat = c[valid]
        if flat.size:
            counts += sign * np.bincount(flat, minlength=width * ncodes).reshape(width, ncodes)

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

    def snapshot(self, now: float | None = None, columns: tuple[str, ...] | None = None) -> WindowSnapshot:
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
