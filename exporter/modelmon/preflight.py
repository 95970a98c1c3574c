"""What ``modelmon check-config`` and ``modelmon serve`` both check before
anything listens, so a config passes both or fails both with the same message.

:func:`prepare` completes and checks a loaded :class:`~modelmon.config.Config`
across settings and the outside world: the simulated model is added when the
simulator is on (a config with only ``simulator: {enabled: true}`` monitors
it), a config with no model at all is refused, the windows' up-front memory
is estimated and bounded by the machine's, and the inference-log, ingest-token
and web settings (certificates, password hashes) are read.  :func:`load_profiles` reads every reference.
Errors are :class:`~modelmon.config.ConfigError` naming file and field;
warnings come back as :class:`ConfigWarning` for the caller to print (CLI) or
log (serve).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .app import check_sources, load_profile
from .config import Config, ConfigError, ModelConfig
from .drift.reference import ReferenceProfile
from .inference_log import validate_logs_config
from .sources.api import read_token
from .sources.simulator import demo_model_config
from .webauth import web_security

#: Bytes one event costs in one window of one model (modelmon.monitor's
#: columns): in the feature window its timestamp, weight and error flag; in
#: the labelled window its timestamp, weight, prediction, label, score, delay
#: and group code; plus per numerical feature a value and a bin code and per
#: categorical feature a code.
EVENT_BYTES_FIXED = (8 + 8 + 1) + (8 + 8 + 4 * 8 + 2)
EVENT_BYTES_NUMERICAL = 8 + 2
EVENT_BYTES_CATEGORICAL = 2
#: Performance estimation (CBPE) keeps every served prediction's positive indicator and score;
#: outlier scoring a flag; attribution monitoring one value per feature.
#: (tests/test_core_config_preflight.py checks the sum against the real allocation.)
EVENT_BYTES_CBPE = 8 + 8
EVENT_BYTES_OUTLIER = 1
EVENT_BYTES_ATTRIBUTION = 8
#: Windows above this share of the machine's memory get a warning.
MEMORY_WARN_SHARE = 0.5


@dataclass(frozen=True)
class ConfigWarning:
    """A setting that works but probably not as meant."""

    message: str
    file: str | None = None
    field_path: str | None = None

    def __str__(self) -> str:
        return ": ".join([p for p in (self.file, self.field_path) if p] + [self.message])


def window_bytes(model: ModelConfig, max_events: int) -> int:
    """Memory one window of ``max_events`` takes for ``model``, allocated at start-up."""
    feats = model.monitored_features()
    n_num = max(sum(f.type == "numerical" for f in feats), 1)
    n_cat = max(sum(f.type == "categorical" for f in feats), 1)
    extra = EVENT_BYTES_CBPE if model.performance_estimation.enabled else 0
    extra += EVENT_BYTES_OUTLIER if model.outliers.enabled else 0
    extra += EVENT_BYTES_ATTRIBUTION * len(model.features) if model.attributions.enabled else 0
    return max_events * (EVENT_BYTES_FIXED + EVENT_BYTES_NUMERICAL * n_num + EVENT_BYTES_CATEGORICAL * n_cat + extra)


def machine_memory_bytes() -> int | None:
    """Physical memory, or the cgroup (container) limit when lower; None when unknown."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            limits.append(int(text))
    return min(limits) if limits else None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def prepare(cfg: Config, memory_bytes: int | None = None) -> list[ConfigWarning]:
    """Complete and check ``cfg`` in place (module docs); raises ConfigError."""
    src = cfg.source or None
    warnings: list[ConfigWarning] = []
    sim = cfg.simulator
    if sim.enabled and cfg.model(sim.model) is None:
        cfg.models.append(demo_model_config(sim.model))
    if not cfg.models:
        raise ConfigError("no model configured: list your models under models: (or enable simulator:)",
                          file=src, field_path="models")
    total = sum(window_bytes(m, w.max_events) for m in cfg.models for w in cfg.windows)
    limit = machine_memory_bytes() if memory_bytes is None else memory_bytes
    if limit:
        where = f"{len(cfg.models)} model(s) x {len(cfg.windows)} window(s)"
        if total > limit:
            raise ConfigError(f"the windows need {_gib(total)} at start-up ({where}), more than this machine's "
                              f"{_gib(limit)}: lower max_events", file=src, field_path="windows")
        if total > MEMORY_WARN_SHARE * limit:
            warnings.append(ConfigWarning(f"the windows need {_gib(total)} at start-up ({where}), over half of "
                                          f"this machine's {_gib(limit)}", file=src, field_path="windows"))
    check_sources(cfg)  # the enabled sources' own sections (proxy)
    validate_logs_config(cfg)
    if cfg.ingest.enabled:
        read_token(cfg)
    web_security(cfg)  # loads certificates and checks password hashes, as serve does
    return warnings


def load_profiles(cfg: Config) -> dict[str, ReferenceProfile | None]:
    """Every model's reference profile, as serve loads them; raises ConfigError."""
    return {m.name: load_profile(cfg, i, m) for i, m in enumerate(cfg.models)}
