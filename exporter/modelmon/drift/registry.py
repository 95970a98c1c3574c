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
    from . import methods  # noqa: F401  (imports every method module)
