"""Frozen reference profiles.

A profile is built once from the reference (training-time) data and never
rebinned: every window is compared against the same quantile bin edges, the
same category list and the same sorted sample.  That is what makes scores
comparable across windows, exporter replicas and the batch command, and what
lets Prometheus sum bin counters from several replicas (fleet-wide PSI).

Numerical bins: ``edges`` are the reference quantiles ``q0 = min .. qB = max``
(duplicates from ties or discrete data removed).  A value ``x`` falls in slot

- ``0`` when ``x < min`` (below the reference range),
- ``1 + searchsorted(edges[1:-1], x, side="right")`` inside the range,
- ``len(edges)`` when ``x > max`` (above the reference range),

so there are ``len(edges) + 1`` slots and the reference itself never has
counts in the two out-of-range slots.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

OTHER = "__other__"
PROFILE_FORMAT = "modelmon-reference-profile/v1"


@dataclass
class NumericalProfile:
    name: str
    edges: np.ndarray
    counts: np.ndarray
    mean: float
    std: float
    min: float
    max: float
    n: int
    missing: int
    #: Sorted, bounded sample (evenly spaced order statistics) for exact tests.
    sample: np.ndarray
    type: str = field(default="numerical", init=False)

    @property
    def slots(self) -> int:
        return len(self.edges) + 1

    def bin_index(self, x: np.ndarray) -> np.ndarray:
        """Slot of each value (see module docs); NaN gets -1."""
        x = np.asarray(x, dtype=np.float64)
        idx = np.searchsorted(self.edges[1:-1], x, side="right") + 1
        idx[x < self.min] = 0
        idx[x > self.max] = len(self.edges)
        idx[np.isnan(x)] = -1
        return idx.astype(np.int32)

    def fractions(self) -> np.ndarray:
        total = self.counts.sum()
        return self.counts / total if total else np.zeros_like(self.counts, dtype=float)

    def slot_labels(self) -> list[str]:
        """Bounded label values for the bin slots: ``0`` .. ``len(edges)``."""
        return [str(i) for i in range(self.slots)]

    @cached_property
    def sample_steps(self) -> tuple[np.ndarray, np.ndarray]:
        """The sample's empirical CDF as (distinct values, F at each value),
        computed once: what the KS statistic evaluates against."""
        values, counts = np.unique(self.sample, return_counts=True)
        return values, np.cumsum(counts) / len(self.sample)


@dataclass
class CategoricalProfile:
    name: str
    categories: list[str]
    #: ``len(categories) + 1`` counts; the last is ``__other__``.
    counts: np.ndarray
    n: int
    missing: int
    type: str = field(default="categorical", init=False)

    def __post_init__(self) -> None:
        self._index = {c: i for i, c in enumerate(self.categories)}

    @property
    def slots(self) -> int:
        return len(self.categories) + 1

    def code(self, value: Any) -> int:
        """Category code; ``len(categories)`` for other/unseen, -1 for missing."""
        if value is None:
            return -1
        return self._index.get(str(value), len(self.categories))

    def codes(self, values: Iterable[Any]) -> np.ndarray:
        idx = self._index
        other = len(self.categories)
        return np.fromiter(
            (-1 if v is None else idx.get(v if isinstance(v, str) else str(v), other) for v in values),
            dtype=np.int32,
        )

    def fractions(self) -> np.ndarray:
        total = self.counts.sum()
        return self.counts / total if total else np.zeros_like(self.counts, dtype=float)

    def slot_labels(self) -> list[str]:
        return list(self.categories) + [OTHER]


FeatureProfile = NumericalProfile | CategoricalProfile


@dataclass
class ReferenceProfile:
    """Every monitored feature's frozen reference statistics."""

    features: dict[str, FeatureProfile]
    rows: int
    hash: str = ""
    #: Optional fitted estimators, JSON-ready, by name (performance
    #: estimation, multivariate drift: see modelmon.estimation.sections).
    sections: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.hash:
            self.hash = _content_hash(self._payload())

    # ------------------------------------------------------------- persistence
    def _payload(self) -> dict[str, Any]:
        feats: dict[str, Any] = {}
        for name, p in self.features.items():
            d = {k: v for k, v in asdict(p).items()}
            for k, v in list(d.items()):
                if isinstance(v, np.ndarray):
                    d[k] = v.tolist()
            feats[name] = d
        payload: dict[str, Any] = {"format": PROFILE_FORMAT, "rows": self.rows, "features": feats}
        if self.sections:
            payload["sections"] = self.sections
        return payload

    def set_section(self, name: str, content: dict[str, Any]) -> None:
        """Attach a fitted estimator; the content hash covers it."""
        self.sections[name] = content
        self.hash = _content_hash(self._payload())

    def to_json(self) -> str:
        payload = self._payload()
        payload["hash"] = self.hash
        return json.dumps(payload, separators=(",", ":"), sort_keys=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str) -> "ReferenceProfile":
        data = json.loads(text)
        if data.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a modelmon reference profile (format {data.get('format')!r})")
        feats: dict[str, FeatureProfile] = {}
        for name, d in data["features"].items():
            d = dict(d)
            ftype = d.pop("type")
            if ftype == "numerical":
                for k in ("edges", "counts", "sample"):
                    d[k] = np.asarray(d[k], dtype=np.float64 if k != "counts" else np.int64)
                feats[name] = NumericalProfile(**d)
            else:
                d["counts"] = np.asarray(d["counts"], dtype=np.int64)
                feats[name] = CategoricalProfile(**d)
        prof = cls(features=feats, rows=int(data["rows"]), sections=dict(data.get("sections") or {}))
        if data.get("hash") and data["hash"] != prof.hash:
            raise ValueError("profile content does not match its hash (file edited or corrupted)")
        return prof

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceProfile":
        return cls.from_json(Path(path).read_text(encoding="utf-8"))


def _content_hash(payload: Mapping[str, Any]) -> str:
    blob = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- build


def to_float_array(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """Numerical column as float64 with NaN for missing or unparsable values."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiub":
        return values.astype(np.float64, copy=False)
    try:
        # Fast path: numbers, numeric strings and None (numpy parses strings).
        fast = np.array([math.nan if v is None else v for v in values], dtype=np.float64)
        if fast.ndim == 1:
            return fast
    except (TypeError, ValueError):
        pass
    out = np.empty(len(values), dtype=np.float64)
    for i, v in enumerate(values):
        try:
            out[i] = float(v) if v is not None and v != "" else math.nan
        except (TypeError, ValueError):
            out[i] = math.nan
    return out


def build_numerical(name: str, values: Sequence[Any] | np.ndarray, bins: int = 10, sample_size: int = 10_000) -> NumericalProfile:
    x = to_float_array(values)
    finite = x[np.isfinite(x)]
    missing = int(len(x) - len(finite))
    if len(finite) == 0:
        raise ValueError(f"feature {name!r}: no numerical values in the reference data")
    s = np.sort(finite)
    edges = np.unique(np.quantile(s, np.linspace(0.0, 1.0, bins + 1)))
    if len(edges) == 1:
        edges = np.array([edges[0], edges[0]])
    prof = NumericalProfile(
        name=name,
        edges=edges,
        counts=np.zeros(len(edges) + 1, dtype=np.int64),
        mean=float(np.mean(s)),
        std=float(np.std(s)),
        min=float(s[0]),
        max=float(s[-1]),
        n=int(len(s)),
        missing=missing,
        sample=_order_statistics(s, sample_size),
    )
    idx = prof.bin_index(s)
    prof.counts = np.bincount(idx, minlength=prof.slots).astype(np.int64)
    return prof


def _order_statistics(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced order statistics: a deterministic sample that
    keeps the empirical distribution's shape (the full data when it is small)."""
    n = len(sorted_values)
    if n <= k:
        return sorted_values.copy()
    pos = np.round(np.linspace(0, n - 1, k)).astype(np.int64)
    return sorted_values[pos]


def build_categorical(
    name: str, values: Sequence[Any], categories: Sequence[str] | None = None, top_k: int = 20
) -> CategoricalProfile:
    """Category frequencies: the configured ``categories``, or the ``top_k``
    most frequent (ties broken by name), the rest counted as ``__other__``.
    Values are compared as strings; None, "" and NaN are missing."""
    freq = Counter(None if (v is None or v == "" or (isinstance(v, float) and math.isnan(v))) else str(v) for v in values)
    missing = freq.pop(None, 0)
    n = sum(freq.values())
    if not n:
        raise ValueError(f"feature {name!r}: no values in the reference data")
    if not categories:
        ranked = sorted(freq.items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        categories = sorted(c for c, _ in ranked)
    kept = [int(freq.get(str(c), 0)) for c in categories]
    counts = np.array(kept + [n - sum(kept)], dtype=np.int64)
    return CategoricalProfile(name=name, categories=list(categories), counts=counts, n=n, missing=missing)


def build_profile(
    columns: Mapping[str, Sequence[Any] | np.ndarray],
    features: Sequence[Any],
    bins: int = 10,
    sample_size: int = 10_000,
    top_k: int = 20,
) -> ReferenceProfile:
    """Build a profile for ``features`` (objects with ``name``, ``type`` and
    ``categories``, e.g. :class:`~modelmon.config.FeatureConfig`) from columns."""
    feats: dict[str, FeatureProfile] = {}
    rows = 0
    for f in features:
        if f.name not in columns:
            raise ValueError(f"feature {f.name!r} is not a column of the reference data")
        col = columns[f.name]
        rows = max(rows, len(col))
        if f.type == "numerical":
            feats[f.name] = build_numerical(f.name, col, bins=bins, sample_size=sample_size)
        else:
            feats[f.name] = build_categorical(f.name, col, categories=getattr(f, "categories", None), top_k=top_k)
    return ReferenceProfile(features=feats, rows=rows)
