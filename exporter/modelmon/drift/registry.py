"""Maps a method's config name to its implementation.

Method modules register themselves on import; :func:`names` lists what a config
may name, so config validation and ``modelmon drift --method`` agree.
"""

from __future__ import annotations

from .base import DriftMethod

_METHODS: dict[str, DriftMethod] = {}


def register(method_cls: type[DriftMethod]) -> type[DriftMethod]:
    """Class decorator: make a method available under ``method_cls.name``."""
    _METHODS[method_cls.name] = method_cls()
    return method_cls


def get(name: str) -> DriftMethod:
    _load()
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown drift method {name!r} (known: {', '.join(names())})") from None


def names() -> list[str]:
    _load()
    return sorted(_METHODS)


def _load() -> None:
    # Lazy: the method modules load numpy, and importing anything from modelmon.drift (the catalogue
    # config validation and ``modelmon --help`` read) must not.
    from . import methods  # noqa: F401, PLC0415  (imports, so registers, every method module)
