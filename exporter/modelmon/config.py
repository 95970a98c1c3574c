"""YAML configuration loaded into dataclasses and validated at start.

Every error names the file and the dotted path of the offending field, e.g.
``modelmon.yml: models[0].features[2].type: must be one of numerical,
categorical``, because a user fixing a config wants to jump to the line, not to
read a traceback.

The loader is schema-driven: it reads the dataclass field types, so adding a
setting is adding a field (with a default and, where needed, ``choices`` or a
``check`` in the field metadata).  Unknown keys are errors, so typos do not
silently fall back to defaults.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .drift.catalog import METHOD_FEATURE_TYPES, METHOD_NAMES
from .labelsafe import label_problem
from .protocols import Mapping
from .protocols.selectors import parse_selector

FEATURE_TYPES = ("numerical", "categorical")
TASKS = ("classification", "regression")
#: Upper bound on one window's ``max_events``: windows are allocated in full at
#: start-up (about 70 bytes per event per model and window, plus 10 per
#: numerical feature), so a typo such as 100000000000000 must fail here
#: rather than as a 700 TiB allocation.
MAX_WINDOW_EVENTS = 10_000_000
#: Body formats the proxy understands (``--proxy.protocol``).
PROTOCOLS = ("json", "kserve-v1", "oip-v2")
#: A ``columns`` entry that skips a position.
SKIP_COLUMN = "-"


class ConfigError(ValueError):
    """A configuration problem, with the file and field it concerns."""

    def __init__(self, message: str, *, file: str | None = None, field_path: str | None = None):
        self.file = file
        self.field_path = field_path
        self.reason = message
        parts = [p for p in (file, field_path) if p]
        super().__init__(": ".join(parts + [message]))


_DURATION_RE = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")


def parse_duration(value: Any) -> float:
    """Parse ``"5m"``, ``"30s"``, ``"1h"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if isinstance(value, str) and re.fullmatch(r"\d+(\.\d+)?", value.strip()):
        value = float(value)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_RE.match(value.strip())):
        seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
    else:
        raise ValueError("must be a duration such as 30s, 5m or 1h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("must be a non-negative duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest Prometheus-style spelling of a duration (``300`` -> ``5m``)."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds * 1000)}ms"


def _choices(*values: str) -> dict[str, Any]:
    return {"choices": values}


def _check(fn: Any, message: str) -> dict[str, Any]:
    return {"check": (fn, message)}


def _positive(x: Any) -> bool:
    return x > 0


def _ratio(x: Any) -> bool:
    return 0.0 <= x <= 1.0


def _label_value(x: Any) -> bool:
    return bool(_NAME_RE.match(x))


# --------------------------------------------------------------------------- schema


@dataclass
class FeatureConfig:
    """One model input monitored for drift and data quality."""

    name: str = field(metadata=_check(_label_value, "must be a name of letters, digits, _ . -"))
    type: str = field(default="numerical", metadata=_choices(*FEATURE_TYPES))
    #: Categorical features only: the bounded set of categories exported as
    #: label values.  Empty means "the reference's top-K categories".  Values
    #: outside the set are counted as ``__other__``, never as new label values.
    categories: list[str] = field(default_factory=list)
    #: Drift methods for this feature; empty means the model's ``drift.methods``
    #: or, failing that, the default rule (see docs/drift.md).
    methods: list[str] = field(default_factory=list)
    #: Per-feature threshold overriding the method's default.
    threshold: float | None = None
    #: Log the raw value in structured inference logs (privacy: off by default).
    log_value: bool = False


@dataclass
class WindowConfig:
    """A sliding time window over recent events.

    Memory is bounded by ``max_events``: when more events than that arrive
    within ``duration``, the window keeps a uniform sample of ``max_events``
    (modelmon.windows).
    """

    name: str = field(default="", metadata=_check(lambda s: s == "" or bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", s)),
                                                  "must be a short label such as 5m"))
    duration_seconds: float = field(default=300.0, metadata=_check(_positive, "must be > 0"))
    max_events: int = field(default=100_000, metadata=_check(
        lambda x: 0 < x <= MAX_WINDOW_EVENTS,
        f"must be between 1 and {MAX_WINDOW_EVENTS} (windows are allocated in full at start-up)"))

    def __post_init__(self) -> None:
        if not self.name:
            self.name = format_duration(self.duration_seconds)


@dataclass
class ThresholdsConfig:
    """Alert thresholds, exported as gauges so alert rules compare against them.

    Defaults: 200 ms p95 response time, 500 req/s, accuracy 0.85, 5 % errors,
    drift score 0.1, release gate accuracy 0.90 (the limits docs/runbook.md
    and the alert rules are written for).
    """

    latency_p95_seconds: float = field(default=0.2, metadata=_check(_positive, "must be > 0"))
    throughput_min_requests_per_second: float = field(default=500.0, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    accuracy_min: float = field(default=0.85, metadata=_check(_ratio, "must be between 0 and 1"))
    error_ratio_max: float = field(default=0.05, metadata=_check(_ratio, "must be between 0 and 1"))
    drift_score: float = field(default=0.1, metadata=_check(_positive, "must be > 0"))
    dataset_drift_share: float = field(default=0.5, metadata=_check(_ratio, "must be between 0 and 1"))
    min_labelled_events: int = field(default=100, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    label_coverage_min: float = field(default=0.5, metadata=_check(_ratio, "must be between 0 and 1"))
    missing_ratio_max: float = field(default=0.05, metadata=_check(_ratio, "must be between 0 and 1"))
    out_of_range_ratio_max: float = field(default=0.05, metadata=_check(_ratio, "must be between 0 and 1"))
    new_category_ratio_max: float = field(default=0.05, metadata=_check(_ratio, "must be between 0 and 1"))
    release_accuracy_min: float = field(default=0.90, metadata=_check(_ratio, "must be between 0 and 1"))


@dataclass
class DriftConfig:
    """How drift is computed for a model."""

    #: Methods for every feature of the matching type; empty = default rule.
    methods: list[str] = field(default_factory=list)
    #: Reference-quantile bins for PSI / Jensen-Shannon and the fleet-mergeable
    #: bin counters (two out-of-range bins are added).  Small on purpose: each
    #: bin is one time series per feature.
    bins: int = field(default=10, metadata=_check(lambda x: 2 <= x <= 50, "must be between 2 and 50"))
    #: A numerical feature with at most this many distinct reference values
    #: is binned on its values (one slot each) instead of quantiles; 0 = ``bins``.
    discrete_max_values: int = field(default=0, metadata=_check(lambda x: 0 <= x <= 50, "must be between 0 and 50"))
    #: Below this many values in a window no score is reported.
    min_samples: int = field(default=100, metadata=_check(lambda x: x >= 1, "must be >= 1"))
    #: Scores are recomputed at most this often and cached between scrapes.
    recompute_interval_seconds: float = field(default=10.0, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    #: Size of the sorted reference sample kept for exact tests (KS, Wasserstein).
    reference_sample_size: int = field(default=10_000, metadata=_check(_positive, "must be > 0"))
    #: Categorical features: categories kept from the reference (rest -> __other__).
    top_k_categories: int = field(default=20, metadata=_check(_positive, "must be > 0"))
    #: Default rule: windows up to this many values use KS / chi-square.
    small_sample_max: int = field(default=1000, metadata=_check(_positive, "must be > 0"))


@dataclass
class ReferenceConfig:
    """Where the reference (training-time) data comes from."""

    #: CSV, JSON lines, Parquet, or a frozen profile built by
    #: ``modelmon reference build``.  Relative paths are relative to the config file.
    path: str = ""


@dataclass
class FairnessConfig:
    """Fairness monitoring for one sensitive attribute with a bounded set of groups."""

    attribute: str = ""
    groups: list[str] = field(default_factory=list)
    #: The group others are compared against; empty = the first group.
    reference_group: str = ""


#: Names of the model outputs when they are monitored like features.
PREDICTION_FEATURE = "prediction"
SCORE_FEATURE = "score"


@dataclass
class PredictionDriftConfig:
    """Prediction drift: the model's outputs watched like features.

    Exported with the drift metrics as ``feature="prediction"`` (categorical
    for classification, numerical for regression) and ``feature="score"``
    (numerical), scored with the model's drift methods.  The reference data
    needs columns of those names, since drift means "unlike the reference".
    """

    prediction: bool = False
    score: bool = False


@dataclass
class AttributionConfig:
    """Attribution monitoring: per-feature attributions carried by events
    (``"attributions": {feature: value}``) and by the reference (columns
    ``column_prefix + feature``), see docs/explainability.md."""

    enabled: bool = False
    #: Reference (and ``modelmon drift`` file) columns holding each feature's attribution.
    column_prefix: str = field(default="attribution_", metadata=_check(
        lambda s: bool(re.fullmatch(r"[A-Za-z0-9_.\-]+", s)), "must be letters, digits, _ . -"))
    #: The importance ranking changed when its Spearman correlation with the reference's falls below this.
    min_rank_correlation: float = field(default=0.7, metadata=_check(lambda x: -1 <= x <= 1, "must be between -1 and 1"))
    #: Also score each feature's attribution values with the drift methods (as feature ``<prefix><feature>``).
    drift: bool = True


@dataclass
class OutlierConfig:
    """Per-event outlier score against the reference (docs/explainability.md)."""

    enabled: bool = True
    #: Events scoring above this quantile of the reference's own scores are outlying.
    quantile: float = field(default=0.995, metadata=_check(lambda x: 0 < x < 1, "must be between 0 and 1 (exclusive)"))
    #: Shrinkage of the reference correlation matrix towards the identity.
    shrinkage: float = field(default=0.01, metadata=_check(lambda x: 0 < x <= 1, "must be in (0, 1]"))
    #: Alert when a window's outlying share exceeds this multiple of the reference's share.
    max_share_multiple: float = field(default=3.0, metadata=_check(_positive, "must be > 0"))


@dataclass
class PerformanceEstimationConfig:
    """Label-free performance estimation (CBPE, binary classification; docs/estimation.md).

    The reference data then needs ``prediction``, ``score`` (the positive
    class's probability) and ``label`` columns."""

    enabled: bool = False
    metrics: list[str] = field(default_factory=lambda: ["accuracy", "precision", "recall", "f1", "roc_auc"])
    #: Isotonic calibration of the scores: ``auto`` when it lowers the held-out
    #: calibration error on the reference, ``always``, or ``never``.
    calibration: str = field(default="auto", metadata=_choices("auto", "always", "never"))
    #: Consecutive reference chunks the sampling error is measured over.
    reference_chunks: int = field(default=50, metadata=_check(lambda x: x >= 2, "must be >= 2"))
    #: Band half-width in standard errors.
    sigmas: float = field(default=3.0, metadata=_check(_positive, "must be > 0"))
    #: Below this many scored predictions in a window no estimate is reported.
    min_samples: int = field(default=100, metadata=_check(lambda x: x >= 1, "must be >= 1"))


@dataclass
class MultivariateDriftConfig:
    """Multivariate drift by PCA reconstruction error (docs/estimation.md)."""

    enabled: bool = False
    #: Features taken together; empty = every feature of the model (at least two).
    features: list[str] = field(default_factory=list)
    #: Principal components are kept until they explain this share of the variance.
    variance_share: float = field(default=0.65, metadata=_check(lambda x: 0 < x < 1, "must be between 0 and 1 (exclusive)"))
    reference_chunks: int = field(default=50, metadata=_check(lambda x: x >= 2, "must be >= 2"))
    #: Threshold half-width in standard deviations of the reference chunks' error.
    sigmas: float = field(default=3.0, metadata=_check(_positive, "must be > 0"))
    min_samples: int = field(default=100, metadata=_check(lambda x: x >= 1, "must be >= 1"))


@dataclass
class ModelConfig:
    """One monitored model."""

    name: str = field(metadata=_check(_label_value, "must be a name of letters, digits, _ . -"))
    task: str = field(default="classification", metadata=_choices(*TASKS))
    #: Version assumed when events carry none.
    version: str = ""
    #: Classification: the class treated as positive for precision / recall.
    positive_class: str = "1"
    #: Bounded set of versions exported as label values (empty = any, capped by max_versions).
    max_versions: int = field(default=10, metadata=_check(_positive, "must be > 0"))
    #: Bounded error reasons; others are counted as ``other``.
    error_reasons: list[str] = field(default_factory=lambda: ["error", "timeout", "upstream", "invalid_request"])
    features: list[FeatureConfig] = field(default_factory=list)
    reference: ReferenceConfig = field(default_factory=ReferenceConfig)
    thresholds: ThresholdsConfig = field(default_factory=ThresholdsConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    fairness: FairnessConfig = field(default_factory=FairnessConfig)
    prediction_drift: PredictionDriftConfig = field(default_factory=PredictionDriftConfig)
    attributions: AttributionConfig = field(default_factory=AttributionConfig)
    outliers: OutlierConfig = field(default_factory=OutlierConfig)
    performance_estimation: PerformanceEstimationConfig = field(default_factory=PerformanceEstimationConfig)
    multivariate_drift: MultivariateDriftConfig = field(default_factory=MultivariateDriftConfig)

    def multivariate_features(self) -> list[FeatureConfig]:
        """The features multivariate drift takes together."""
        chosen = self.multivariate_drift.features
        return [f for f in self.features if not chosen or f.name in chosen]

    def feature(self, name: str) -> FeatureConfig | None:
        for f in self.features:
            if f.name == name:
                return f
        return None

    def monitored_features(self) -> list[FeatureConfig]:
        """The features plus the outputs watched for prediction drift (drift engine columns)."""
        out = list(self.features)
        if self.prediction_drift.prediction:
            ptype = "categorical" if self.task == "classification" else "numerical"
            out.append(FeatureConfig(name=PREDICTION_FEATURE, type=ptype))
        if self.prediction_drift.score:
            out.append(FeatureConfig(name=SCORE_FEATURE, type="numerical"))
        if self.attributions.enabled and self.attributions.drift:
            out += [FeatureConfig(name=c, type="numerical") for c in self.attribution_columns().values()]
        return out

    def attribution_columns(self) -> dict[str, str]:
        """Feature -> the reference column (and drift feature name) of its attribution."""
        return {f.name: self.attributions.column_prefix + f.name for f in self.features}


#: Highest simulated request rate: each 0.1 s step generates ``rate / 10`` events in memory.
MAX_SIMULATED_RATE = 1_000_000.0
RATE_RANGE = f"must be > 0 and at most {MAX_SIMULATED_RATE:.0f} (requests per second)"


@dataclass
class SimulatorConfig:
    """The built-in simulated model (the default source)."""

    enabled: bool = False
    scenario: str = "normal"
    #: Simulated requests per second (what Prometheus's rate() should show).
    rate: float = field(default=1000.0, metadata=_check(lambda x: 0 < x <= MAX_SIMULATED_RATE, RATE_RANGE))
    anomaly_after_seconds: float = field(default=180.0, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    #: 0 = the anomaly never ends.
    anomaly_duration_seconds: float = field(default=0.0, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    seed: int | None = None
    model: str = "demo"
    reference_rows: int = field(default=20_000, metadata=_check(_positive, "must be > 0"))


@dataclass
class IngestConfig:
    """The event ingestion API (``POST /api/v1/events`` and ``/api/v1/labels``)."""

    enabled: bool = True
    #: What to do with events for models not in the config: reject (404) or count.
    unknown_model: str = field(default="reject", metadata=_choices("reject", "count"))
    #: What to do with features not in the model's config: ignore (counted) or reject.
    unknown_feature: str = field(default="ignore", metadata=_choices("ignore", "reject"))
    max_body_bytes: int = field(default=10 * 1024 * 1024, metadata=_check(_positive, "must be > 0"))
    #: Bearer token from this environment variable or file (never logged).
    token_env: str = ""
    token_file: str = ""
    #: Events whose labels may still arrive: the join buffer's cap and horizon.
    label_join_max_events: int = field(default=200_000, metadata=_check(_positive, "must be > 0"))
    label_join_horizon_seconds: float = field(default=3600.0, metadata=_check(_positive, "must be > 0"))
    #: Ingestion requests processed at once; more are shed with 429 (bounds memory and CPU).
    max_concurrent_requests: int = field(default=4, metadata=_check(_positive, "must be > 0"))


@dataclass
class ProxyConfig:
    """The reverse-proxy source: a listener in front of one model server.

    Off while ``listen_address`` is empty.  ``id``, ``features`` take dotted
    paths into the JSON request body, ``prediction`` and ``score`` into the
    JSON response body (``inputs[0]``, ``instances[*].age``, ``outputs.label``);
    a ``[*]`` path makes one event per element (batch prediction requests).
    """

    listen_address: str = ""
    upstream: str = ""
    #: The model the upstream serves; empty = the only configured model.
    model: str = ""
    #: Version recorded for proxied predictions (else this response header, else the model's).
    version: str = ""
    version_header: str = ""
    #: Request id for joining labels: this request header, else the ``id`` path.
    id_header: str = "X-Request-Id"
    id: str = ""
    features: dict[str, str] = field(default_factory=dict)
    prediction: str = ""
    score: str = ""
    #: Feature -> dotted path into the JSON *response* body of its attribution (explanations served with predictions).
    attributions: dict[str, str] = field(default_factory=dict)
    #: Upstream connect timeout, longest wait for each read from the upstream (then 504), and
    #: the deadline for a client's whole request body (then 408).
    timeout_seconds: float = field(default=30.0, metadata=_check(_positive, "must be > 0"))
    #: A client's request head must arrive within this of the connection opening or of the
    #: previous response; idle keep-alive connections are closed after it too.
    header_timeout_seconds: float = field(default=10.0, metadata=_check(_positive, "must be > 0"))
    #: Client connections open at once; more are answered 503 and closed.
    max_connections: int = field(default=4096, metadata=_check(_positive, "must be > 0"))
    #: Kept-alive connections to the upstream (the pool's size).
    upstream_connections: int = field(default=100, metadata=_check(_positive, "must be > 0"))
    #: JSON bodies up to this size are captured for extraction; larger ones only pass through.
    max_parse_bytes: int = field(default=1024 * 1024, metadata=_check(_positive, "must be > 0"))
    #: Events waiting for the pipeline; when full, events are dropped and counted (requests still pass).
    queue_max_events: int = field(default=100_000, metadata=_check(_positive, "must be > 0"))
    #: How bodies are read: ``json`` (the dotted paths above), ``kserve-v1`` or
    #: ``oip-v2`` (Open Inference Protocol; ``features``, ``prediction`` and
    #: ``score`` are then tensor selectors such as ``input0[:, 3]``).
    protocol: str = field(default="json", metadata=_choices(*PROTOCOLS))
    #: kserve-v1 list rows / the columns of an OIP input tensor, in order
    #: (``-`` skips a column); empty = the model's features in config order.
    columns: list[str] = field(default_factory=list)


@dataclass
class CloudEventsServiceConfig:
    """One InferenceService whose KServe payload logger posts to ``/api/v1/cloudevents``."""

    #: ``Ce-Inferenceservicename`` of its events.
    inference_service: str = ""
    #: ``Ce-Namespace`` (empty: any namespace).
    namespace: str = ""
    #: The configured model its events feed; empty = the model named like the service.
    model: str = ""
    #: ``Ce-Endpoint`` (``default``, ``canary``) -> the version recorded.
    endpoints: dict[str, str] = field(default_factory=dict)
    #: As ``proxy.columns`` / ``proxy.features`` / ``proxy.prediction`` / ``proxy.score`` with a protocol.
    columns: list[str] = field(default_factory=list)
    features: dict[str, str] = field(default_factory=dict)
    prediction: str = ""
    score: str = ""


@dataclass
class CloudEventsConfig:
    """The KServe payload-logger sink (``POST /api/v1/cloudevents``), on with the ingestion API.

    An InferenceService named like a configured model needs no entry in ``services``.
    """

    #: How long a request waits for its response (and the reverse) before it is used alone.
    join_horizon_seconds: float = field(default=60.0, metadata=_check(_positive, "must be > 0"))
    max_pending: int = field(default=10_000, metadata=_check(_positive, "must be > 0"))
    max_pending_bytes: int = field(default=64 * 1024 * 1024, metadata=_check(_positive, "must be > 0"))
    services: list[CloudEventsServiceConfig] = field(default_factory=list)


@dataclass
class LogsConfig:
    """Structured inference logs: one JSON line per prediction (modelmon.inference_log).

    Off by default because, unlike /metrics, they hold per-event data.  Privacy
    by default: feature values only for features with ``log_value: true``,
    attributes only when listed, ``hash_fields`` replaced by a salted hash.
    """

    enabled: bool = False
    #: ``stdout``, ``stderr`` or a file path (relative to the config file), rotated at ``max_bytes``.
    output: str = "stdout"
    max_bytes: int = field(default=100 * 1024 * 1024, metadata=_check(_positive, "must be > 0"))
    backup_count: int = field(default=5, metadata=_check(lambda x: x >= 0, "must be >= 0"))
    #: Share of successful predictions logged; failed ones are always logged while ``errors_always``.
    sample_ratio: float = field(default=1.0, metadata=_check(_ratio, "must be between 0 and 1"))
    errors_always: bool = True
    #: Outlying events (see ``models[].outliers``) are always logged, marked ``"outlier": true``.
    outliers_always: bool = True
    #: Fields replaced by ``sha256:<hex>``: request_id, prediction, features.NAME, attributes.NAME.
    hash_fields: list[str] = field(default_factory=list)
    #: Environment variable holding the hash salt (so short ids cannot be reversed by brute force).
    hash_salt_env: str = ""
    #: Event attributes to include (none by default: they may identify people).
    attributes: list[str] = field(default_factory=list)


@dataclass
class TLSServerConfig:
    """Exporter-toolkit ``tls_server_config``: TLS is on when ``cert_file`` is set."""

    cert_file: str = ""
    key_file: str = ""
    client_auth_type: str = field(
        default="NoClientCert", metadata=_choices("NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert")
    )
    client_ca_file: str = ""
    min_version: str = field(default="TLS12", metadata=_choices("TLS12", "TLS13"))


@dataclass
class HTTPServerConfig:
    """Exporter-toolkit ``http_server_config``: response headers such as HSTS."""

    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class WebConfig:
    """TLS and basic auth for the HTTP server (modelmon.webauth), in the Prometheus
    exporter-toolkit web config format, inline or in ``config_file`` (``--web.config.file``)."""

    config_file: str = ""
    tls_server_config: TLSServerConfig = field(default_factory=TLSServerConfig)
    #: user -> bcrypt hash (``htpasswd -nBC 10 user``); protects /metrics and /.
    basic_auth_users: dict[str, str] = field(default_factory=dict)
    http_server_config: HTTPServerConfig = field(default_factory=HTTPServerConfig)


@dataclass
class CollectorsConfig:
    """Metric groups on /metrics (modelmon.collectors.groups); ``false`` drops
    a group's families, as ``--no-collector.NAME`` does (docs/scale-out.md)."""

    serving: bool = True
    quality: bool = True
    fairness: bool = True
    drift: bool = True
    data_quality: bool = True
    bins: bool = True
    explain: bool = True
    process: bool = True

    def disabled(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if not getattr(self, f.name)]


@dataclass
class Config:
    """The whole exporter configuration."""

    models: list[ModelConfig] = field(default_factory=list)
    windows: list[WindowConfig] = field(
        default_factory=lambda: [WindowConfig(duration_seconds=300.0), WindowConfig(duration_seconds=3600.0)]
    )
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    cloudevents: CloudEventsConfig = field(default_factory=CloudEventsConfig)
    logs: LogsConfig = field(default_factory=LogsConfig)
    web: WebConfig = field(default_factory=WebConfig)
    collectors: CollectorsConfig = field(default_factory=CollectorsConfig)
    #: The file this config came from ("" for the built-in default).
    source: str = field(default="", metadata={"internal": True})

    def model(self, name: str) -> ModelConfig | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    def resolve_path(self, path: str) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        p = Path(path)
        if p.is_absolute() or not self.source:
            return p
        return Path(self.source).parent / p


# --------------------------------------------------------------------------- loader


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list,):
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, path: str, meta: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], path, meta)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"must be {_type_name(tp)}", field_path=path)
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, f"{path}[{i}]", None) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError("must be a mapping", field_path=path)
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError("must be true or false", field_path=path)
        return value
    if tp is float:
        if path.endswith("_seconds") or path.split(".")[-1].endswith("_seconds"):
            try:
                return parse_duration(value)
            except ValueError as exc:
                raise ConfigError(str(exc), field_path=path) from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError("must be a number", field_path=path)
        if not math.isfinite(value):
            raise ConfigError("must be a finite number", field_path=path)
        return float(value)
    if tp is int:
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+(\.\d*)?[eE][+-]?\d+", value.strip()):
            raise ConfigError(f"must be an integer (YAML reads {value} as a string: write the digits out)",
                              field_path=path)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError("must be an integer", field_path=path)
        return value
    if tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError("must be a string", field_path=path)
        return str(value)
    return value


def _build(cls: Any, data: Any, path: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("must be a mapping", field_path=path or "(top level)")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    # Durations may be written without the unit suffix: `duration: 5m`.
    aliases = {name[: -len("_seconds")]: name for name in fields if name.endswith("_seconds")}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = aliases.get(key, key)
        sub = f"{path}.{key}" if path else str(key)
        if name not in fields:
            raise ConfigError(f"unknown field (expected one of {', '.join(sorted(fields))})", field_path=sub)
        f = fields[name]
        conv_path = f"{path}.{name}" if path else name
        try:
            converted = _convert(value, hints[name], conv_path, f.metadata)
        except ConfigError as exc:
            # Report the path as the user wrote it.
            if exc.field_path == conv_path:
                exc = ConfigError(exc.reason, field_path=sub)
            raise exc from None
        if converted is not None:
            if "choices" in f.metadata and converted not in f.metadata["choices"]:
                raise ConfigError(f"must be one of {', '.join(f.metadata['choices'])}", field_path=sub)
            if "check" in f.metadata:
                fn, message = f.metadata["check"]
                if not fn(converted):
                    raise ConfigError(message, field_path=sub)
        kwargs[name] = converted
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError("is required", field_path=f"{path}.{name}" if path else name)
    return cls(**kwargs)


def _check_label_values(m: ModelConfig, i: int) -> None:
    """Config strings that become label values obey the ingest rule (valid UTF-8, bounded length)."""
    fp = f"models[{i}]"
    values: list[tuple[str, str]] = [(f"{fp}.name", m.name), (f"{fp}.version", m.version),
                                     (f"{fp}.positive_class", m.positive_class)]
    values += [(f"{fp}.error_reasons[{k}]", v) for k, v in enumerate(m.error_reasons)]
    values += [(f"{fp}.fairness.groups[{k}]", v) for k, v in enumerate(m.fairness.groups)]
    for j, f in enumerate(m.features):
        values.append((f"{fp}.features[{j}].name", f.name))
        values += [(f"{fp}.features[{j}].categories[{k}]", v) for k, v in enumerate(f.categories)]
    for where, value in values:
        problem = label_problem(str(value))
        if problem is not None:
            raise ConfigError(f"{problem} (this becomes a Prometheus label value)", field_path=where)


def _validate(cfg: Config) -> None:
    """Cross-field checks the schema cannot express (a source's own section is checked by
    that source: see ``modelmon.app.check_sources``)."""
    seen: set[str] = set()
    for i, m in enumerate(cfg.models):
        if m.name in seen:
            raise ConfigError(f"duplicate model name {m.name!r}", field_path=f"models[{i}].name")
        seen.add(m.name)
        names: set[str] = set()
        for j, f in enumerate(m.features):
            fp = f"models[{i}].features[{j}]"
            if f.name in names:
                raise ConfigError(f"duplicate feature name {f.name!r}", field_path=f"{fp}.name")
            names.add(f.name)
            if f.type == "numerical" and f.categories:
                raise ConfigError("only categorical features have categories", field_path=f"{fp}.categories")
            if len(set(f.categories)) != len(f.categories):
                raise ConfigError("categories must be unique", field_path=f"{fp}.categories")
            for k, method in enumerate(f.methods):
                _check_method(method, f.type, f"{fp}.methods[{k}]")
        for k, method in enumerate(m.drift.methods):
            if method not in METHOD_FEATURE_TYPES:
                raise ConfigError(
                    f"unknown drift method {method!r} (known: {', '.join(METHOD_NAMES)})",
                    field_path=f"models[{i}].drift.methods[{k}]",
                )
        fair = m.fairness
        _check_label_values(m, i)
        if fair.attribute and not fair.groups:
            raise ConfigError("a fairness attribute needs its bounded list of groups", field_path=f"models[{i}].fairness.groups")
        if fair.reference_group and fair.reference_group not in fair.groups:
            raise ConfigError("must be one of fairness.groups", field_path=f"models[{i}].fairness.reference_group")
        for key, fname in (("prediction", PREDICTION_FEATURE), ("score", SCORE_FEATURE)):
            if getattr(m.prediction_drift, key) and fname in names:
                raise ConfigError(f"a feature is already named {fname!r}", field_path=f"models[{i}].prediction_drift.{key}")
        _validate_label_free(m, i, names)
    wnames: set[str] = set()
    for i, w in enumerate(cfg.windows):
        if w.name in wnames:
            raise ConfigError(f"duplicate window name {w.name!r}", field_path=f"windows[{i}].name")
        wnames.add(w.name)
    if not cfg.windows:
        raise ConfigError("at least one window is required", field_path="windows")
    _validate_cloudevents(cfg)


def validate_protocol_mapping(model: ModelConfig, protocol: str, columns: list[str], features: dict[str, str],
                              prediction: str, score: str, path: str) -> None:
    """Checks of a protocol's mapping (``path`` is the section, e.g. ``proxy``); json paths are the proxy's own."""
    if protocol == "json":
        if columns:
            raise ConfigError("only with protocol kserve-v1 or oip-v2", field_path=f"{path}.columns")
        return
    names = {f.name for f in model.features}
    for i, c in enumerate(columns):
        if c != SKIP_COLUMN and c not in names:
            raise ConfigError(f"not a feature of model {model.name!r} (use {SKIP_COLUMN!r} to skip a column)",
                              field_path=f"{path}.columns[{i}]")
    if protocol == "kserve-v1":
        for key, value in (("features", features), ("prediction", prediction), ("score", score)):
            if value:
                raise ConfigError("kserve-v1 reads rows by columns or by feature name, and predictions as they come",
                                  field_path=f"{path}.{key}")
        return
    for name, sel in list(features.items()) + [("prediction", prediction), ("score", score)]:
        where = f"{path}.features.{name}" if name in features else f"{path}.{name}"
        if name in features and name not in names:
            raise ConfigError(f"not a feature of model {model.name!r}", field_path=where)
        if sel:
            try:
                parse_selector(str(sel))
            except ValueError as exc:
                raise ConfigError(str(exc), field_path=where) from None


def protocol_mapping(model: ModelConfig, columns: list[str], features: dict[str, str], prediction: str,
                     score: str) -> Mapping:
    """A protocol module's view of a model and its (validated) columns and selectors."""
    return Mapping(
        model=model.name, feature_types={f.name: f.type for f in model.features},
        classification=model.task == "classification", positive_class=model.positive_class,
        columns=tuple(columns), features=dict(features), prediction=prediction, score=score,
    )


def cloudevents_model(cfg: Config, service: CloudEventsServiceConfig) -> ModelConfig | None:
    return cfg.model(service.model or service.inference_service)


def _validate_cloudevents(cfg: Config) -> None:
    seen: set[tuple[str, str]] = set()
    for i, svc in enumerate(cfg.cloudevents.services):
        path = f"cloudevents.services[{i}]"
        if not svc.inference_service:
            raise ConfigError("required: the InferenceService name (Ce-Inferenceservicename)",
                              field_path=f"{path}.inference_service")
        key = (svc.inference_service, svc.namespace)
        if key in seen:
            raise ConfigError(f"duplicate inference_service {svc.inference_service!r}", field_path=f"{path}.inference_service")
        seen.add(key)
        model = cloudevents_model(cfg, svc)
        if model is None:
            which = svc.model or svc.inference_service
            raise ConfigError(f"unknown model {which!r} (not in models)",
                              field_path=f"{path}.model" if svc.model else f"{path}.inference_service")
        validate_protocol_mapping(model, "oip-v2", svc.columns, svc.features, svc.prediction, svc.score, path)

def build_dataclass(cls: Any, data: Any, path: str = "") -> Any:
    """One config dataclass from parsed YAML, with the same errors as the config file's
    (other files in their own format, like the web config file, use it)."""
    return _build(cls, data, path)


def listen_address(addr: str) -> tuple[str, int]:
    """Parse ``HOST:PORT`` / ``:PORT`` / ``[::1]:PORT`` as Prometheus exporters do."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"invalid listen address {addr!r}: expected HOST:PORT")
    if host.startswith("[") != host.endswith("]") or (":" in host and not host.startswith("[")):
        raise ValueError(f"invalid listen address {addr!r}: write an IPv6 address in brackets, e.g. [::1]:9100")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc")


def _validate_label_free(m: ModelConfig, i: int, names: set[str]) -> None:
    pe, mv = m.performance_estimation, m.multivariate_drift
    if pe.enabled and m.task != "classification":
        raise ConfigError("performance estimation covers classification models only",
                          field_path=f"models[{i}].performance_estimation.enabled")
    for k, metric in enumerate(pe.metrics):
        if metric not in ESTIMATED_METRICS:
            raise ConfigError(f"unknown metric {metric!r} (known: {', '.join(ESTIMATED_METRICS)})",
                              field_path=f"models[{i}].performance_estimation.metrics[{k}]")
    for k, fname in enumerate(mv.features):
        if fname not in names:
            raise ConfigError(f"not a feature of the model: {fname!r}",
                              field_path=f"models[{i}].multivariate_drift.features[{k}]")
    if mv.enabled and len(m.multivariate_features()) < 2:
        raise ConfigError("multivariate drift needs at least two features",
                          field_path=f"models[{i}].multivariate_drift.features" if mv.features else f"models[{i}].features")


def _check_method(method: str, ftype: str, path: str) -> None:
    if method not in METHOD_FEATURE_TYPES:
        raise ConfigError(f"unknown drift method {method!r} (known: {', '.join(METHOD_NAMES)})", field_path=path)
    if ftype not in METHOD_FEATURE_TYPES[method]:
        raise ConfigError(f"method {method!r} does not apply to {ftype} features", field_path=path)


def _validate_raw(data: Any) -> None:
    """Checks that need to know what the file says, not only the defaults it leads to."""
    models = data.get("models") if isinstance(data, dict) else None
    for i, m in enumerate(models if isinstance(models, list) else []):
        if isinstance(m, dict) and m.get("task") == "regression" and "positive_class" in m:
            raise ConfigError("only classification models have a positive class (task is regression)",
                              field_path=f"models[{i}].positive_class")


def config_from_dict(data: Any, source: str = "") -> Config:
    """Build and validate a :class:`Config` from already-parsed YAML."""
    try:
        _validate_raw(data)
        cfg = _build(Config, data, "")
        cfg.source = source
        _validate(cfg)
    except ConfigError as exc:
        raise ConfigError(exc.reason, file=source or None, field_path=exc.field_path) from None
    return cfg


def _duplicate_key(node: yaml.Node, path: str = "") -> ConfigError | None:
    """The first mapping key written twice under ``node`` (YAML itself keeps the last silently)."""
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if key is not None and key in first:
                line = first[key].start_mark.line + 1
                return ConfigError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1} "
                                   f"(first at line {line}; YAML would keep only the last)", field_path=sub)
            if key is not None:
                first[key] = key_node
            found = _duplicate_key(value_node, sub)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found = _duplicate_key(item, f"{path}[{i}]")
            if found:
                return found
    return None


def load_yaml(text: str, file: str) -> Any:
    """Parse a YAML document for a config: syntax errors with line and column,
    duplicate keys refused with the field and both lines."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        dup = _duplicate_key(node) if node is not None else None
        if dup:
            raise ConfigError(dup.reason, file=file, field_path=dup.field_path)
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(f"invalid YAML: {where}{getattr(exc, 'problem', None) or exc}", file=file) from None


def load_config(path: str | Path) -> Config:
    """Load a YAML config file; raises :class:`ConfigError` naming file and field."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason} at byte {exc.start}", file=str(p)) from None
    data = load_yaml(text, str(p))
    if data is None:
        raise ConfigError("the file is empty (expected a mapping with models:, see README.md, Configuration)",
                          file=str(p))
    return config_from_dict(data, source=str(p))
