"""The label join buffer: ground truth that arrives after the prediction.

Real labels come late (a click, a chargeback, a human review) or never.  Every
accepted event that carries an ``id`` and no label is remembered here for at
most ``horizon`` seconds; a label posted later for that id is joined to the
event's prediction, score and fairness group and handed to the model's monitor
(:meth:`~modelmon.monitor.ModelMonitor.observe_labels`) with its delay.

Memory is bounded twice: by the horizon and by ``max_events``.  Events are
kept in per-batch chunks (one small object per accepted batch, not per event)
and the id index maps an id to a plain sequence number; the oldest chunks go
first when either bound is crossed.  A label whose event
is not (or no longer) held is refused as ``unknown_id``, and a second label for
the same id is too: an event is labelled once.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from .events import EventBatch
from .pipeline import Pipeline


@dataclass(slots=True)
class _Chunk:
    """The label-relevant columns of one accepted batch."""

    model: str
    arrival: float
    timestamps: list[float]
    predictions: list[Any]
    scores: list[float | None]
    groups: list[str | None]
    #: Rows still waiting for a label; the chunk is dropped from the index when evicted.
    ids: list[str]
    #: Sequence number of the chunk's first row.
    start: int = 0
    live: int = 0
    #: The events' versions, so labelled/correct counters can be split by version.
    versions: list[str] = field(default_factory=list)


_EVICTED = _Chunk("", 0.0, [], [], [], [], [])


@dataclass(slots=True)
class JoinResult:
    """What a batch of labels did: joined per model, and the refused positions."""

    joined: dict[str, int] = field(default_factory=dict)
    unknown: list[int] = field(default_factory=list)
    #: (position, message) of labels whose value does not fit the model's task.
    invalid: list[tuple[int, str]] = field(default_factory=list)


#: Turns a raw label into the model's form (class string / number) or raises ValueError.
LabelConverter = Callable[[str, Any], Any]


class LabelJoin:
    """Bounded id -> event buffer; a :class:`~modelmon.pipeline.Pipeline` listener."""

    def __init__(self, pipeline: Pipeline, max_events: int, horizon_seconds: float,
                 clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.max_events = int(max_events)
        self.horizon = float(horizon_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        #: id -> the event's sequence number.  Plain ints, not (chunk, row)
        #: tuples: the garbage collector never has to walk the index.
        self._index: dict[str, int] = {}
        self._chunks: list[_Chunk] = []
        self._starts: list[int] = []  # first sequence number of each chunk (sorted)
        self._head = 0  # chunks before it are evicted
        self._seq = 0
        #: Events dropped unlabelled because the buffer was full or the horizon passed.
        self.expired = 0

    def __len__(self) -> int:
        return len(self._index)

    def _chunk_of(self, seq: int) -> _Chunk:
        return self._chunks[bisect_right(self._starts, seq, lo=self._head) - 1]

    # ---------------------------------------------------------------- events
    def on_batch(self, batch: EventBatch) -> None:
        """Remember the batch's unlabelled events that have an id (pipeline listener)."""
        mon = self.pipeline.monitors.get(batch.model)
        if mon is None:
            return
        n = len(batch)
        rows: Sequence[int]
        if batch.labels.count(None) == n and batch.ids.count(None) == 0:  # the usual case: every row, no copies
            rows = range(n)
        else:
            rows = [i for i, (id_, lab) in enumerate(zip(batch.ids, batch.labels, strict=True))
                    if id_ is not None and lab is None]
        if not rows:
            return
        ids: list[str]  # rows are the events that have an id
        if len(rows) == n:
            ids = cast(list[str], batch.ids)
            ts, preds, scores, versions = batch.timestamps, batch.predictions, batch.scores, batch.versions
        else:
            ids = cast(list[str], [batch.ids[i] for i in rows])
            ts = [batch.timestamps[i] for i in rows]
            preds = [batch.predictions[i] for i in rows]
            scores = [batch.scores[i] for i in rows]
            versions = [batch.versions[i] for i in rows]
        groups = mon.groups_of(batch, rows)
        if len(ids) > self.max_events:  # only the newest can be kept
            cut = len(ids) - self.max_events
            ids, ts, preds, scores, groups = ids[cut:], ts[cut:], preds[cut:], scores[cut:], groups[cut:]
            versions = versions[cut:]
            self.expired += cut
        now = self.clock()
        with self._lock:
            start = self._seq
            self._seq += len(ids)
            chunk = _Chunk(batch.model, now, ts, preds, scores, groups, ids, start=start, live=len(ids), versions=versions)
            index = self._index
            n_before = len(index)
            if index.keys().isdisjoint(ids):
                index.update(zip(ids, range(start, start + len(ids)), strict=True))
                chunk.live = len(index) - n_before  # less than len(ids) if the batch repeats an id
            else:  # ids seen before: the newest event wins (a slow path, rare)
                seen: set[str] = set()
                for id_ in ids:
                    old = index.get(id_)
                    if old is not None and id_ not in seen:
                        self._chunk_of(old).live -= 1
                    seen.add(id_)
                index.update(zip(ids, range(start, start + len(ids)), strict=True))
                chunk.live = len(seen)
            self._chunks.append(chunk)
            self._starts.append(start)
            self._evict(now)

    def _evict(self, now: float) -> None:
        cutoff = now - self.horizon
        chunks, index = self._chunks, self._index
        while self._head < len(chunks) and (len(index) > self.max_events or chunks[self._head].arrival < cutoff):
            chunk = chunks[self._head]
            chunks[self._head] = _EVICTED  # free its columns now, not at the next compaction
            self._head += 1
            if chunk.live <= 0:
                continue
            if chunk.live == len(chunk.ids):
                # No row was labelled or superseded (``live`` only ever goes down from the number of
                # distinct ids): every id still maps to this chunk, so drop them all in one C-level pass.
                deque(map(index.__delitem__, chunk.ids), maxlen=0)
                self.expired += chunk.live
                continue
            for seq, id_ in enumerate(chunk.ids, start=chunk.start):
                if index.get(id_) == seq:
                    del index[id_]
                    self.expired += 1
        if self._head > 64 and self._head * 2 > len(chunks):  # compact the evicted prefix
            del chunks[: self._head]
            del self._starts[: self._head]
            self._head = 0

    # ---------------------------------------------------------------- labels
    def join(self, ids: list[str], labels: list[Any], convert: LabelConverter | None = None,
             models: list[str | None] | None = None) -> JoinResult:
        """Join labels to remembered events and feed each model's monitor.

        ``convert(model, label)`` checks a label against its event's model
        (raising ValueError keeps the event waiting); ``models[i]``, when not
        None, must name the event's model or the label counts as unknown.
        """
        now = self.clock()
        res = JoinResult()
        per_model: dict[str, tuple[list, list, list, list, list, list]] = {}
        with self._lock:
            self._evict(now)
            index = self._index
            for pos, (id_, label) in enumerate(zip(ids, labels, strict=True)):
                seq = index.get(id_)
                chunk = None if seq is None else self._chunk_of(seq)
                if seq is None or chunk is None or (models is not None and models[pos] is not None
                                                    and models[pos] != chunk.model):
                    res.unknown.append(pos)
                    continue
                row = seq - chunk.start
                if convert is not None:
                    try:
                        label = convert(chunk.model, label)
                    except ValueError as exc:
                        res.invalid.append((pos, str(exc)))
                        continue
                del index[id_]
                chunk.live -= 1
                cols = per_model.get(chunk.model)
                if cols is None:
                    cols = per_model[chunk.model] = ([], [], [], [], [], [])
                cols[0].append(chunk.predictions[row])
                cols[1].append(label)
                cols[2].append(chunk.scores[row])
                cols[3].append(chunk.groups[row])
                ts = chunk.timestamps[row]
                cols[4].append(now - (ts if ts is not None else chunk.arrival))
                cols[5].append(chunk.versions[row] if chunk.versions else "")
        for model, (preds, labs, scores, groups, delays, versions) in per_model.items():
            self.pipeline.monitors[model].observe_labels(preds, labs, scores, groups, delays, versions=versions)
            res.joined[model] = len(preds)
        return res

    def pending(self) -> int:
        """Events waiting for a label (after evicting what passed the horizon)."""
        with self._lock:
            self._evict(self.clock())
            return len(self._index)
