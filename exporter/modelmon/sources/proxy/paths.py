"""Dotted paths into JSON documents: where the proxy finds features and predictions.

::

    inputs[0]            instances[*].age        outputs.label       predictions[*]

A ``[*]`` takes every element of a list (a batch prediction request makes one
event per element).
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["WILDCARD", "JsonPath", "PathError"]

_MISSING = object()
WILDCARD = "*"
_STEP_RE = re.compile(r"\.?([^.\[\]]+)|\[(\d+|\*)\]")


class PathError(ValueError):
    """A path that does not parse (the message names the character)."""


class JsonPath:
    """A compiled dotted path: ``a.b[0].c``, ``instances[*].age``, ``[*].x``.

    Names are object keys (a name made of digits also indexes a list),
    ``[n]`` indexes a list and ``[*]`` takes every element.
    """

    def __init__(self, text: str):
        self.text = text
        steps: list[str | int] = []
        pos = 0
        text = text.strip()
        if not text:
            raise PathError("empty path")
        while pos < len(text):
            m = _STEP_RE.match(text, pos)
            if m is None or (pos == 0 and m.group(0).startswith(".")):
                raise PathError(f"invalid path {self.text!r} at character {pos + 1}")
            if m.group(1) is not None:
                steps.append(m.group(1))
            else:
                steps.append(WILDCARD if m.group(2) == "*" else int(m.group(2)))
            pos = m.end()
        self.steps = steps
        self.wildcard = WILDCARD in steps
        self._first_wildcard = steps.index(WILDCARD) if self.wildcard else len(steps)

    def __repr__(self) -> str:
        return f"JsonPath({self.text!r})"

    def extract(self, doc: Any) -> Any:
        """The value at the path (or ``None``); with ``[*]``, the list of values (``None`` where absent)."""
        if self.wildcard:
            out: list[Any] = []
            self._walk(doc, 0, out)
            return out
        v = self._get(doc, 0)
        return None if v is _MISSING else v

    def _get(self, node: Any, i: int) -> Any:
        for step in self.steps[i:]:
            node = _step(node, step)
            if node is _MISSING:
                return _MISSING
        return node

    def _walk(self, node: Any, i: int, out: list[Any]) -> None:
        steps = self.steps
        while i < len(steps):
            step = steps[i]
            if step == WILDCARD:
                if isinstance(node, list):
                    for item in node:
                        self._walk(item, i + 1, out)
                return
            node = _step(node, step)
            if node is _MISSING:
                if i > self._first_wildcard:  # an element lacks it: keep the slot
                    out.append(None)
                return
            i += 1
        out.append(node)


def _step(node: Any, step: str | int) -> Any:
    if isinstance(node, dict):
        return node.get(step, _MISSING) if isinstance(step, str) else _MISSING
    if isinstance(node, list):
        if isinstance(step, str):
            if not step.isdigit():
                return _MISSING
            step = int(step)
        return node[step] if step < len(node) else _MISSING
    return _MISSING
