"""Tensor selectors of the Open Inference Protocol mapping: ``input0`` (a whole
one-column tensor) or ``input0[:, 3]`` (column 3 of a two-dimensional one).

Kept apart from :mod:`.oip_v2` (which needs numpy to decode tensors) because
the config validates selectors, and loading the config must stay light
(``modelmon --help`` loads no numpy)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SELECTOR_RE = re.compile(r"^\s*(?P<name>[^\[\]\s][^\[\]]*?)\s*(?:\[\s*:\s*,\s*(?P<col>\d+)\s*\])?\s*$")


@dataclass(frozen=True)
class Selector:
    """``name`` (a whole one-column tensor) or ``name[:, j]`` (column j of a two-dimensional tensor)."""

    tensor: str
    column: int | None = None


def parse_selector(text: str) -> Selector:
    """Parse ``input0`` or ``input0[:, 3]``; raises ValueError naming the problem."""
    m = _SELECTOR_RE.match(text or "")
    if m is None:
        raise ValueError(f"invalid tensor selector {text!r} (expected NAME or NAME[:, COLUMN])")
    col = m.group("col")
    return Selector(m.group("name"), int(col) if col is not None else None)
