"""The one event model every source produces.

A source (the simulator, the ingestion API, the reverse proxy) turns whatever it
sees into :class:`Event` objects and hands them to the
:class:`~modelmon.pipeline.Pipeline`.  Nothing downstream knows which source an
event came from except through ``Event.source``, which only feeds the
``source`` label of the exporter's own health counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

#: Values a feature may take once validated: a float for numerical features,
#: a string for categorical ones, ``None`` when the value is missing.
FeatureValue = float | str | None


@dataclass(slots=True)
class Event:
    """One prediction served by a model.

    ``error`` is ``None`` for a successful prediction, or a short reason string
    (already mapped onto the model's bounded set of error reasons by the
    source).  ``label`` is the ground truth when it is known at prediction time
    (the simulator knows it); real labels usually arrive later and are joined
    by ``id`` (see :mod:`modelmon.labels`).
    """

    model: str
    timestamp: float
    version: str = ""
    id: str | None = None
    latency_seconds: float | None = None
    error: str | None = None
    features: Mapping[str, FeatureValue] = field(default_factory=dict)
    prediction: Any = None
    score: float | None = None
    label: Any = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    source: str = "unknown"
    #: Per-feature attributions computed by the model service (SHAP values...), by feature name.
    attributions: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class EventBatch:
    """Many events of one model in columnar form.

    Sources that produce many events at once (the simulator, the ingestion
    API) build this directly so the pipeline can work on numpy arrays instead
    of one Python object per event; :meth:`from_events` converts the row form.
    Missing values: ``None`` in lists, NaN in float arrays.
    """

    model: str
    timestamps: list[float]
    versions: list[str]
    ids: list[str | None]
    latency_seconds: list[float | None]
    errors: list[str | None]
    features: dict[str, list[FeatureValue]]
    predictions: list[Any]
    scores: list[float | None]
    labels: list[Any]
    attributes: dict[str, list[str | None]]
    source: str = "unknown"
    #: Per-feature attributions by feature name (float arrays or lists, NaN/None = none sent).
    attributions: dict[str, Any] = field(default_factory=dict)
    #: Filled by the model's monitor as it accounts the batch (read by listeners such as the
    #: inference log): each event's outlier score and whether it is outlying; None when not scored.
    outlier_scores: Any = None
    outlying: Any = None

    def __len__(self) -> int:
        return len(self.timestamps)

    @classmethod
    def from_events(cls, events: list[Event]) -> "EventBatch":
        if not events:
            raise ValueError("empty batch")
        model = events[0].model
        feature_names: dict[str, None] = {}
        attr_names: dict[str, None] = {}
        contrib_names: dict[str, None] = {}
        for e in events:
            if e.model != model:
                raise ValueError("a batch holds events of one model")
            feature_names.update(dict.fromkeys(e.features))
            attr_names.update(dict.fromkeys(e.attributes))
            contrib_names.update(dict.fromkeys(e.attributions))
        return cls(
            model=model,
            timestamps=[e.timestamp for e in events],
            versions=[e.version for e in events],
            ids=[e.id for e in events],
            latency_seconds=[e.latency_seconds for e in events],
            errors=[e.error for e in events],
            features={f: [e.features.get(f) for e in events] for f in feature_names},
            predictions=[e.prediction for e in events],
            scores=[e.score for e in events],
            labels=[e.label for e in events],
            attributes={a: [e.attributes.get(a) for e in events] for a in attr_names},
            source=events[0].source,
            attributions={a: [e.attributions.get(a) for e in events] for a in contrib_names},
        )
