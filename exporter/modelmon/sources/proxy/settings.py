"""Cross-field checks of the ``proxy`` config section and the model it serves."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ...config import Config, ConfigError, ModelConfig, listen_address, validate_protocol_mapping
from .paths import JsonPath, PathError


def proxy_model(cfg: Config) -> ModelConfig | None:
    """The model behind the proxy: ``proxy.model``, else the only configured model."""
    if cfg.proxy.model:
        return cfg.model(cfg.proxy.model)
    return cfg.models[0] if len(cfg.models) == 1 else None


def validate_proxy_config(cfg: Config) -> None:
    """Cross-field checks of the ``proxy`` section (called by the config loader and the CLI)."""
    p = cfg.proxy
    if not p.listen_address:
        raise ConfigError("required when proxy.upstream is set", field_path="proxy.listen_address")
    try:
        listen_address(p.listen_address)
    except ValueError as exc:
        raise ConfigError(str(exc), field_path="proxy.listen_address") from None
    if not p.upstream:
        raise ConfigError("required: the model server's URL, e.g. http://127.0.0.1:8080", field_path="proxy.upstream")
    u = urlsplit(p.upstream)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise ConfigError("must be an http:// or https:// URL with a host", field_path="proxy.upstream")
    try:
        _ = u.port
    except ValueError:
        raise ConfigError("invalid port", field_path="proxy.upstream") from None
    if u.query or u.fragment:
        raise ConfigError("must not have a query or fragment (the client's path and query are appended)",
                          field_path="proxy.upstream")
    if p.model and cfg.model(p.model) is None:
        raise ConfigError(f"unknown model {p.model!r} (not in models)", field_path="proxy.model")
    model = proxy_model(cfg)
    if model is None:
        raise ConfigError("required when several models are configured", field_path="proxy.model")
    validate_protocol_mapping(model, p.protocol, p.columns, p.features, p.prediction, p.score, "proxy")
    if p.protocol != "json":  # features, prediction and score are tensor selectors, checked above
        for key in ("id", "attributions"):
            if getattr(p, key):
                raise ConfigError("only with protocol json (dotted paths)", field_path=f"proxy.{key}")
        return
    known = {f.name for f in model.features} | ({model.fairness.attribute} if model.fairness.attribute else set())
    for name, path in p.features.items():
        if name not in known:
            raise ConfigError(f"not a feature of model {model.name!r}", field_path=f"proxy.features.{name}")
        compile_path(path, f"proxy.features.{name}")
    for name, path in p.attributions.items():
        if model.feature(name) is None:
            raise ConfigError(f"not a feature of model {model.name!r}", field_path=f"proxy.attributions.{name}")
        compile_path(path, f"proxy.attributions.{name}")
    for key in ("id", "prediction", "score"):
        if getattr(p, key):
            compile_path(getattr(p, key), f"proxy.{key}")


def compile_path(path: Any, field_path: str) -> JsonPath:
    """``path`` compiled, or a :class:`ConfigError` naming ``field_path``."""
    if not isinstance(path, str):
        raise ConfigError("must be a dotted path string such as instances[*].age", field_path=field_path)
    try:
        return JsonPath(path)
    except PathError as exc:
        raise ConfigError(str(exc), field_path=field_path) from None
