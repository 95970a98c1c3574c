"""The one rule for strings that may become Prometheus label values.

Every such string (model, version, error reason, fairness group, class
values, categories, ids) must be valid UTF-8 with no lone surrogates and at
most :data:`MAX_LABEL_LENGTH` characters, whatever JSON type it arrived as: an
integer version is turned into its decimal string and held to the same bound,
so a 4000-digit number is refused like a 4000-character string.

A lone surrogate (``"\\ud800"`` in JSON, or a non-UTF-8 byte decoded with
``surrogateescape`` from an environment variable) would otherwise be stored,
and every later ``/metrics`` would fail to encode it.
"""

from __future__ import annotations

from typing import Any

#: Longest string accepted for a value that can become a label (ids, versions, errors, classes, categories).
MAX_LABEL_LENGTH = 256
_INT_BOUND = 10**MAX_LABEL_LENGTH  # integers with more digits than that are refused before str()


class ItemError(ValueError):
    """One item refused: a reason from ``pipeline.REJECT_REASONS`` and a message naming the field."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def label_problem(value: str) -> str | None:
    """Why ``value`` cannot be a label value, or None when it can."""
    if len(value) > MAX_LABEL_LENGTH:
        return f"longer than {MAX_LABEL_LENGTH} characters"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid UTF-8 (lone surrogate)"
    return None


def is_label_safe(value: str) -> bool:
    """True when ``value`` is valid UTF-8 and short enough to be a label value."""
    return label_problem(value) is None


def check_label(value: str, field_name: str) -> str:
    """``value`` when it may become a label value, else :class:`ItemError` naming ``field_name``."""
    problem = label_problem(value)
    if problem is not None:
        raise ItemError("invalid_field", f"{field_name}: {problem}")
    return value


def label_string(value: Any, field_name: str) -> str:
    """A string or integer as a label-safe string (``invalid_field`` otherwise)."""
    t = type(value)
    if t is str:
        return check_label(value, field_name)
    if t is int:
        if not -_INT_BOUND < value < _INT_BOUND:
            raise ItemError("invalid_field", f"{field_name}: longer than {MAX_LABEL_LENGTH} characters")
        return str(value)
    raise ItemError("invalid_field", f"{field_name}: must be a string")


#: Longest user-supplied name (an unknown field or feature) repeated in an error message.
MAX_SHOWN_NAME = 64


def shown_name(name: str) -> str:
    """A user-supplied name as an error message may repeat it: at most
    :data:`MAX_SHOWN_NAME` characters (then ``...``), lone surrogates as ``\\udXXX``
    escapes, so that a 100 kB key does not come back twice in every refusal."""
    short = name if len(name) <= MAX_SHOWN_NAME else name[:MAX_SHOWN_NAME] + "..."
    return short.encode("utf-8", "backslashreplace").decode("utf-8")
