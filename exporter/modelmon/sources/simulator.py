"""The simulated model: a source like any other, feeding the same pipeline.

The demo is a binary classifier ("will this customer churn") with four
numerical and two categorical features.  Its reference dataset is generated
from the ``normal`` distributions with the run's seed, so drift scores mean
something.  Scenarios (each pushes one group of metrics across its default threshold):

============== ============================================================
normal          latency ~ N(100 ms, 20 ms), 1000 req/s, 1 % errors,
                accuracy 0.95, features as in the reference
latency-spike   latency ~ N(250 ms, 40 ms)   (threshold 200 ms)
throughput-drop 400 req/s                     (threshold 500 req/s)
error-burst     10 % errors                   (threshold 5 %)
accuracy-decay  accuracy 0.80                 (threshold 0.85)
data-drift      age +0.2 sd (slight), income +0.5 sd and x1.2 sd (moderate),
                credit_score +1 sd and x1.5 sd (severe), region mix reversed
covariate-shift tablets (where the model is unsure) 10 % -> 60 % of traffic,
                accuracy 0.95 -> ~0.76, labels withheld: only the
                label-free estimate (CBPE) sees the drop
incident        all of the above at once (but covariate-shift)
importance-     the input mix changes which features matter: credit_score
shift           sd 80 -> 15, session_seconds mean 300 -> 1500 s, 85 % west,
                so session_seconds and region lead the importance ranking
                instead of credit_score
============== ============================================================

Labels follow a logit linear in the inputs (:data:`COEFFICIENTS` for the
numerical features, :data:`EFFECTS` per category), so each event carries exact
attributions of that linear score: coefficient x (value - reference mean) for
numerical features, effect - reference mean effect for categorical ones.

Scores are calibrated: each prediction is right with probability ``c`` (its
confidence) and the score is ``c`` for a positive prediction, ``1 - c`` for a
negative one.  Confidence is high (``c ~ U(0.978, 1)``) except on tablets
(``c ~ U(0.5, 0.7)``), so accuracy is 0.95 on the reference mix; more
tablets lower it *and* the scores say so.  ``accuracy-decay`` is concept
drift instead: predictions are wrong more often than their scores claim.

The anomaly starts ``anomaly_after`` seconds after start and, when
``anomaly_duration`` > 0, ends after that long, so alerts can fire and resolve.
Requests are *counted*, not faked: the simulator emits exactly ``rate`` events
per second (fractions carried over between ticks), so Prometheus's
``rate(modelmon_requests_total[1m])`` shows the configured rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import GaugeMetricFamily, Metric

from ..config import (
    AttributionConfig,
    Config,
    FairnessConfig,
    FeatureConfig,
    ModelConfig,
    MultivariateDriftConfig,
    PerformanceEstimationConfig,
    SimulatorConfig,
)
from ..drift.reference import ReferenceProfile, build_profile
from ..estimation.sections import fit_sections
from ..events import EventBatch
from ..ingest import ItemError, check_label
from ..profile_sections import fit_explain_sections

log = logging.getLogger(__name__)

SCENARIOS = ("normal", "latency-spike", "throughput-drop", "error-burst", "accuracy-decay", "data-drift",
             "covariate-shift", "incident", "importance-shift")
MODEL_VERSION = "1.0.0"
REGIONS = ["north", "south", "east", "west"]
DEVICES = ["mobile", "desktop", "tablet"]
#: The label logit's coefficients per numerical feature, and effects per category.
COEFFICIENTS = {"age": 0.03, "income": 1.5e-5, "credit_score": 0.01, "session_seconds": -0.0005}
EFFECTS = {"region": {"north": 0.4, "south": 0.1, "east": -0.2, "west": -0.5},
           "device": {"mobile": 0.05, "desktop": -0.05, "tablet": 0.0}}
#: Device mix of the reference and of the covariate-shift scenario.
DEVICE_MIX = [0.6, 0.3, 0.1]
SHIFTED_DEVICE_MIX = [0.25, 0.15, 0.6]
#: Confidence ranges: sure everywhere but on tablets (mean accuracy 0.95 on the reference mix).
CONFIDENT = (0.978, 1.0)
UNSURE = (0.5, 0.7)


@dataclass(frozen=True)
class Regime:
    """The distribution parameters in force at a moment."""

    latency_mean: float = 0.100
    latency_sd: float = 0.020
    rate: float = 1000.0
    error_rate: float = 0.01
    accuracy: float = 0.95
    drift: bool = False
    covariate_shift: bool = False
    #: The input mix of the ``importance-shift`` scenario.
    mix: bool = False


def demo_model_config(name: str = "demo") -> ModelConfig:
    """The demo model's config: used when ``modelmon serve`` runs without one."""
    return ModelConfig(
        name=name,
        task="classification",
        version=MODEL_VERSION,
        positive_class="1",
        features=[
            FeatureConfig(name="age", type="numerical"),
            FeatureConfig(name="income", type="numerical"),
            FeatureConfig(name="credit_score", type="numerical"),
            FeatureConfig(name="session_seconds", type="numerical"),
            FeatureConfig(name="region", type="categorical", categories=list(REGIONS)),
            FeatureConfig(name="device", type="categorical", categories=list(DEVICES)),
        ],
        fairness=FairnessConfig(attribute="region", groups=list(REGIONS), reference_group="north"),
        performance_estimation=PerformanceEstimationConfig(enabled=True),
        multivariate_drift=MultivariateDriftConfig(enabled=True),
        attributions=AttributionConfig(enabled=True),
    )


def default_config() -> Config:
    """The config used when ``modelmon serve`` runs without one: the simulated demo model."""
    cfg = Config(models=[demo_model_config()])
    cfg.simulator.enabled = True
    return cfg


def regime_for(scenario: str, anomalous: bool, base_rate: float) -> Regime:
    if not anomalous or scenario == "normal":
        return Regime(rate=base_rate)
    every = scenario == "incident"
    return Regime(
        latency_mean=0.250 if every or scenario == "latency-spike" else 0.100,
        latency_sd=0.040 if every or scenario == "latency-spike" else 0.020,
        rate=base_rate * 0.4 if every or scenario == "throughput-drop" else base_rate,
        error_rate=0.10 if every or scenario == "error-burst" else 0.01,
        accuracy=0.80 if every or scenario == "accuracy-decay" else 0.95,
        drift=every or scenario == "data-drift",
        covariate_shift=scenario == "covariate-shift",
        mix=scenario == "importance-shift",
    )


def generate_features(rng: np.random.Generator, n: int, drift: bool = False, covariate_shift: bool = False,
                      mix: bool = False) -> dict[str, np.ndarray]:
    """Feature columns of ``n`` simulated requests (the reference when ``drift`` is False)."""
    if mix:
        return {
            "age": np.clip(rng.normal(40, 12, n), 18, 100),
            "income": np.maximum(rng.normal(50_000, 15_000, n), 0.0),
            "credit_score": np.clip(rng.normal(650, 15, n), 300, 850),
            "session_seconds": rng.exponential(1500.0, n),
            "region": np.array(REGIONS, dtype=object)[rng.choice(4, n, p=[0.05, 0.05, 0.05, 0.85])],
            "device": np.array(DEVICES, dtype=object)[rng.choice(3, n, p=DEVICE_MIX)],
        }
    if drift:
        age = rng.normal(40 + 0.2 * 12, 12, n)
        income = rng.normal(50_000 + 0.5 * 15_000, 15_000 * 1.2, n)
        credit = rng.normal(650 + 1.0 * 80, 80 * 1.5, n)
        region_p = [0.1, 0.2, 0.3, 0.4]
    else:
        age = rng.normal(40, 12, n)
        income = rng.normal(50_000, 15_000, n)
        credit = rng.normal(650, 80, n)
        region_p = [0.4, 0.3, 0.2, 0.1]
    return {
        "age": np.clip(age, 18, 100),
        "income": np.maximum(income, 0.0),
        "credit_score": np.clip(credit, 300, 850) if not drift else np.clip(credit, 300, 1000),
        "session_seconds": rng.exponential(300.0, n),
        "region": np.array(REGIONS, dtype=object)[rng.choice(4, n, p=region_p)],
        "device": np.array(DEVICES, dtype=object)[rng.choice(3, n, p=SHIFTED_DEVICE_MIX if covariate_shift else DEVICE_MIX)],
    }


@dataclass(frozen=True)
class LinearScore:
    """The label logit, linear in the inputs, so its attributions are exact."""

    #: Reference mean of each numerical feature and mean effect of each categorical one.
    baseline: dict[str, float]

    @classmethod
    def fit(cls, reference: dict[str, np.ndarray]) -> LinearScore:
        base = {f: float(np.mean(reference[f])) for f in COEFFICIENTS}
        for f, eff in EFFECTS.items():
            base[f] = float(np.mean([eff[c] for c in reference[f]]))
        return cls(base)

    def attributions(self, feats: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {f: c * (np.asarray(feats[f], dtype=np.float64) - self.baseline[f]) for f, c in COEFFICIENTS.items()}
        for f, eff in EFFECTS.items():
            out[f] = np.array([eff[c] for c in feats[f]], dtype=np.float64) - self.baseline[f]
        return out

    def logit(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        """-0.5 at the reference means, plus every feature's attribution."""
        return logit_of(self.attributions(feats))


def logit_of(attributions: dict[str, np.ndarray]) -> np.ndarray:
    """The linear score from its attributions: -0.5 plus their sum."""
    return -0.5 + np.sum(np.vstack(list(attributions.values())), axis=0)


def reference_data(rows: int, seed: int | None) -> tuple[np.random.Generator, dict[str, np.ndarray]]:
    """The demo's reference features (``normal`` regime) and the generator that made them."""
    rng = np.random.default_rng(None if seed is None else seed + 1)
    return rng, generate_features(rng, rows)


def generate_outputs(rng: np.random.Generator, feats: dict[str, np.ndarray], accuracy: float = 0.95,
                     logit: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Label, prediction and calibrated score of each row (see module docs);
    ``accuracy`` below 0.95 makes predictions wrong more often than their
    confidence says (concept drift).  ``logit`` is the label's log-odds
    (default: :class:`LinearScore` fitted on ``feats``)."""
    n = len(feats["age"])
    if logit is None:
        logit = LinearScore.fit(feats).logit(feats)
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    unsure = feats["device"] == "tablet"
    conf = np.where(unsure, rng.uniform(*UNSURE, n), rng.uniform(*CONFIDENT, n))
    correct = rng.random(n) < conf - (0.95 - accuracy)
    pred = np.where(correct, label, 1 - label)
    score = np.where(pred == 1, conf, 1.0 - conf)
    return {"label": label, "prediction": pred, "score": score}


def reference_profile(model: ModelConfig, rows: int, seed: int | None) -> ReferenceProfile:
    """The demo's reference profile, generated from the ``normal`` regime."""
    rng, cols = reference_data(rows, seed)
    score = LinearScore.fit(cols)
    out = generate_outputs(rng, cols, logit=score.logit(cols))
    cols.update({k: v.astype(str) if k != "score" else v for k, v in out.items()})
    for f, a in score.attributions(cols).items():
        cols[model.attributions.column_prefix + f] = a
    prof = build_profile(
        cols, model.monitored_features(), bins=model.drift.bins,
        sample_size=model.drift.reference_sample_size, top_k=model.drift.top_k_categories,
    )
    fit_sections(prof, cols, model)
    fit_explain_sections(prof, cols, model)
    return prof


class Simulator:
    """Generates the demo model's traffic in a background thread (the ``simulator`` source)."""

    name = "simulator"

    TICK = 0.1  # seconds between batches

    def __init__(self, cfg: SimulatorConfig, submit: Callable[[EventBatch], None], clock: Callable[[], float] = time.time):
        if cfg.scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {cfg.scenario!r} (known: {', '.join(SCENARIOS)})")
        try:  # the strings this source turns into label values follow the ingest schema's rule
            for name, value in (("model", cfg.model), ("version", MODEL_VERSION)):
                check_label(value, f"simulator.{name}")
        except ItemError as exc:
            raise ValueError(str(exc)) from None
        self.cfg = cfg
        self.submit = submit
        self.clock = clock
        self.rng = np.random.default_rng(cfg.seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._carry = 0.0
        self.started_at = clock()
        self.emitted = 0
        self.score = LinearScore.fit(reference_data(cfg.reference_rows, cfg.seed)[1])

    # -------------------------------------------------------------- scenario
    def anomalous(self, now: float | None = None) -> bool:
        elapsed = (self.clock() if now is None else now) - self.started_at
        if self.cfg.scenario == "normal" or elapsed < self.cfg.anomaly_after_seconds:
            return False
        if self.cfg.anomaly_duration_seconds > 0:
            return elapsed < self.cfg.anomaly_after_seconds + self.cfg.anomaly_duration_seconds
        return True

    def regime(self, now: float | None = None) -> Regime:
        return regime_for(self.cfg.scenario, self.anomalous(now), self.cfg.rate)

    # ------------------------------------------------------------ generation
    def batch(self, n: int, regime: Regime, now: float) -> EventBatch:
        """``n`` simulated events under ``regime`` (vectorised)."""
        rng = self.rng
        feats = generate_features(rng, n, drift=regime.drift, covariate_shift=regime.covariate_shift, mix=regime.mix)
        attributions = self.score.attributions(feats)
        out = generate_outputs(rng, feats, regime.accuracy, logit=logit_of(attributions))
        label, pred, score = out["label"], out["prediction"], out["score"]
        latency = np.maximum(rng.normal(regime.latency_mean, regime.latency_sd, n), 0.005)
        errors = rng.random(n) < regime.error_rate
        start = self.emitted
        self.emitted += n
        # Covariate shift: the labels are withheld (they would come months later).
        labels = [None if e or regime.covariate_shift else str(v) for v, e in zip(label.tolist(), errors.tolist())]
        return EventBatch(
            model=self.cfg.model,
            timestamps=[now] * n,
            versions=[MODEL_VERSION] * n,
            ids=[f"sim-{start + i}" for i in range(n)],
            latency_seconds=latency.tolist(),
            errors=["error" if e else None for e in errors.tolist()],
            features={
                "age": feats["age"].tolist(),
                "income": feats["income"].tolist(),
                "credit_score": feats["credit_score"].tolist(),
                "session_seconds": feats["session_seconds"].tolist(),
                "region": feats["region"].tolist(),
                "device": feats["device"].tolist(),
            },
            predictions=[None if e else str(v) for v, e in zip(pred.tolist(), errors.tolist())],
            scores=[None if e else s for s, e in zip(score.tolist(), errors.tolist())],
            labels=labels,
            attributes={"region": feats["region"].tolist()},
            source="simulator",
            attributions=attributions,
        )

    def step(self, dt: float, now: float | None = None) -> int:
        """Emit the events due for ``dt`` seconds; returns how many."""
        now = self.clock() if now is None else now
        regime = self.regime(now)
        self._carry += regime.rate * dt
        n = int(self._carry)
        self._carry -= n
        if n:
            self.submit(self.batch(n, regime, now))
        return n

    # ---------------------------------------------------------------- thread
    def routes(self) -> list[Any]:
        return []

    def collectors(self) -> list[Any]:
        return [SimulatorCollector(self)]

    def start(self) -> None:
        self.started_at = self.clock()
        self._thread = threading.Thread(target=self._run, name="modelmon-simulator", daemon=True)
        self._thread.start()
        log.info("simulator started", extra={"scenario": self.cfg.scenario, "rate": self.cfg.rate,
                                             "anomaly_after_seconds": self.cfg.anomaly_after_seconds})

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self.TICK):
            t = time.monotonic()
            try:
                self.step(t - last)
            except Exception:  # keep simulating: one bad tick must not stop the source
                log.exception("simulator step failed")
            last = t

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class SimulatorCollector:
    """``modelmon_simulator_anomaly_active{model,scenario}``: 1 while the scenario's anomaly runs."""

    def __init__(self, simulator: Simulator):
        self.simulator = simulator

    def collect(self) -> Iterator[Metric]:
        sim = self.simulator
        g = GaugeMetricFamily("modelmon_simulator_anomaly_active",
                              "1 while the simulated scenario's anomaly is active.", labels=["model", "scenario"])
        g.add_metric([sim.cfg.model, sim.cfg.scenario], int(sim.anomalous()))
        yield g
