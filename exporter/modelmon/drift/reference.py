"""Frozen reference profiles.

A profile is built once from the reference (training-time) data and never
rebinned: every window is compared against the same bin edges, the same
category list and the same sorted sample.  That is what makes scores
comparable across windows, exporter replicas and the batch command, and what
lets Prometheus sum bin counters from several replicas (fleet-wide PSI).

Numerical bins.  ``edges`` are increasing; a value ``x`` falls in slot

- ``0`` when ``x < min`` (below the reference range),
- ``1 + searchsorted(edges[1:-1], x, side="right")`` inside the range,
- ``len(edges)`` when ``x > max`` (above the reference range),

so there are ``len(edges) + 1`` slots and the reference itself never has
counts in the two out-of-range slots.  How the edges are chosen:

- *continuous* features (more than ``discrete_max`` distinct reference
  values, default: as many as ``bins``): the reference quantiles
  ``q0 = min .. qB = max``, duplicates from ties removed, and a value on
  which several quantiles fall (a heavy tie) alone in its slot
  (:func:`_quantile_edges`);
- *discrete* features (at most ``discrete_max`` distinct values, e.g. a 0/1
  flag or a small count): one slot per distinct reference value, with edges
  half-way between consecutive values (``[v0, (v0+v1)/2, ..., vk]``).  A
  value between two reference values counts in the nearer one's slot.
  Quantile edges would collapse onto the values and put them all in one
  closed bin, which makes PSI and Jensen-Shannon blind to a 0/1 feature
  going from 10 % to 60 % ones.

Scale.  ``std`` is the population standard deviation, computed without
overflow (rescaled by the largest magnitude when the direct sum overflows).
``scale`` is what scale-normalised methods (Wasserstein, mean/std) divide
by: the standard deviation of the reference after clipping it to the fences
``[Q1 - 20 IQR, Q3 + 20 IQR]`` (:data:`FENCE_IQRS`; about 27 standard
deviations from the median for normal data).  Data with ordinary tails
(normal, lognormal with sigma 1) have nothing or a few in 10,000 values
beyond them, so ``scale`` is their std to within a percent; one value of
1e300 in the reference no longer makes every shift look like zero.  When
``IQR == 0`` (more than half the values tied) the plain ``std`` is used, and
``scale == 0`` only for a constant reference (methods' docs say what they do
then).

Persistence.  A profile file is JSON with ``format``, ``schema_version``
(:data:`SCHEMA_VERSION`), ``rows``, ``features``, optional ``sections`` and
``hash``.  Loading validates everything a scorer relies on (keys, types,
shapes, sortedness, counts that add up) and verifies the hash, raising
:class:`ProfileError` naming the file and the field, so a corrupt profile is
refused at start-up instead of failing a scrape later.

Extensions.  ``sections`` holds further per-profile data (e.g. a
multivariate model of the reference) as JSON values keyed by section name.
They are saved, loaded and covered by the hash.  A module that owns a
section attaches it with :meth:`ReferenceProfile.set_section` and registers
a validator with :func:`register_section`, which loading calls with the
section's value; unknown sections are kept as they are.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ..booleans import boolean_aliases
from ..datasets import (
    CategoricalColumn,
    EmptyColumn,
    NumericColumn,
    Table,
    categorical_from_values,
)
from ..labelsafe import label_problem

OTHER = "__other__"
PROFILE_FORMAT = "modelmon-reference-profile"
#: Version 2: discrete bins, ``scale``, ``discrete``, ``sections``, hash over array bytes.
SCHEMA_VERSION = 2

#: Section validators: name -> callable(value, where) raising ProfileError.
_SECTIONS: dict[str, Callable[[Any, str], None]] = {}


class ProfileError(ValueError):
    """A profile file that cannot be used; the message names the file and field."""


def register_section(name: str, validate: Callable[[Any, str], None]) -> None:
    """Validate section ``name`` on load with ``validate(value, where)``;
    ``where`` is ``"FILE: sections['NAME']"`` for messages."""
    _SECTIONS[name] = validate


def unregister_section(name: str) -> None:
    """Stop validating section ``name`` (tests, plugins being unloaded)."""
    _SECTIONS.pop(name, None)


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
    #: Outlier-resistant standard deviation (module docs); 0 only when constant.
    scale: float = 0.0
    #: Bins are the distinct reference values (module docs).
    discrete: bool = False
    type: str = field(default="numerical", init=False)

    @property
    def slots(self) -> int:
        return len(self.edges) + 1

    @property
    def constant(self) -> bool:
        return self.min == self.max

    def bin_index(self, x: np.ndarray) -> np.ndarray:
        """Slot of each value (see module docs); NaN gets -1."""
        x = np.asarray(x, dtype=np.float64)
        inner = self.edges[1:-1]
        if len(inner) <= 32:
            # A few edges: one comparison pass per edge is several times
            # faster than a binary search per value.
            idx = np.ones(len(x), dtype=np.int32)
            for e in inner:
                idx += x >= e
        else:
            idx = np.searchsorted(inner, x, side="right").astype(np.int32) + 1
        idx[x < self.min] = 0
        idx[x > self.max] = len(self.edges)
        idx[np.isnan(x)] = -1
        return idx

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



class BinSet:
    """:meth:`NumericalProfile.bin_index` of several features at once.

    Features with at most 32 inner edges (the usual case) are binned together
    in one comparison pass against a padded edge matrix; the others use a
    binary search each.  ``bin_matrix(x)`` equals stacking ``bin_index`` of
    every row of ``x``.
    """

    def __init__(self, profiles: Sequence[NumericalProfile]):
        self.profiles = list(profiles)
        self.small = [i for i, p in enumerate(self.profiles) if len(p.edges[1:-1]) <= 32]
        self.large = [i for i, p in enumerate(self.profiles) if len(p.edges[1:-1]) > 32]
        width = max((len(self.profiles[i].edges[1:-1]) for i in self.small), default=0)
        # Padding with +inf never counts: values are compared as x >= edge and NaN / inf are handled apart.
        self.edges = np.full((len(self.small), width), np.inf)
        for row, i in enumerate(self.small):
            inner = self.profiles[i].edges[1:-1]
            self.edges[row, : len(inner)] = inner
        self.mins = np.array([p.min for p in self.profiles], dtype=np.float64)[:, None]
        self.maxs = np.array([p.max for p in self.profiles], dtype=np.float64)[:, None]
        self.tops = np.array([len(p.edges) for p in self.profiles], dtype=np.int32)[:, None]

    def bin_matrix(self, x: np.ndarray) -> np.ndarray:
        """Slots of ``x`` (features x events, one row per profile); NaN gets -1."""
        x = np.asarray(x, dtype=np.float64)
        idx = np.ones(x.shape, dtype=np.int32)
        if self.small:
            xs = x[self.small] if len(self.small) < len(self.profiles) else x
            counts = np.ones(xs.shape, dtype=np.int32)
            for j in range(self.edges.shape[1]):
                counts += xs >= self.edges[:, j : j + 1]
            idx[self.small] = counts
        for i in self.large:
            idx[i] = np.searchsorted(self.profiles[i].edges[1:-1], x[i], side="right") + 1
        with np.errstate(invalid="ignore"):
            idx = np.where(x < self.mins, 0, idx)
            idx = np.where(x > self.maxs, self.tops, idx)
        idx[np.isnan(x)] = -1
        return idx

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
        # Categories that are booleans match a live value in any boolean spelling (modelmon.booleans).
        self._index = {**boolean_aliases(self.categories), **{c: i for i, c in enumerate(self.categories)}}

    @property
    def slots(self) -> int:
        return len(self.categories) + 1

    def code(self, value: Any) -> int:
        """Category code; ``len(categories)`` for other/unseen, -1 for missing."""
        if value is None:
            return -1
        return self._index.get(str(value), len(self.categories))

    def codes(self, values: Iterable[Any]) -> np.ndarray:
        """Codes of in-memory values (event batches)."""
        idx = self._index
        other = len(self.categories)
        return np.fromiter(
            (-1 if v is None else idx.get(v if isinstance(v, str) else str(v), other) for v in values),
            dtype=np.int32,
        )

    def column_codes(self, col: CategoricalColumn) -> np.ndarray:
        """Codes of a dictionary-encoded column: one lookup per distinct value,
        then a gather (no per-row Python)."""
        other = len(self.categories)
        lookup = np.array([self._index.get(d, other) for d in col.dictionary] + [-1], dtype=np.int32)
        return lookup[col.codes]

    def fractions(self) -> np.ndarray:
        total = self.counts.sum()
        return self.counts / total if total else np.zeros_like(self.counts, dtype=float)

    def slot_labels(self) -> list[str]:
        return list(self.categories) + [OTHER]


FeatureProfile = NumericalProfile | CategoricalProfile

_NUM_SCALARS = ("mean", "std", "scale", "min", "max")
#: Clipping fences for ``scale``, in IQRs beyond the quartiles (module docs).
FENCE_IQRS = 20.0


class ReferenceProfile:
    """Every monitored feature's frozen reference statistics."""

    def __init__(self, features: dict[str, FeatureProfile], rows: int, sections: dict[str, Any] | None = None):
        self.features = features
        self.rows = int(rows)
        self.sections: dict[str, Any] = dict(sections or {})

    def set_section(self, name: str, content: Any) -> None:
        """Attach section ``name`` (a JSON value); the hash covers it."""
        self.sections[name] = content
        self.__dict__.pop("hash", None)  # recomputed on next access

    @cached_property
    def hash(self) -> str:
        """16 hex digits of SHA-256 over the scalars (canonical JSON) and the
        arrays' bytes (little-endian float64 / int64): cheap for large
        samples, and equal for a profile and its saved copy."""
        h = hashlib.sha256()
        h.update(json.dumps(self._header(), separators=(",", ":"), sort_keys=True).encode())
        for name in sorted(self.features):
            p = self.features[name]
            arrays = (p.edges, p.counts, p.sample) if isinstance(p, NumericalProfile) else (p.counts,)
            for a in arrays:
                h.update(np.ascontiguousarray(a, dtype="<i8" if a.dtype.kind in "iu" else "<f8").tobytes())
        return h.hexdigest()[:16]

    def _header(self) -> dict[str, Any]:
        feats: dict[str, Any] = {}
        for name, p in self.features.items():
            if isinstance(p, NumericalProfile):
                feats[name] = {"type": p.type, "n": p.n, "missing": p.missing, "discrete": p.discrete,
                               **{k: float(getattr(p, k)) for k in _NUM_SCALARS}}
            else:
                feats[name] = {"type": p.type, "n": p.n, "missing": p.missing, "categories": list(p.categories)}
        return {"format": PROFILE_FORMAT, "schema_version": SCHEMA_VERSION, "rows": self.rows,
                "features": feats, "sections": self.sections}

    # ------------------------------------------------------------- persistence
    def to_json(self) -> str:
        doc = self._header()
        for name, p in self.features.items():
            d = doc["features"][name]
            d["name"] = p.name
            d["counts"] = p.counts.tolist()
            if isinstance(p, NumericalProfile):
                d["edges"] = p.edges.tolist()
                d["sample"] = p.sample.tolist()
        doc["hash"] = self.hash
        return json.dumps(doc, separators=(",", ":"), sort_keys=True, allow_nan=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str, source: str = "profile") -> ReferenceProfile:
        """Parse and validate a profile document (module docs); ``source``
        names it in error messages."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ProfileError(f"{source}: not JSON: {exc.msg} (line {exc.lineno})") from None
        if not isinstance(data, dict) or not str(data.get("format", "")).startswith(PROFILE_FORMAT):
            fmt = data.get("format") if isinstance(data, dict) else None
            raise ProfileError(f"{source}: not a modelmon reference profile (format {fmt!r})")
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ProfileError(f"{source}: schema_version {version!r} is not supported (this modelmon reads "
                               f"{SCHEMA_VERSION}); rebuild it with 'modelmon reference build'")
        rows = _get(data, "rows", int, source)
        feats_doc = _get(data, "features", dict, source)
        if not feats_doc:
            raise ProfileError(f"{source}: features: empty")
        sections = data.get("sections", {})
        if not isinstance(sections, dict):
            raise ProfileError(f"{source}: sections: expected an object")
        feats: dict[str, FeatureProfile] = {}
        for name, d in feats_doc.items():
            where = f"{source}: features[{name!r}]"
            if not isinstance(d, dict):
                raise ProfileError(f"{where}: expected an object")
            ftype = d.get("type")
            if ftype == "numerical":
                feats[name] = _load_numerical(name, d, where)
            elif ftype == "categorical":
                feats[name] = _load_categorical(name, d, where)
            else:
                raise ProfileError(f"{where}.type: {ftype!r} is not numerical or categorical")
            if feats[name].n > rows:
                raise ProfileError(f"{where}.n: {feats[name].n} values but the profile has {rows} rows")
        for sname, value in sections.items():
            check = _SECTIONS.get(sname)
            if check is not None:
                check(value, f"{source}: sections[{sname!r}]")
        prof = cls(features=feats, rows=rows, sections=sections)
        stored = data.get("hash")
        if not isinstance(stored, str) or not stored:
            raise ProfileError(f"{source}: hash: missing (profiles are written with their hash)")
        if stored != prof.hash:
            raise ProfileError(f"{source}: hash: content does not match its hash {stored} (file edited or corrupted; "
                               f"rebuild it with 'modelmon reference build')")
        return prof

    @classmethod
    def load(cls, path: str | Path) -> ReferenceProfile:
        return cls.from_json(Path(path).read_text(encoding="utf-8"), source=str(path))


def _get(d: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in d:
        raise ProfileError(f"{where}.{key}: missing" if "[" in where else f"{where}: {key}: missing")
    v = d[key]
    ok = isinstance(v, kind) and not (kind in (int, float) and isinstance(v, bool))
    if kind is float:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if not ok:
        label = {int: "an integer", float: "a finite number", dict: "an object", list: "a list", str: "a string",
                 bool: "true or false"}[kind]
        raise ProfileError(f"{where}.{key}: expected {label}, got {v!r:.40}" if "[" in where
                           else f"{where}: {key}: expected {label}, got {v!r:.40}")
    if kind is int and v < 0:
        raise ProfileError(f"{where}.{key}: must be >= 0, got {v}")
    return v


def _array(d: Mapping[str, Any], key: str, where: str, integer: bool = False) -> np.ndarray:
    v = _get(d, key, list, where)
    try:
        a = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}.{key}: expected a list of numbers") from None
    if a.ndim != 1 or not np.isfinite(a).all():
        raise ProfileError(f"{where}.{key}: expected a flat list of finite numbers")
    if integer:
        if (a < 0).any() or (a != np.round(a)).any():
            raise ProfileError(f"{where}.{key}: expected non-negative integers")
        return a.astype(np.int64)
    return a


def _load_numerical(name: str, d: Mapping[str, Any], where: str) -> NumericalProfile:
    edges = _array(d, "edges", where)
    counts = _array(d, "counts", where, integer=True)
    sample = _array(d, "sample", where)
    n, missing = _get(d, "n", int, where), _get(d, "missing", int, where)
    scalars = {k: float(_get(d, k, float, where)) for k in _NUM_SCALARS}
    discrete = _get(d, "discrete", bool, where)
    if len(edges) < 2 or (np.diff(edges) < 0).any():
        raise ProfileError(f"{where}.edges: expected at least 2 non-decreasing values, got {len(edges)}")
    if len(counts) != len(edges) + 1:
        raise ProfileError(f"{where}.counts: {len(counts)} values, expected {len(edges) + 1} (len(edges) + 1)")
    if int(counts.sum()) != n or n == 0:
        raise ProfileError(f"{where}.counts: add up to {int(counts.sum())}, expected n = {n} (> 0)")
    if counts[0] or counts[-1]:
        raise ProfileError(f"{where}.counts: the out-of-range slots of a reference must be 0")
    if len(sample) == 0 or (np.diff(sample) < 0).any():
        raise ProfileError(f"{where}.sample: expected a non-empty sorted list")
    if scalars["min"] != edges[0] or scalars["max"] != edges[-1] or sample[0] < edges[0] or sample[-1] > edges[-1]:
        raise ProfileError(f"{where}: min/max, edges and sample disagree")
    if scalars["std"] < 0 or scalars["scale"] < 0:
        raise ProfileError(f"{where}.std/scale: must be >= 0")
    return NumericalProfile(name=name, edges=edges, counts=counts, n=n, missing=missing, sample=sample,
                            discrete=discrete, **scalars)


def _load_categorical(name: str, d: Mapping[str, Any], where: str) -> CategoricalProfile:
    cats = _get(d, "categories", list, where)
    if not all(isinstance(c, str) for c in cats) or len(set(cats)) != len(cats):
        raise ProfileError(f"{where}.categories: expected distinct strings")
    for c in cats:
        problem = label_problem(c)
        if problem is not None:
            raise ProfileError(f"{where}.categories: {c[:40]!r}... is {problem} (categories become label values)")
    counts = _array(d, "counts", where, integer=True)
    n, missing = _get(d, "n", int, where), _get(d, "missing", int, where)
    if len(counts) != len(cats) + 1:
        raise ProfileError(f"{where}.counts: {len(counts)} values, expected {len(cats) + 1} (categories + __other__)")
    if int(counts.sum()) != n or n == 0:
        raise ProfileError(f"{where}.counts: add up to {int(counts.sum())}, expected n = {n} (> 0)")
    return CategoricalProfile(name=name, categories=list(cats), counts=counts, n=n, missing=missing)


# --------------------------------------------------------------------------- build


def to_float_array(values: Sequence[Any] | np.ndarray | NumericColumn) -> np.ndarray:
    """Numerical in-memory values (event batches) as float64 with NaN for
    missing or unparsable values.  Files go through :mod:`modelmon.datasets`."""
    if isinstance(values, NumericColumn):
        return values.values
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


def safe_moments(s: np.ndarray) -> tuple[float, float]:
    """Mean and population std of finite values without overflow: when the
    direct computation overflows, it is redone on values divided by the
    largest magnitude."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean, std = float(np.mean(s)), float(np.std(s))
        if math.isfinite(mean) and math.isfinite(std):
            return mean, std
        m = float(np.max(np.abs(s)))
        y = s / m
        return float(np.mean(y)) * m, float(np.std(y)) * m


def sorted_quantiles(s: np.ndarray, q: np.ndarray) -> np.ndarray:
    """``np.quantile(s, q)`` (linear interpolation) for an already sorted ``s``."""
    pos = np.asarray(q, dtype=np.float64) * (len(s) - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, len(s) - 1)
    t = pos - lo
    a, b = s[lo], s[hi]
    with np.errstate(over="ignore", invalid="ignore"):
        out = a + (b - a) * t
    bad = ~np.isfinite(out)
    out[bad] = (a * (1 - t) + b * t)[bad]  # b - a overflowed: interpolate the other way
    return np.where(t == 0, a, out)


def robust_scale(s: np.ndarray, std: float) -> float:
    """The std of sorted values ``s`` clipped to the :data:`FENCE_IQRS` fences (module docs)."""
    q1, q3 = sorted_quantiles(s, np.array([0.25, 0.75]))
    iqr = float(q3 - q1)
    if not math.isfinite(iqr) or iqr <= 0:
        return std
    lo, hi = q1 - FENCE_IQRS * iqr, q3 + FENCE_IQRS * iqr
    if s[0] >= lo and s[-1] <= hi:
        return std
    return safe_moments(np.clip(s, lo, hi))[1]


def build_numerical(name: str, values: Sequence[Any] | np.ndarray | NumericColumn, bins: int = 10,
                    sample_size: int = 10_000, discrete_max: int | None = None) -> NumericalProfile:
    """Profile of one numerical column (module docs); non-finite values are missing."""
    x = to_float_array(values)
    s = x[np.isfinite(x)]
    missing = int(len(x) - len(s))
    if len(s) == 0:
        raise ValueError(f"feature {name!r}: no numerical values in the reference data")
    s.sort()
    n = len(s)
    differs = s[1:] != s[:-1]
    limit = bins if discrete_max is None else discrete_max
    discrete = int(np.count_nonzero(differs)) + 1 <= limit
    if discrete:
        v = s[np.concatenate(([0], np.flatnonzero(differs) + 1))]
        edges = np.concatenate(([v[0]], v[:-1] / 2 + v[1:] / 2, [v[-1]])) if len(v) > 1 else np.array([v[0], v[0]])
    else:
        edges = _quantile_edges(s, bins)
    counts = np.zeros(len(edges) + 1, dtype=np.int64)
    cum = np.searchsorted(s, edges[1:-1], side="left")
    counts[1:-1] = np.diff(np.concatenate(([0], cum, [n])))
    mean, std = safe_moments(s)
    return NumericalProfile(
        name=name, edges=edges, counts=counts, mean=mean, std=std, scale=robust_scale(s, std),
        min=float(s[0]), max=float(s[-1]), n=n, missing=missing,
        sample=_order_statistics(s, sample_size), discrete=bool(discrete),
    )


def _quantile_edges(s: np.ndarray, bins: int) -> np.ndarray:
    """Quantile edges of the sorted values ``s``, each heavy tie (a value holding at least one
    bin's share, so that several quantiles fall on it) in a slot of its own.

    Deduplicated quantiles alone would put such a value in one slot with the values up to the
    next edge: mass moving between the value and its neighbours (a cap hit less often, zeros
    turning into small amounts) would change no bin count, and PSI or Jensen-Shannon would
    not see it.  An interior tie ``v`` gets the slot ``[v, nextafter(v))``, a tie at the
    maximum the closed top slot ``[max, max]`` (a value equal to the maximum counts there).
    """
    q = sorted_quantiles(s, np.linspace(0.0, 1.0, bins + 1))
    ties = np.unique(q[1:][q[1:] == q[:-1]])
    top = float(s[-1])
    edges = np.unique(np.concatenate([q, np.nextafter(ties[ties < top], np.inf)]))
    if ties.size and ties[-1] == top:  # a constant reference too: [v, v]
        edges = np.append(edges, top)  # [.., max, max]: the maximum alone in the last slot
    return edges


def _order_statistics(sorted_values: np.ndarray, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced order statistics: a deterministic sample that
    keeps the empirical distribution's shape (the full data when it is small)."""
    n = len(sorted_values)
    if n <= k:
        return sorted_values
    pos = np.round(np.linspace(0, n - 1, k)).astype(np.int64)
    return sorted_values[pos]


def build_categorical(
    name: str, values: Sequence[Any] | CategoricalColumn, categories: Sequence[str] | None = None, top_k: int = 20
) -> CategoricalProfile:
    """Category frequencies: the configured ``categories``, or the ``top_k``
    most frequent (ties broken by name), the rest counted as ``__other__``.
    Values are compared as strings; None, NaN and the missing spellings of
    :data:`modelmon.datasets.NULL_SPELLINGS` are missing."""
    col = values if isinstance(values, CategoricalColumn) else categorical_from_values(values)
    per_value = col.counts()
    missing = int(len(col) - per_value.sum())
    n = int(per_value.sum())
    if not n:
        raise ValueError(f"feature {name!r}: no values in the reference data")
    freq = dict(zip(col.dictionary, per_value.tolist(), strict=True))  # one entry per distinct value
    if not categories:
        ranked = sorted(((c, k) for c, k in freq.items() if k), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        categories = sorted(c for c, _ in ranked)
    for c in categories:  # each kept category is the value of a ``bin`` label on /metrics
        problem = label_problem(str(c))
        if problem is not None:
            raise ValueError(f"feature {name!r}: category {str(c)[:40]!r}... is {problem} "
                             "(kept categories become label values; shorten them or use top_k/categories)")
    kept = [int(freq.get(str(c), 0)) for c in categories]
    counts = np.array(kept + [n - sum(kept)], dtype=np.int64)
    return CategoricalProfile(name=name, categories=[str(c) for c in categories], counts=counts, n=n, missing=missing)


def build_profile(
    columns: Mapping[str, Any] | Table,
    features: Sequence[Any],
    bins: int = 10,
    sample_size: int = 10_000,
    top_k: int = 20,
    discrete_max: int | None = None,
) -> ReferenceProfile:
    """Build a profile for ``features`` (objects with ``name``, ``type`` and
    ``categories``, e.g. :class:`~modelmon.config.FeatureConfig`) from columns
    (a :class:`~modelmon.datasets.Table`, numpy arrays or lists)."""
    cols: Mapping[str, Any] = columns.columns if isinstance(columns, Table) else columns
    feats: dict[str, FeatureProfile] = {}
    rows = columns.rows if isinstance(columns, Table) else 0
    for f in features:
        if f.name not in cols:
            raise ValueError(f"feature {f.name!r} is not a column of the reference data")
        col = cols[f.name]
        rows = max(rows, len(col))
        if isinstance(col, EmptyColumn):  # ValueError, as every bad-data case here (callers catch one type)
            raise ValueError(f"feature {f.name!r}: the reference data column has {col.problem}")  # noqa: TRY004
        if f.type == "numerical":
            if isinstance(col, CategoricalColumn):
                raise ValueError(f"feature {f.name!r}: a text column cannot be a numerical feature")
            feats[f.name] = build_numerical(f.name, col, bins=bins, sample_size=sample_size, discrete_max=discrete_max)
        else:
            if isinstance(col, NumericColumn):
                col = categorical_from_values(col.values)
            feats[f.name] = build_categorical(f.name, col, categories=getattr(f, "categories", None), top_k=top_k)
    return ReferenceProfile(features=feats, rows=rows)
