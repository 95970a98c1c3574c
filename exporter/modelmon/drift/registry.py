"""Maps a method's config name to its implementation.

Method modules register themselves on import (the :mod:`modelmon.drift`
package imports them all, so every import of this module sees them);
:func:`names` lists what a config may name, so config validation and
``modelmon drift --method`` agree.
"""

from __future__ import annotations

from .base import DriftMethod

_METHODS: dict[str, DriftMethod] = {}


def register(method_cls: type[DriftMethod]) -> type[DriftMethod]:
    """Class decorator: make a method available under ``method_cls.name``."""
    _METHODS[method_cls.name] = method_cls()
    return method_cls


def get(name: str) -> DriftMethod:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown drift method {name!r} (known: {', '.join(names())})") from None


def names() -> list[str]:
    return sorted(_METHODS)
