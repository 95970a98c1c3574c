"""Item validation: JSON items to :class:`~modelmon.events.EventBatch` columns.

Two ways to the same result.  The typed pass decodes the whole body against
the configured models' msgspec structs (:mod:`.schema`) and turns them into
columns with a few list comprehensions.  When any item does not fit, the body
goes item by item through :meth:`ItemValidator.add`, which accepts every
documented spelling and refuses each bad item on its own with a reason and a
message naming the field, keeping the good ones.
"""

from __future__ import annotations

import math
import operator
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any, NamedTuple

import msgspec
import numpy as np
from msgspec.structs import astuple

from ..config import ModelConfig
from ..events import EventBatch
from ..labelsafe import MAX_LABEL_LENGTH, ItemError, check_label, label_string, shown_name
from ..missing import NULL_SET
from .body import DecodedBody, Malformed
from .schema import batch_decoder, event_struct
from .values import (
    canonical_class,
    category,
    finite_number,
    regression_value,
    timestamp,
)

#: Fields an event item may have.
EVENT_FIELDS = frozenset({
    "model", "version", "id", "timestamp", "features", "prediction", "score", "probabilities",
    "latency_seconds", "error", "attributes", "label", "attributions",
})
_FLOATISH = frozenset({float, int})
_STR_OR_NONE = frozenset({str, type(None)})
#: The typed struct's fields in the order :meth:`ItemValidator.add_typed` unpacks them.
_TYPED_GETTERS = tuple(map(operator.attrgetter, (
    "version", "id", "timestamp", "latency_seconds", "error", "prediction", "label", "score", "probabilities",
    "features", "attributes", "attributions")))
_INT_ONLY = frozenset({int})


def _numbers(values: dict, names: Iterable[str], prefix: str) -> list[float | None]:
    """The named numbers of one item (None where absent or null), checked one
    by one so the refusal names the first bad field."""
    out: list[float | None] = []
    for name in names:
        v = values.get(name)
        if v is not None:
            t = type(v)
            if t is not float and t is not int:
                raise ItemError("invalid_field", f"{prefix}.{name}: must be a number or null")
            v = finite_number(v, f"{prefix}.{name}")
        out.append(v)
    return out


class Rejection(NamedTuple):
    """One refused item: its position in the body, a reason of ``REJECT_REASONS`` and a message naming the field."""

    position: int
    reason: str
    message: str


def _class_value(v: Any) -> Any:
    if v is None or type(v) is str:
        return v
    if type(v) is bool:
        return "1" if v else "0"
    return str(v)


class ItemValidator:
    """Columns of one model's accepted events, filled item by item (:meth:`add`) or
    from typed structs (:meth:`add_typed`); :meth:`batch` hands them over."""

    def __init__(self, model: ModelConfig, source: str, unknown_feature: str = "ignore"):
        self.model = model
        self.source = source
        self.reject_unknown = unknown_feature == "reject"
        self.num_names = [f.name for f in model.features if f.type == "numerical"]
        self.cat_names = [f.name for f in model.features if f.type == "categorical"]
        self.names = frozenset(self.num_names) | frozenset(self.cat_names)
        self.num_rows: list[tuple] = []
        #: Numerical values already in float form, (events, features) each, in arrival order before ``num_rows``.
        self._num_blocks: list[np.ndarray] = []
        self.cat_rows: list[tuple] = []
        self.timestamps: list[float] = []
        self.versions: list[str] = []
        self.ids: list[str | None] = []
        self.latency: list[float | None] = []
        self.errors: list[str | None] = []
        self.predictions: list[Any] = []
        self.scores: list[float | None] = []
        self.labels: list[Any] = []
        self.group_attr: list[str | None] = []
        self.has_group = False
        #: Attribution rows (one value per configured feature, None = not sent); empty until one arrives.
        self.attr_names = [f.name for f in model.features]
        self.attr_rows: list[tuple | None] = []
        self.has_attr = False
        #: Feature values dropped because the feature is not configured (policy ``ignore``).
        self.unknown_features = 0
        self.classification = model.task == "classification"
        self.attr = model.fairness.attribute
        self.positive = model.positive_class

    def __len__(self) -> int:
        return len(self.timestamps)

    # ------------------------------------------------------------ item by item
    def add(self, ev: dict, now: float) -> None:
        """Validate one event and append it, or raise :class:`ItemError` leaving the validator as it was."""
        if not ev.keys() <= EVENT_FIELDS:
            bad = min(ev.keys() - EVENT_FIELDS)
            raise ItemError("invalid_field", f"{shown_name(bad)}: unknown field (expected {', '.join(sorted(EVENT_FIELDS))})")
        get = ev.get
        version = get("version")
        version = "" if version is None else label_string(version, "version")
        id_ = get("id")
        if id_ is not None:
            id_ = label_string(id_, "id")
        ts = timestamp(get("timestamp"), now)
        lat = get("latency_seconds")
        if lat is not None:
            lat = finite_number(lat, "latency_seconds")
            if lat < 0:
                raise ItemError("invalid_field", "latency_seconds: must be >= 0")
        err = get("error")
        if err is not None:
            if err is True:
                err = "error"
            elif err is False:
                err = None
            else:
                err = label_string(err, "error")
        pred: Any
        label: Any
        if self.classification:
            pred = canonical_class(get("prediction"), "prediction")
            label = canonical_class(get("label"), "label")
        else:
            pred = regression_value(get("prediction"), "prediction")
            label = regression_value(get("label"), "label")
        score = get("score")
        if score is not None:
            score = finite_number(score, "score")
        else:
            probs = get("probabilities")
            if probs is not None:
                score = self._score_from(probs)
        group = None
        attrs = get("attributes")
        if attrs is not None:
            if type(attrs) is not dict:
                raise ItemError("invalid_field", "attributes: must be an object")
            if self.attr and self.attr in attrs:
                group = category(attrs[self.attr], f"attributes.{self.attr}")
        feats = get("features")
        if feats is None:
            num, cat = (None,) * len(self.num_names), (None,) * len(self.cat_names)
            unknown = 0
        elif type(feats) is not dict:
            raise ItemError("invalid_field", "features: must be an object")
        else:
            num, cat, group, unknown = self._features(feats, group)
        attributions = get("attributions")
        if attributions is not None:
            attributions, dropped = self._attributions(attributions)
            unknown += dropped
        self.unknown_features += unknown
        self.attr_rows.append(attributions)
        if attributions is not None:
            self.has_attr = True
        self.num_rows.append(num)
        self.cat_rows.append(cat)
        self.timestamps.append(ts)
        self.versions.append(version)
        self.ids.append(id_)
        self.latency.append(lat)
        self.errors.append(err)
        self.predictions.append(pred)
        self.scores.append(score)
        self.labels.append(label)
        self.group_attr.append(group)
        if group is not None:
            self.has_group = True

    def _attributions(self, attrs: Any) -> tuple[tuple, int]:
        """(one finite float or None per configured feature, values dropped as unknown) of an event."""
        if type(attrs) is not dict:
            raise ItemError("invalid_field", "attributions: must be an object of feature -> number")
        unknown = 0
        for name in attrs:
            if name not in self.names:
                if self.reject_unknown:
                    raise ItemError("unknown_feature",
                                    f"attributions.{shown_name(name)}: not a feature of model {self.model.name!r}")
                unknown += 1
        return tuple(_numbers(attrs, self.attr_names, "attributions")), unknown

    def _score_from(self, probs: Any) -> float | None:
        if type(probs) is not dict:
            raise ItemError("invalid_field", "probabilities: must be an object of class -> probability")
        for k, v in probs.items():
            finite_number(v, f"probabilities.{shown_name(str(k))}")
        p = probs.get(self.positive)
        return None if p is None else float(p)

    def _features(self, feats: dict, group: str | None) -> tuple[tuple, tuple, str | None, int]:
        """(numerical values, categorical values, group, unknown features) of one event."""
        if feats.keys() == self.names:  # exactly the configured features, plain values
            num = tuple(map(feats.__getitem__, self.num_names))
            cat = tuple(map(feats.__getitem__, self.cat_names))
            if set(map(type, num)) <= _FLOATISH and set(map(type, cat)) <= {str}:
                try:
                    total = sum(num)  # finite iff every value is (or a sum past 1e308: checked below)
                except OverflowError:
                    total = math.inf
                if total - total == 0.0:
                    for name, v in zip(self.cat_names, cat, strict=True):
                        check_label(v, f"features.{name}")
                    if self.attr and group is None and self.attr in self.names:
                        group = category(feats[self.attr], f"features.{self.attr}")
                    return num, cat, group, 0
        unknown = 0
        for name, v in feats.items():  # name the first bad field
            if name in self.names:
                continue
            if name == self.attr:  # the sensitive attribute may travel with the features
                group = category(v, f"features.{name}")
            elif self.reject_unknown:
                raise ItemError("unknown_feature", f"features.{shown_name(name)}: not a feature of model {self.model.name!r}")
            else:
                unknown += 1
        get = feats.get
        num_vals = _numbers(feats, self.num_names, "features")
        cat_vals = [category(get(name), f"features.{name}") for name in self.cat_names]
        if self.attr and group is None and self.attr in self.names:
            group = category(get(self.attr), f"features.{self.attr}")
        return tuple(num_vals), tuple(cat_vals), group, unknown

    # ------------------------------------------------------------ typed structs
    def add_typed(self, evs: list[Any], now: float) -> None:
        """Append events already decoded into this model's struct (:func:`.schema.event_struct`)."""
        if not evs:
            return
        n = len(evs)
        # One C-level pass per field; each column is then fixed up only when it needs it.
        (versions, ids, timestamps, latency, errors, predictions, labels, scores, probs, feats,
         attrs, attributions) = [list(map(get, evs)) for get in _TYPED_GETTERS]
        self.versions += ["" if v is None else v for v in versions] if None in versions else versions
        self.ids += ids
        self.timestamps += [now if t is None else t for t in timestamps] if None in timestamps else timestamps
        self.latency += latency
        if errors.count(None) == n:
            self.errors += errors
        else:
            self.errors += [(("error" if e else None) if type(e) is bool else e) for e in errors]
        if self.classification:
            for out, col in ((self.predictions, predictions), (self.labels, labels)):
                types = set(map(type, col))
                if types <= _STR_OR_NONE:
                    out += col
                elif types == _INT_ONLY:  # integer classes: their decimal strings in one C-level pass
                    out += map(str, col)
                else:
                    out += map(_class_value, col)
        else:
            self.predictions += predictions
            self.labels += labels
        if probs.count(None) == n:
            self.scores += scores
        else:
            positive = self.positive
            self.scores += [s if s is not None or p is None else p.get(positive) for s, p in zip(scores, probs, strict=True)]
        k = len(self.num_names)
        if not self.cat_names and k and None not in feats:
            # Numerical features only, every event has them: straight into a float matrix when
            # no value is missing (a None among them makes fromiter raise: the row path below).
            try:
                block = np.fromiter(chain.from_iterable(map(astuple, feats)), dtype=np.float64, count=n * k)
            except TypeError:
                pass
            else:
                self._flush_num_rows()
                self._num_blocks.append(block.reshape(n, k))
                self.cat_rows += [()] * n
                self._add_attributions(attributions, n)
                self._add_groups(attrs, feats, n)
                return
        empty = (None,) * (k + len(self.cat_names))
        rows = [empty if f is None else astuple(f) for f in feats]  # numerical values first (see schema)
        if not self.cat_names:
            self.num_rows += rows
            self.cat_rows += [()] * n
        elif not k:
            self.num_rows += [()] * n
            self.cat_rows += rows
        else:
            self.num_rows += [r[:k] for r in rows]
            self.cat_rows += [r[k:] for r in rows]
        self._add_attributions(attributions, n)
        self._add_groups(attrs, feats, n)

    def _add_attributions(self, attributions: list[Any], n: int) -> None:
        if attributions.count(None) != n:
            # Attributions struct fields follow the model's features, as attr_names does.
            self.attr_rows += [None if a is None else astuple(a) for a in attributions]
            self.has_attr = True
        else:
            self.attr_rows += [None] * n

    def _add_groups(self, attrs: list[Any], feats: list[Any], n: int) -> None:
        groups: list[str | None] = [None] * n
        if self.attr:
            attr = self.attr
            groups = [None if a is None else a.get(attr) for a in attrs]
            if attr in self.names:
                groups = [g if g is not None or f is None else getattr(f, attr) for g, f in zip(groups, feats, strict=True)]
            if any(g is not None for g in groups):
                self.has_group = True
        self.group_attr += groups

    def _flush_num_rows(self) -> None:
        """Move the row-form numerical values gathered so far into a float block (keeps the events' order)."""
        rows, self.num_rows = self.num_rows, []
        if not rows:
            return
        n, k = len(rows), len(self.num_names)
        try:  # every value present: fromiter is ~35 % faster than np.array on row tuples
            arr = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=n * k)
        except TypeError:  # a None (missing value) among them: NaN
            arr = np.array(rows, dtype=np.float64)
        self._num_blocks.append(arr.reshape(n, k))

    # ------------------------------------------------------------ result
    def batch(self) -> EventBatch:
        """The accepted events as one batch (numerical features as float arrays, NaN when missing)."""
        features: dict[str, Any] = {}
        if self.num_names:
            self._flush_num_rows()
            blocks = self._num_blocks
            arr = blocks[0] if len(blocks) == 1 else np.concatenate(blocks) if blocks else np.empty((0, len(self.num_names)))
            # One transposing copy: each feature's column is then a contiguous row of it.
            by_feature = np.ascontiguousarray(arr.T)
            for j, name in enumerate(self.num_names):
                features[name] = by_feature[j]
        if self.cat_names:
            cols = list(zip(*self.cat_rows, strict=True)) if self.cat_rows else [() for _ in self.cat_names]
            for name, col in zip(self.cat_names, cols, strict=True):
                # "NA", "" and the other missing spellings are missing, as in reference files.
                features[name] = [None if v in NULL_SET else v for v in col] if NULL_SET.intersection(col) \
                    else list(col)
        attributes = {self.attr: self.group_attr} if self.has_group else {}
        attributions: dict[str, Any] = {}
        if self.has_attr and self.attr_names:
            empty = (None,) * len(self.attr_names)
            arr = np.array([empty if r is None else r for r in self.attr_rows], dtype=np.float64)
            arr = arr.reshape(len(self), len(self.attr_names))
            attributions = {name: np.ascontiguousarray(arr[:, j]) for j, name in enumerate(self.attr_names)}
        return EventBatch(
            model=self.model.name, timestamps=self.timestamps, versions=self.versions, ids=self.ids,
            latency_seconds=self.latency, errors=self.errors, features=features, predictions=self.predictions,
            scores=self.scores, labels=self.labels, attributes=attributes, source=self.source,
            attributions=attributions,
        )


@dataclass
class ValidatedEvents:
    """What :meth:`EventValidator.validate` made of one body."""

    #: One batch per model with accepted events.
    batches: list[EventBatch] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    #: Up to 10 unknown model names seen (for the error message), label-safe and bounded.
    unknown_models: set[str] = field(default_factory=set)
    #: Feature values dropped per model because the feature is not configured.
    unknown_features: dict[str, int] = field(default_factory=dict)

    @property
    def accepted(self) -> int:
        return sum(len(b) for b in self.batches)


class EventValidator:
    """Validates bodies of event items against the configured models."""

    def __init__(self, models: Sequence[ModelConfig], unknown_feature: str = "ignore",
                 clock: Callable[[], float] = time.time):
        self.models = {m.name: m for m in models}
        self.unknown_feature = unknown_feature
        self.clock = clock
        self.structs = {name: event_struct(m) for name, m in self.models.items()}
        self._model_of = {s: name for name, s in self.structs.items()}
        self._decoder = batch_decoder(list(self.structs.values())) if self.structs else None

    def decode_typed(self, body: DecodedBody) -> list[Any] | None:
        """The body's items as typed structs, or None when any item does not fit the plain schema."""
        if self._decoder is None:
            return None
        try:
            return self._decoder.decode(body.json_array())
        except (msgspec.DecodeError, RecursionError):  # ValidationError is a DecodeError
            return None

    def validate(self, body: DecodedBody, source: str) -> ValidatedEvents:
        """Accept what is valid and refuse the rest item by item.

        Raises :class:`~modelmon.ingest.body.BodyError` when the body as a whole cannot be read.
        """
        typed = self.decode_typed(body)
        if typed is None:
            return self.validate_items(body.items(), source)
        now = self.clock()
        kinds = set(map(type, typed))
        if not kinds <= self._model_of.keys():
            # An item decoded as the schema's placeholder (its tag sent as a model name): no model's
            # event, so the body goes item by item, where that item is refused as an unknown model.
            return self.validate_items(body.items(), source)
        groups: dict[type, list[Any]] = {}
        if len(kinds) == 1:  # one model's events (the usual body): no per-event grouping
            groups[kinds.pop()] = typed
        else:
            for ev in typed:
                groups.setdefault(type(ev), []).append(ev)
        res = ValidatedEvents()
        for struct, evs in groups.items():
            v = ItemValidator(self.models[self._model_of[struct]], source, self.unknown_feature)
            v.add_typed(evs, now)
            res.batches.append(v.batch())
        return res

    def validate_items(self, items: list[Any], source: str) -> ValidatedEvents:
        """Item by item, from Python values (:class:`~modelmon.ingest.body.Malformed` entries are refused)."""
        res = ValidatedEvents()
        validators: dict[str, ItemValidator] = {}
        now = self.clock()
        for index, ev in enumerate(items):
            if type(ev) is not dict:
                msg = ev.message if isinstance(ev, Malformed) else "must be a JSON object"
                res.rejected.append(Rejection(index, "malformed", msg))
                continue
            name = ev.get("model")
            v = validators.get(name) if type(name) is str else None
            if v is None:
                if name is None:
                    res.rejected.append(Rejection(index, "invalid_field", "model: required"))
                    continue
                if type(name) is not str:
                    res.rejected.append(Rejection(index, "invalid_field", "model: must be a string"))
                    continue
                mcfg = self.models.get(name)
                if mcfg is None:
                    shown = name[:MAX_LABEL_LENGTH].encode("utf-8", "replace").decode("utf-8")
                    res.rejected.append(Rejection(index, "unknown_model", f"model: unknown model {shown!r}"))
                    if len(res.unknown_models) < 10:
                        res.unknown_models.add(shown)
                    continue
                v = validators[name] = ItemValidator(mcfg, source, self.unknown_feature)
            try:
                v.add(ev, now)
            except ItemError as exc:
                res.rejected.append(Rejection(index, exc.reason, str(exc)))
        for name, v in validators.items():
            if v.unknown_features:
                res.unknown_features[name] = v.unknown_features
            if len(v):
                res.batches.append(v.batch())
        return res
