"""The ingestion API: ``POST /api/v1/events`` and ``POST /api/v1/labels``.

Model services (directly or through :mod:`modelmon.client`) post what they
served; labels follow when they are known.  Both endpoints take a JSON array
or NDJSON (one JSON object per line).  Every item is validated on its own: a
partly bad batch keeps its good events, and the response lists each refused
item's index, reason and a message naming the field::

    {"accepted": 998, "rejected_count": 2,
     "rejected": [{"index": 3, "reason": "invalid_field", "error": "features.age: must be a number or null"}, ...]}

Status codes: 200 when anything was accepted (or the batch was empty), 400
when nothing was (the first item's problem is the message), 404 when every
item names an unknown model (policy ``reject``), 401 without the configured
bearer token, 413 for a body over ``ingest.max_body_bytes``, 415 for an
unsupported ``Content-Encoding``, 429 when ``ingest.max_concurrent_requests``
are already being processed, 503 while the exporter starts or stops (and,
from the web server, when too many connections are open).  Every
refusal is counted in ``modelmon_events_rejected_total{source,reason}``:
per item for item problems, once per request for request-level ones.

Events become :class:`~modelmon.events.EventBatch` columns straight from the
parsed JSON (no per-event objects), numerical features as float arrays.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import operator
import os
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from typing import Any, Callable

import numpy as np

from ..config import Config, ConfigError, ModelConfig
from ..events import EventBatch
from ..labels import LabelJoin
from ..pipeline import Pipeline
from ..web import ExporterServer, Request, Response, json_error

try:  # orjson is 3-5x faster on big batches; the standard library is the fallback
    import orjson

    _fast_loads: Callable[[bytes], Any] | None = orjson.loads
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = None

log = logging.getLogger(__name__)

EVENTS_PATH = "/api/v1/events"
LABELS_PATH = "/api/v1/labels"
#: Header a client sets to be counted as ``source="client"`` instead of ``api``.
SOURCE_HEADER = "X-Modelmon-Source"
EVENT_FIELDS = frozenset({
    "model", "version", "id", "timestamp", "features", "prediction", "score", "probabilities",
    "latency_seconds", "error", "attributes", "label",
})
LABEL_FIELDS = frozenset({"id", "label", "model"})
#: Longest string accepted for ids, versions, error reasons and categories.
MAX_STRING = 256
#: At most this many refused items are listed in a response (all are counted).
MAX_LISTED = 1000


class ItemError(ValueError):
    """One item refused: a reason from REJECT_REASONS and a message naming the field."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# --------------------------------------------------------------------------- values


def canonical_class(value: Any, field_name: str = "prediction") -> str | None:
    """A class value as the string the monitor compares.

    JSON has several spellings of one class: ``1``, ``1.0`` and ``true`` are
    the class ``"1"`` (``false`` is ``"0"``), so that ``positive_class: "1"``
    matches whichever a model emits.
    """
    if value is None:
        return None
    t = type(value)
    if t is str:
        if len(value) > MAX_STRING:
            raise ItemError("invalid_field", f"{field_name}: longer than {MAX_STRING} characters")
        return value
    if t is bool:
        return "1" if value else "0"
    if t is int:
        return str(value)
    if t is float:
        if not math.isfinite(value):
            raise ItemError("non_finite", f"{field_name}: must be finite")
        return str(int(value)) if value.is_integer() else repr(value)
    raise ItemError("invalid_field", f"{field_name}: must be a string, number or boolean")


def finite_number(value: Any, field_name: str) -> float:
    t = type(value)
    if t is float:
        if value - value != 0.0:  # NaN or +-inf
            raise ItemError("non_finite", f"{field_name}: must be finite")
        return value
    if t is int:
        try:
            return float(value)
        except OverflowError:
            raise ItemError("non_finite", f"{field_name}: must be finite") from None
    raise ItemError("invalid_field", f"{field_name}: must be a number")


def regression_value(value: Any, field_name: str) -> float | None:
    return None if value is None else finite_number(value, field_name)


def _short_string(value: Any, field_name: str) -> str:
    t = type(value)
    if t is str:
        if len(value) > MAX_STRING:
            raise ItemError("invalid_field", f"{field_name}: longer than {MAX_STRING} characters")
        return value
    if t is int:
        return str(value)
    raise ItemError("invalid_field", f"{field_name}: must be a string")


def _timestamp(value: Any, now: float) -> float:
    if value is None:
        return now
    if type(value) is str:
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise ItemError("invalid_field", "timestamp: must be seconds since the epoch or an ISO 8601 time") from None
    ts = finite_number(value, "timestamp")
    if ts < 0:
        raise ItemError("invalid_field", "timestamp: must be seconds since the epoch")
    return ts


def _category(value: Any, field_name: str) -> str | None:
    if value is None or type(value) is str:
        if value is not None and len(value) > MAX_STRING:
            raise ItemError("invalid_field", f"{field_name}: longer than {MAX_STRING} characters")
        return value
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) in (int, float):
        return canonical_class(value, field_name)
    raise ItemError("invalid_field", f"{field_name}: must be a string, number, boolean or null")


# --------------------------------------------------------------------------- body parsing


class BodyError(ValueError):
    """The body as a whole cannot be read (answered with one 400)."""


def _loads(data: bytes) -> Any:
    """orjson when installed; the standard library when orjson refuses, so that
    NaN / Infinity literals become per-item ``non_finite`` refusals."""
    if _fast_loads is not None:
        try:
            return _fast_loads(data)
        except ValueError:
            pass
    return json.loads(data)


def parse_items(body: bytes) -> list[Any]:
    """The items of a JSON array, a single JSON object or NDJSON.

    An NDJSON line that is not JSON becomes a :class:`BodyError` instance in
    the list (refused on its own); a broken JSON array fails the whole body.
    """
    text = body.lstrip()
    if not text:
        raise BodyError("empty body: expected a JSON array of objects or NDJSON")
    if text[:1] == b"[":
        try:
            items = _loads(body)
        except ValueError as exc:
            raise BodyError(f"invalid JSON: {exc}") from None
        if not isinstance(items, list):
            raise BodyError("expected a JSON array of objects or NDJSON")
        return items
    if text[:1] == b"{":
        try:
            obj = _loads(body)  # one (possibly pretty-printed) object
            if isinstance(obj, dict):
                return [obj]
        except ValueError:
            pass  # NDJSON: more than one object
    items: list[Any] = []
    for lineno, line in enumerate(body.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            items.append(_loads(line))
        except ValueError as exc:
            items.append(BodyError(f"line {lineno}: invalid JSON: {exc}"))
    if items and all(isinstance(i, BodyError) for i in items):
        raise BodyError(f"expected a JSON array of objects or NDJSON ({items[0]})")
    return items


def decode_body(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip`` / ``deflate`` without ever holding more than ``limit`` bytes."""
    if not encoding or encoding == "identity":
        return raw
    if encoding not in ("gzip", "deflate"):
        raise _Unsupported(encoding)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
    try:
        out = d.decompress(raw, limit + 1)
    except zlib.error as exc:
        raise BodyError(f"invalid {encoding} body: {exc}") from None
    if len(out) > limit or d.unconsumed_tail:
        raise _TooLarge()
    return out


class _Unsupported(Exception):
    pass


class _TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- batch building


_FLOATISH = frozenset({float, int})
_NONE = type(None)
_STR_OR_NONE = frozenset({str, _NONE})
_NUM_OR_NONE = frozenset({float, int, _NONE})
_CLASS_TYPES = frozenset({str, int, bool, _NONE})


class _NotPlain(Exception):
    """A batch the column-wise path does not take (it goes item by item)."""


def _getter(names: list[str]) -> Callable[[dict], tuple]:
    if len(names) == 1:
        name = names[0]
        return lambda d: (d[name],)
    return operator.itemgetter(*names)


class _Columns:
    """Column-wise validation of a batch of one model (see :meth:`_Builder.add_all`)."""

    def __init__(self, items: list[dict], now: float, b: "_Builder"):
        n = len(items)
        self.versions = [v if v is not None else "" for v in self._strings(items, "version")]
        self.ids = self._strings(items, "id")
        ts = self._numbers(items, "timestamp", non_negative=True)
        self.timestamps = [now if t is None else t for t in ts]
        self.latency = self._numbers(items, "latency_seconds", non_negative=True)
        errors = [ev.get("error") for ev in items]
        kinds = set(map(type, errors))
        if kinds == {_NONE}:
            self.errors = errors
        elif kinds <= {str, bool, _NONE}:
            self.errors = [("error" if e else None) if type(e) is bool else e for e in errors]
            self._check_lengths(e for e in self.errors if e is not None)
        else:
            raise _NotPlain
        if b.classification:
            self.predictions = self._classes(items, "prediction")
            self.labels = self._classes(items, "label")
        else:
            self.predictions = self._numbers(items, "prediction")
            self.labels = self._numbers(items, "label")
        if any(["probabilities" in ev for ev in items]):
            raise _NotPlain
        self.scores = self._numbers(items, "score")
        attrs = [ev.get("attributes") for ev in items]
        if not set(map(type, attrs)) <= {dict, _NONE}:
            raise _NotPlain
        groups: list[Any] = [None] * n
        if b.attr:
            groups = [a.get(b.attr) if a is not None else None for a in attrs]
            if not set(map(type, groups)) <= _STR_OR_NONE:
                raise _NotPlain
            self._check_lengths(g for g in groups if g is not None)
        feats = [ev.get("features") for ev in items]
        names = b.names
        if not names:  # a model without features: none may be sent (unknown ones are counted item by item)
            if not all([f is None or (type(f) is dict and not f) for f in feats]):
                raise _NotPlain
        elif not all([type(f) is dict and f.keys() == names for f in feats]):
            raise _NotPlain
        self.num_arr = None
        self.num_rows: list[tuple] = [()] * n
        if b.num_names:
            self.num_rows = list(map(_getter(b.num_names), feats))
            if not set(map(type, chain.from_iterable(self.num_rows))) <= _FLOATISH:
                raise _NotPlain
            try:
                self.num_arr = np.array(self.num_rows, dtype=np.float64).reshape(n, len(b.num_names))
            except OverflowError:
                raise _NotPlain from None
            if not np.isfinite(self.num_arr).all():
                raise _NotPlain
        self.cat_rows: list[tuple] = [()] * n
        if b.cat_names:
            self.cat_rows = list(map(_getter(b.cat_names), feats))
            if not set(map(type, chain.from_iterable(self.cat_rows))) <= {str}:
                raise _NotPlain
            self._check_lengths(chain.from_iterable(self.cat_rows))
        if b.attr and b.attr in names:
            if b.attr not in b.cat_names:
                raise _NotPlain
            groups = [g if g is not None else f[b.attr] for g, f in zip(groups, feats)]
        self.groups = groups

    @staticmethod
    def _check_lengths(strings: Any) -> None:
        if max(map(len, strings), default=0) > MAX_STRING:
            raise _NotPlain

    def _strings(self, items: list[dict], key: str) -> list[Any]:
        col = [ev.get(key) for ev in items]
        if not set(map(type, col)) <= _STR_OR_NONE:
            raise _NotPlain
        self._check_lengths(v for v in col if v is not None)
        return col

    @staticmethod
    def _finite(values: list[Any]) -> np.ndarray:
        try:
            arr = np.array(values, dtype=np.float64)
        except OverflowError:
            raise _NotPlain from None
        if not np.isfinite(arr).all():
            raise _NotPlain
        return arr

    def _numbers(self, items: list[dict], key: str, non_negative: bool = False) -> list[Any]:
        col = [ev.get(key) for ev in items]
        kinds = set(map(type, col))
        if kinds == {_NONE}:
            return col
        if not kinds <= _NUM_OR_NONE:
            raise _NotPlain
        present = [v for v in col if v is not None] if _NONE in kinds else col
        arr = self._finite(present)
        if non_negative and (arr < 0).any():
            raise _NotPlain
        if int in kinds:
            return [None if v is None else float(v) for v in col]
        return col

    def _classes(self, items: list[dict], key: str) -> list[Any]:
        col = [ev.get(key) for ev in items]
        kinds = set(map(type, col))
        if not kinds <= _CLASS_TYPES:
            raise _NotPlain
        if kinds <= _STR_OR_NONE:
            self._check_lengths(v for v in col if v is not None)
            return col
        if str in kinds:
            self._check_lengths(v for v in col if type(v) is str)
        return [v if v is None or type(v) is str else ("1" if v else "0") if type(v) is bool else str(v) for v in col]


class _Builder:
    """Columns of one model's accepted events, filled item by item.

    Feature values are kept as one tuple per event (numerical and categorical
    separately) and turned into columns once per batch: a float array per
    numerical feature, a list per categorical one.  The common event (every
    configured feature present, plain numbers and strings) is checked with a
    few C-level calls over the whole tuple; anything else takes the
    value-by-value path that names the offending field.
    """

    def __init__(self, model: ModelConfig, source: str):
        self.model = model
        self.source = source
        self.num_names = [f.name for f in model.features if f.type == "numerical"]
        self.cat_names = [f.name for f in model.features if f.type == "categorical"]
        self.names = frozenset(self.num_names) | frozenset(self.cat_names)
        self.num_rows: list[tuple] = []
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
        self.unknown_features = 0
        self.classification = model.task == "classification"
        self.attr = model.fairness.attribute
        self.positive = model.positive_class
        self._num_arr: np.ndarray | None = None  # set by add_all

    def __len__(self) -> int:
        return len(self.timestamps)

    def add(self, ev: dict, now: float, reject_unknown_features: bool) -> None:
        """Validate one event and append it, or raise :class:`ItemError` leaving the builder as it was."""
        if not ev.keys() <= EVENT_FIELDS:
            bad = sorted(ev.keys() - EVENT_FIELDS)[0]
            raise ItemError("invalid_field", f"{bad}: unknown field (expected {', '.join(sorted(EVENT_FIELDS))})")
        get = ev.get
        # Inline type checks first: this runs once per event at 50k+ events/s.
        version = get("version")
        if version is None:
            version = ""
        elif type(version) is not str or len(version) > MAX_STRING:
            version = _short_string(version, "version")
        id_ = get("id")
        if id_ is not None and (type(id_) is not str or len(id_) > MAX_STRING):
            id_ = _short_string(id_, "id")
        ts = get("timestamp")
        ts = now if ts is None else _timestamp(ts, now)
        lat = get("latency_seconds")
        if lat is not None:
            if type(lat) is not float or lat - lat != 0.0:
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
                err = _short_string(err, "error")
        if self.classification:
            pred = get("prediction")
            if type(pred) is not str or len(pred) > MAX_STRING:
                pred = canonical_class(pred, "prediction")
            label = get("label")
            if label is not None:
                label = canonical_class(label, "label")
        else:
            pred = regression_value(get("prediction"), "prediction")
            label = regression_value(get("label"), "label")
        score = get("score")
        if score is not None:
            if type(score) is not float or score - score != 0.0:
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
                group = _category(attrs[self.attr], f"attributes.{self.attr}")
        feats = get("features")
        if feats is None:
            num, cat = (None,) * len(self.num_names), (None,) * len(self.cat_names)
        elif type(feats) is not dict:
            raise ItemError("invalid_field", "features: must be an object")
        else:
            num, cat, group = self._features(feats, reject_unknown_features, group)
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

    def add_all(self, items: list[dict], now: float) -> bool:
        """Validate and append a whole batch column by column, or return False
        without changing anything (then :meth:`add` goes item by item and names
        each problem).

        Only the plainest form of every field is accepted here, so whatever
        passes would pass :meth:`add` with the same result (the tests compare
        both); ``None`` for a feature, ISO timestamps, ``probabilities``,
        unknown features and the like take the item-by-item path.
        """
        if self.timestamps or not items:
            return False
        n = len(items)
        if not all([ev.keys() <= EVENT_FIELDS for ev in items]):
            return False
        try:
            cols = _Columns(items, now, self)
        except _NotPlain:
            return False
        self.timestamps, self.versions, self.ids = cols.timestamps, cols.versions, cols.ids
        self.latency, self.errors, self.scores = cols.latency, cols.errors, cols.scores
        self.predictions, self.labels = cols.predictions, cols.labels
        self.num_rows, self.cat_rows, self._num_arr = cols.num_rows, cols.cat_rows, cols.num_arr
        self.group_attr = cols.groups
        self.has_group = any(g is not None for g in cols.groups)
        assert len(self.timestamps) == n
        return True

    def _score_from(self, probs: Any) -> float | None:
        if type(probs) is not dict:
            raise ItemError("invalid_field", "probabilities: must be an object of class -> probability")
        for k, v in probs.items():
            finite_number(v, f"probabilities.{k}")
        p = probs.get(self.positive)
        return None if p is None else float(p)

    def _features(self, feats: dict, reject_unknown: bool, group: str | None) -> tuple[tuple, tuple, str | None]:
        """(numerical values, categorical values, group) of one event."""
        if feats.keys() == self.names:  # fast path: exactly the configured features
            num = tuple(map(feats.__getitem__, self.num_names))
            cat = tuple(map(feats.__getitem__, self.cat_names))
            if set(map(type, num)) <= _FLOATISH and set(map(type, cat)) <= {str}:
                try:
                    total = sum(num)  # finite iff every value is (or a sum past 1e308: checked below)
                except OverflowError:
                    total = math.inf
                if total - total == 0.0 and (not cat or max(map(len, cat)) <= MAX_STRING):
                    if self.attr and group is None and self.attr in self.names:
                        group = _category(feats[self.attr], f"features.{self.attr}")
                    return num, cat, group
        for name, v in feats.items():  # slow path: name the first bad field
            if name in self.names:
                continue
            if name == self.attr:  # the sensitive attribute may travel with the features
                group = _category(v, f"features.{name}")
            elif reject_unknown:
                raise ItemError("unknown_feature", f"features.{name}: not a feature of model {self.model.name!r}")
        get = feats.get
        num_vals = []
        for name in self.num_names:
            v = get(name)
            if v is not None:
                t = type(v)
                if t is not float and t is not int:
                    raise ItemError("invalid_field", f"features.{name}: must be a number or null")
                v = finite_number(v, f"features.{name}")
            num_vals.append(v)
        cat_vals = [_category(get(name), f"features.{name}") for name in self.cat_names]
        if not reject_unknown:
            self.unknown_features += sum(1 for name in feats if name not in self.names and name != self.attr)
        if self.attr and group is None and self.attr in self.names:
            group = _category(feats.get(self.attr), f"features.{self.attr}")
        return tuple(num_vals), tuple(cat_vals), group

    def batch(self) -> EventBatch:
        features: dict[str, Any] = {}
        if self.num_names:
            arr = self._num_arr
            if arr is None:
                arr = np.array(self.num_rows, dtype=np.float64).reshape(len(self), len(self.num_names))
            for j, name in enumerate(self.num_names):
                features[name] = np.ascontiguousarray(arr[:, j])
        if self.cat_names:
            for name, col in zip(self.cat_names, zip(*self.cat_rows)):
                features[name] = list(col)
        attributes = {self.attr: self.group_attr} if self.has_group else {}
        return EventBatch(
            model=self.model.name, timestamps=self.timestamps, versions=self.versions, ids=self.ids,
            latency_seconds=self.latency, errors=self.errors, features=features, predictions=self.predictions,
            scores=self.scores, labels=self.labels, attributes=attributes, source=self.source,
        )


@dataclass
class IngestResult:
    accepted: int = 0
    #: (index, reason, message)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)
    unknown_models: set[str] = field(default_factory=set)


# --------------------------------------------------------------------------- the API


def read_token(cfg: Config) -> str | None:
    """The bearer token from ``ingest.token_env`` / ``ingest.token_file`` (never logged)."""
    ing = cfg.ingest
    if ing.token_env:
        tok = os.environ.get(ing.token_env, "")
        if not tok.strip():
            raise ConfigError(f"environment variable {ing.token_env} is not set or empty",
                              file=cfg.source or None, field_path="ingest.token_env")
        return tok.strip()
    if ing.token_file:
        path = cfg.resolve_path(ing.token_file)
        try:
            tok = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}", file=cfg.source or None,
                              field_path="ingest.token_file") from None
        if not tok:
            raise ConfigError(f"{path} is empty", file=cfg.source or None, field_path="ingest.token_file")
        return tok
    return None


class IngestAPI:
    """The two ingestion endpoints; stateless apart from counters and the join buffer."""

    def __init__(self, pipeline: Pipeline, cfg: Config, join: LabelJoin, token: str | None = None,
                 ready: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time):
        self.pipeline = pipeline
        self.cfg = cfg
        self.ing = cfg.ingest
        self.join = join
        self._token = token.encode() if token else None
        self.ready = ready
        self.clock = clock
        self._slots = threading.BoundedSemaphore(self.ing.max_concurrent_requests)
        self._lock = threading.Lock()
        #: Feature values dropped because the feature is not configured, per model.
        self.unknown_features: dict[str, int] = {m.name: 0 for m in cfg.models}

    def install(self, server: ExporterServer) -> None:
        server.add_route("POST", EVENTS_PATH, self.post_events)
        server.add_route("POST", LABELS_PATH, self.post_labels)

    # ------------------------------------------------------------ plumbing
    def _source(self, req: Request) -> str:
        return "client" if (req.headers.get(SOURCE_HEADER) or "").strip().lower() == "client" else "api"

    def guarded(self, req: Request, handle: Callable[[bytes, str], Response]) -> Response:
        """Auth, load shedding, body limits; then ``handle(body, source)`` (also for other ingestion routes)."""
        source = self._source(req)
        if self._token is not None:
            given = req.headers.get("Authorization") or ""
            scheme, _, cred = given.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(cred.strip().encode(), self._token):
                self.pipeline.reject(source, "unauthorized")
                return Response(401, {"error": "missing or invalid bearer token"},
                                headers={"WWW-Authenticate": 'Bearer realm="modelmon"', "Connection": "close"})
        if not self.ready():
            self.pipeline.reject(source, "overloaded")
            return Response(503, {"error": "exporter is starting or stopping"},
                            headers={"Retry-After": "1", "Connection": "close"})
        if not self._slots.acquire(timeout=0.05):
            self.pipeline.reject(source, "overloaded")
            return Response(429, {"error": f"too many ingestion requests at once (max {self.ing.max_concurrent_requests})"},
                            headers={"Retry-After": "1", "Connection": "close"})
        try:
            limit = self.ing.max_body_bytes
            raw = req.read_body(limit)
            if raw is None:
                self.pipeline.reject(source, "body_too_large")
                return Response(413, {"error": f"body larger than ingest.max_body_bytes ({limit} bytes)"},
                                headers={"Connection": "close"})
            try:
                body = decode_body(raw, (req.headers.get("Content-Encoding") or "").strip().lower() or None, limit)
            except _TooLarge:
                self.pipeline.reject(source, "body_too_large")
                return json_error(413, f"decoded body larger than ingest.max_body_bytes ({limit} bytes)")
            except _Unsupported as exc:
                self.pipeline.reject(source, "malformed")
                return json_error(415, f"unsupported Content-Encoding {exc} (use gzip, deflate or none)")
            except BodyError as exc:
                self.pipeline.reject(source, "malformed")
                return json_error(400, str(exc))
            return handle(body, source)
        finally:
            self._slots.release()

    def _count_rejections(self, source: str, rejected: list[tuple[int, str, str]]) -> None:
        counts: dict[str, int] = {}
        for _, reason, _ in rejected:
            counts[reason] = counts.get(reason, 0) + 1
        for reason, n in counts.items():
            self.pipeline.reject(source, reason, n)

    @staticmethod
    def _listing(rejected: list[tuple[int, str, str]]) -> list[dict[str, Any]]:
        return [{"index": i, "reason": r, "error": m} for i, r, m in rejected[:MAX_LISTED]]

    # ------------------------------------------------------------ events
    def post_events(self, req: Request) -> Response:
        return self.guarded(req, self._events)

    def _events(self, body: bytes, source: str) -> Response:
        try:
            items = parse_items(body)
        except BodyError as exc:
            self.pipeline.reject(source, "malformed")
            return json_error(400, str(exc))
        res = self.ingest(items, source)
        self._count_rejections(source, res.rejected)
        payload: dict[str, Any] = {"accepted": res.accepted, "rejected_count": len(res.rejected),
                                   "rejected": self._listing(res.rejected)}
        if res.accepted or not res.rejected:
            return Response(200, payload)
        if all(r == "unknown_model" for _, r, _ in res.rejected):
            names = ", ".join(repr(m) for m in sorted(res.unknown_models)[:5])
            if self.ing.unknown_model == "count":
                return Response(200, payload)
            return Response(404, {"error": f"unknown model {names} (not in the exporter's config)", **payload})
        index, _, message = res.rejected[0]
        return Response(400, {"error": f"item {index}: {message}", **payload})

    def ingest(self, items: list[Any], source: str) -> IngestResult:
        """Validate items into per-model batches and submit them."""
        res = IngestResult()
        builders: dict[str, _Builder] = {}
        models = {m.name: m for m in self.cfg.models}
        reject_unknown = self.ing.unknown_feature == "reject"
        now = self.clock()
        if items and set(map(type, items)) == {dict}:  # fast path: one known model, plain values
            names = {ev.get("model") for ev in items}
            name = names.pop() if len(names) == 1 else None
            if type(name) is str and name in models:
                b = _Builder(models[name], source)
                if b.add_all(items, now):
                    self.pipeline.submit(b.batch())
                    res.accepted = len(b)
                    return res
        for index, ev in enumerate(items):
            if type(ev) is not dict:
                msg = str(ev) if isinstance(ev, BodyError) else "must be a JSON object"
                res.rejected.append((index, "malformed", msg))
                continue
            name = ev.get("model")
            b = builders.get(name) if type(name) is str else None
            if b is None:
                if name is None:
                    res.rejected.append((index, "invalid_field", "model: required"))
                    continue
                if type(name) is not str:
                    res.rejected.append((index, "invalid_field", "model: must be a string"))
                    continue
                mcfg = models.get(name)
                if mcfg is None:
                    res.rejected.append((index, "unknown_model", f"model: unknown model {name[:MAX_STRING]!r}"))
                    if len(res.unknown_models) < 10:
                        res.unknown_models.add(name[:MAX_STRING])
                    continue
                b = builders[name] = _Builder(mcfg, source)
            try:
                b.add(ev, now, reject_unknown)
            except ItemError as exc:
                res.rejected.append((index, exc.reason, str(exc)))
        for name, b in builders.items():
            if b.unknown_features:
                with self._lock:
                    self.unknown_features[name] = self.unknown_features.get(name, 0) + b.unknown_features
            if len(b):
                self.pipeline.submit(b.batch())
                res.accepted += len(b)
        return res

    # ------------------------------------------------------------ labels
    def post_labels(self, req: Request) -> Response:
        return self.guarded(req, self._labels)

    def _convert_label(self, model: str, label: Any) -> Any:
        mcfg = self.pipeline.monitors[model].cfg
        try:
            if mcfg.task == "classification":
                return canonical_class(label, "label")
            return regression_value(label, "label")
        except ItemError as exc:
            raise ValueError(str(exc)) from None

    def _labels(self, body: bytes, source: str) -> Response:
        try:
            items = parse_items(body)
        except BodyError as exc:
            self.pipeline.reject(source, "malformed")
            return json_error(400, str(exc))
        rejected: list[tuple[int, str, str]] = []
        ids: list[str] = []
        labels: list[Any] = []
        models: list[str | None] = []
        where: list[int] = []
        for index, item in enumerate(items):
            if type(item) is not dict:
                rejected.append((index, "malformed", str(item) if isinstance(item, BodyError) else "must be a JSON object"))
                continue
            try:
                if item.keys() - LABEL_FIELDS:
                    bad = sorted(item.keys() - LABEL_FIELDS)[0]
                    raise ItemError("invalid_field", f"{bad}: unknown field (expected id, label, model)")
                if item.get("id") is None:
                    raise ItemError("invalid_field", "id: required")
                if "label" not in item or item["label"] is None:
                    raise ItemError("invalid_field", "label: required")
                id_ = _short_string(item["id"], "id")
                model = item.get("model")
                if model is not None:
                    model = _short_string(model, "model")
                label = item["label"]
                if type(label) not in (str, int, float, bool):
                    raise ItemError("invalid_field", "label: must be a string, number or boolean")
            except ItemError as exc:
                rejected.append((index, exc.reason, str(exc)))
                continue
            ids.append(id_)
            labels.append(label)
            models.append(model)
            where.append(index)
        joined = self.join.join(ids, labels, convert=self._convert_label, models=models)
        for pos in joined.unknown:
            rejected.append((where[pos], "unknown_id", f"id: no recent event with id {ids[pos][:64]!r} waiting for a label"))
        for pos, message in joined.invalid:
            reason = "non_finite" if "finite" in message else "invalid_field"
            rejected.append((where[pos], reason, message))
        rejected.sort()
        self._count_rejections(source, rejected)
        accepted = sum(joined.joined.values())
        payload = {"accepted": accepted, "rejected_count": len(rejected), "rejected": self._listing(rejected)}
        if accepted or not rejected:
            return Response(200, payload)
        if all(r == "unknown_id" for _, r, _ in rejected):
            return Response(404, {"error": "no recent event with these ids (unknown, expired or already labelled)", **payload})
        index, _, message = rejected[0]
        return Response(400, {"error": f"item {index}: {message}", **payload})


# --------------------------------------------------------------------------- wiring


def install(exporter: Any) -> None:
    """Attach the label join, the ingestion endpoints and (when configured) the
    reverse proxy to an :class:`~modelmon.app.Exporter`."""
    from ..collectors.ingest import IngestCollector

    cfg = exporter.cfg
    token = read_token(cfg) if cfg.ingest.enabled else None
    join = LabelJoin(exporter.pipeline, cfg.ingest.label_join_max_events, cfg.ingest.label_join_horizon_seconds,
                     clock=exporter.pipeline.clock)
    exporter.pipeline.listeners.append(join.on_batch)
    exporter.label_join = join
    proxy = None
    if cfg.proxy.listen_address:
        from .proxy import ProxySource

        proxy = ProxySource(cfg, exporter.pipeline)
        proxy.start()
        exporter.closers.append(proxy.stop)
    exporter.proxy = proxy
    api = None
    if cfg.ingest.enabled:
        api = IngestAPI(exporter.pipeline, cfg, join, token=token, ready=exporter._ready.is_set,
                        clock=exporter.pipeline.clock)
        api.install(exporter.server)
        exporter.server.on_shed = lambda: exporter.pipeline.reject("api", "overloaded")
    exporter.ingest_api = api
    exporter.registry.register(IngestCollector(api, join, proxy))
    if api is not None:
        from ..collectors.cloudevents import CloudEventsCollector
        from .cloudevents import CloudEventsSink

        sink = CloudEventsSink(cfg, api)
        sink.install(exporter.server)
        sink.start()
        exporter.closers.append(sink.stop)
        exporter.registry.register(CloudEventsCollector(sink))
