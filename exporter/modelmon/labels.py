"""The label join buffer: ground truth that arrives after the prediction.

Real labels come late (a click, a chargeback, a human review) or never.  Every
accepted event that carries an ``id`` and no label is remembered here for at
most ``horizon`` seconds; a label posted later for that id is joined to the
event's prediction, score and fairness group and handed to the model's monitor
(:meth:`~modelmon.monitor.ModelMonitor.observe_labels`) with its delay.

Memory is bounded twice: by the horizon and by ``max_events``.  Events are
kept in per-batch chunks (one small object per accepted batch, not per event);
the oldest chunks go first when either bound is crossed.  A label whose event
is not (or no longer) held is refused as ``unknown_id``, and a second label for
the same id is too: an event is labelled once.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

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
    live: int = 0


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
        self._index: dict[str, tuple[_Chunk, int]] = {}
        self._chunks: deque[_Chunk] = deque()
        #: Events dropped unlabelled because the buffer was full or the horizon passed.
        self.expired = 0

    def __len__(self) -> int:
        return len(self._index)

    # ---------------------------------------------------------------- events
    def on_batch(self, batch: EventBatch) -> None:
        """Remember the batch's unlabelled events that have an id (pipeline listener)."""
        mon = self.pipeline.monitors.get(batch.model)
        if mon is None:
            return
        rows = [i for i, (id_, lab) in enumerate(zip(batch.ids, batch.labels)) if id_ is not None and lab is None]
        if not rows:
            return
        if len(rows) == len(batch):  # the usual case: no copies
            ids, ts, preds, scores = batch.ids, batch.timestamps, batch.predictions, batch.scores
        else:
            ids = [batch.ids[i] for i in rows]
            ts = [batch.timestamps[i] for i in rows]
            preds = [batch.predictions[i] for i in rows]
            scores = [batch.scores[i] for i in rows]
        groups = mon._groups_of(batch, rows)
        if len(ids) > self.max_events:  # only the newest can be kept
            cut = len(ids) - self.max_events
            ids, ts, preds, scores, groups = ids[cut:], ts[cut:], preds[cut:], scores[cut:], groups[cut:]
            self.expired += cut
        now = self.clock()
        chunk = _Chunk(batch.model, now, ts, preds, scores, groups, ids, live=len(ids))
        with self._lock:
            index = self._index
            for row, id_ in enumerate(ids):
                old = index.get(id_)
                if old is not None:  # a repeated id: the newest event wins
                    old[0].live -= 1
                index[id_] = (chunk, row)
            self._chunks.append(chunk)
            self._evict(now)

    def _evict(self, now: float) -> None:
        cutoff = now - self.horizon
        chunks, index = self._chunks, self._index
        while chunks and (len(index) > self.max_events or chunks[0].arrival < cutoff):
            chunk = chunks.popleft()
            if chunk.live <= 0:
                continue
            for row, id_ in enumerate(chunk.ids):
                entry = index.get(id_)
                if entry is not None and entry[0] is chunk and entry[1] == row:
                    del index[id_]
                    self.expired += 1

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
        per_model: dict[str, tuple[list, list, list, list, list]] = {}
        with self._lock:
            self._evict(now)
            index = self._index
            for pos, (id_, label) in enumerate(zip(ids, labels)):
                entry = index.get(id_)
                if entry is None or (models is not None and models[pos] is not None and models[pos] != entry[0].model):
                    res.unknown.append(pos)
                    continue
                chunk, row = entry
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
                    cols = per_model[chunk.model] = ([], [], [], [], [])
                cols[0].append(chunk.predictions[row])
                cols[1].append(label)
                cols[2].append(chunk.scores[row])
                cols[3].append(chunk.groups[row])
                ts = chunk.timestamps[row]
                cols[4].append(now - (ts if ts is not None else chunk.arrival))
        for model, (preds, labs, scores, groups, delays) in per_model.items():
            self.pipeline.monitors[model].observe_labels(preds, labs, scores, groups, delays)
            res.joined[model] = len(preds)
        return res

    def pending(self) -> int:
        """Events waiting for a label (after evicting what passed the horizon)."""
        with self._lock:
            self._evict(self.clock())
            return len(self._index)
