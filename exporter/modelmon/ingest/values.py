"""Checks and canonical forms of single values (used by item validation and the proxy)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from ..labelsafe import ItemError, check_label, label_string


def canonical_class(value: Any, field_name: str = "prediction") -> str | None:
    """A class value as the string the monitor compares.

    JSON has several spellings of one class: ``1``, ``1.0`` and ``true`` are
    the class ``"1"`` (``false`` is ``"0"``), so that ``positive_class: "1"``
    matches whichever a model emits.
    """
    if value is None:
        return None
    t = type(value)
    if t is str:
        return check_label(value, field_name)
    if t is bool:
        return "1" if value else "0"
    if t is int:
        return label_string(value, field_name)
    if t is float:
        if not math.isfinite(value):
            raise ItemError("non_finite", f"{field_name}: must be finite")
        return check_label(str(int(value)) if value.is_integer() else repr(value), field_name)
    raise ItemError("invalid_field", f"{field_name}: must be a string, number or boolean")


def finite_number(value: Any, field_name: str) -> float:
    """A JSON number as a finite float (``non_finite`` / ``invalid_field`` otherwise)."""
    t = type(value)
    if t is float:
        if value - value != 0.0:  # NaN or +-inf
            raise ItemError("non_finite", f"{field_name}: must be finite")
        return value
    if t is int:
        try:
            return float(value)
        except OverflowError:
            raise ItemError("non_finite", f"{field_name}: must be finite") from None
    raise ItemError("invalid_field", f"{field_name}: must be a number")


def regression_value(value: Any, field_name: str) -> float | None:
    return None if value is None else finite_number(value, field_name)


def timestamp(value: Any, now: float) -> float:
    """Seconds since the epoch from a number or an ISO 8601 string (UTC when it has no
    offset); ``now`` when absent.  Times before the epoch are refused in either spelling."""
    if value is None:
        return now
    if type(value) is str:
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            raise ItemError("invalid_field", "timestamp: must be seconds since the epoch or an ISO 8601 time") from None
        if when.tzinfo is None:  # no offset: UTC, never the exporter's local time zone
            when = when.replace(tzinfo=UTC)
        try:
            ts = when.timestamp()
        except (OverflowError, ValueError):
            raise ItemError("invalid_field", "timestamp: must be after 1970-01-01T00:00:00Z") from None
        if ts < 0:
            raise ItemError("invalid_field", "timestamp: must be after 1970-01-01T00:00:00Z")
        return ts
    ts = finite_number(value, "timestamp")
    if ts < 0:
        raise ItemError("invalid_field", "timestamp: must be seconds since the epoch")
    return ts


def category(value: Any, field_name: str) -> str | None:
    """A categorical value (or fairness group) as a label-safe string; numbers and booleans spelled out."""
    if value is None:
        return None
    t = type(value)
    if t is str:
        return check_label(value, field_name)
    if t is bool:
        return "true" if value else "false"
    if t is int or t is float:
        return canonical_class(value, field_name)
    raise ItemError("invalid_field", f"{field_name}: must be a string, number, boolean or null")
