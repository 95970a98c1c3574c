"""The request header fields the ingestion routes and the proxy check before a body.

``Content-Type`` (RFC 9110 section 8.3.1): ``type/subtype`` and ``;``-separated
``name=value`` parameters, values plain or quoted.  The ingestion routes read
bodies as UTF-8 JSON, so a ``charset`` parameter naming anything else is refused
up front instead of failing later as a decode error; parameters that cannot be
parsed (``;;``, ``=x``, a name without ``=``) are skipped, never an exception.

``Expect`` (RFC 9110 section 10.1.1): ``100-continue`` is the only expectation
defined; a server may answer any other with 417.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

#: ``charset`` values that name UTF-8 (compared lower-cased, after unquoting).
UTF8_NAMES = frozenset({"utf-8", "utf8"})
#: Longest header excerpt quoted back in an error message.
SHOWN = 64


class MediaType(NamedTuple):
    """A parsed ``Content-Type``: the lower-cased type and its parameters in order
    (names lower-cased, values unquoted)."""

    type: str
    params: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        """Every value of parameter ``name`` (a repeated parameter is not collapsed)."""
        return [v for k, v in self.params if k == name]


def _split_outside_quotes(text: str) -> list[str]:
    """``text`` split at ``;`` that are not inside a quoted string (a backslash escapes inside one)."""
    parts: list[str] = []
    start, quoted, escaped = 0, False, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and ch == "\\":
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ";" and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out, escaped = [], False
        for ch in value[1:-1]:
            if ch == "\\" and not escaped:
                escaped = True
                continue
            out.append(ch)
            escaped = False
        return "".join(out)
    return value


def media_type(value: str | None) -> MediaType:
    """``value`` (a ``Content-Type`` field, or None) parsed; junk parameters are left out."""
    head, *rest = _split_outside_quotes(value or "")
    params = []
    for part in rest:
        name, eq, raw = part.partition("=")
        name = name.strip().lower()
        if not eq or not name:
            continue
        params.append((name, _unquote(raw)))
    return MediaType(head.strip().lower(), tuple(params))


def foreign_charset(mt: MediaType) -> str | None:
    """The first non-empty ``charset`` parameter that does not name UTF-8, else None
    (an empty ``charset=`` says nothing and is ignored)."""
    for value in mt.values("charset"):
        if value and value.strip().lower() not in UTF8_NAMES:
            return value
    return None


def shown(text: str) -> str:
    """``text`` cut to :data:`SHOWN` characters for an error message (a header may be 8 KiB)."""
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."


def unmet_expectation(values: Iterable[str]) -> str | None:
    """The first ``Expect`` member other than ``100-continue`` (any case) among the
    field's values, else None; empty members are ignored."""
    for value in values:
        for member in value.split(","):
            member = member.strip()
            if member and member.lower() != "100-continue":
                return member
    return None


def expects_continue(values: Iterable[str]) -> bool:
    """Whether the client waits for ``100 Continue`` before sending its body."""
    return any(m.strip().lower() == "100-continue" for v in values for m in v.split(","))
