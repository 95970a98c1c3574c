"""Request bodies: content encodings, JSON array / single object / NDJSON, limits.

:func:`decode_items` undoes ``Content-Encoding`` (``gzip``, ``deflate``,
``identity``) without ever holding more than ``limits.max_bytes`` decoded
bytes (a decompression bomb is a :class:`BodyTooLarge`), and recognises the
body's form.  It does not parse the JSON yet: :meth:`DecodedBody.json_array`
gives the whole body as one JSON array text for a typed decoder to read in
one pass, and :meth:`DecodedBody.items` parses item by item when that fails,
so that one bad NDJSON line, or one item nested deeper than
``limits.max_depth``, is a :class:`Malformed` entry while its neighbours are
kept.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from typing import Any

import msgspec

#: Nesting allowed inside one item (an event needs 3: the object, ``features``/``attributes``, a value).
DEFAULT_MAX_DEPTH = 32


class BodyError(ValueError):
    """The body as a whole cannot be read (answered with one 400, counted as ``malformed``)."""


class UnsupportedEncoding(BodyError):
    """A ``Content-Encoding`` other than gzip, deflate or identity (415)."""

    def __init__(self, encoding: str):
        super().__init__(f"unsupported Content-Encoding {encoding} (use gzip, deflate or none)")
        self.encoding = encoding


class BodyTooLarge(BodyError):
    """The decoded body exceeds the limit (413, counted as ``body_too_large``)."""


@dataclass(frozen=True)
class BodyLimits:
    """Bounds on one request body."""

    max_bytes: int = 10 * 1024 * 1024
    max_depth: int = DEFAULT_MAX_DEPTH


@dataclass(frozen=True)
class Malformed:
    """An item that is not readable JSON (an NDJSON line, or one too deeply nested)."""

    message: str


_generic = msgspec.json.Decoder()
UTF8_BOM = b"\xef\xbb\xbf"
#: Byte-order marks of the encodings JSON text must not arrive in (RFC 8259 section 8.1: UTF-8 only).
_OTHER_BOMS = ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"),
               (b"\xfe\xff", "UTF-16"), (b"\xff\xfe", "UTF-16"))
#: Longest integer literal turned into a Python int; longer ones become a float (infinite past
#: 308 digits), which the item checks refuse as ``non_finite`` or a wrong type, instead of the
#: interpreter's int-conversion limit failing the whole body.
_MAX_INT_DIGITS = 1000


def _parse_int(text: str) -> int | float:
    return int(text) if len(text) <= _MAX_INT_DIGITS else float(text)


def loads(data: bytes | str) -> Any:
    """JSON text to Python values, msgspec first; the standard library when msgspec
    refuses, so NaN / Infinity literals and 1e999 become values the item checks
    refuse as ``non_finite`` (and lone surrogates values refused by the label rule).

    Raises ``ValueError`` for text that is not JSON and ``RecursionError`` for
    nesting beyond the interpreter's limit.
    """
    try:
        return _generic.decode(data)
    except msgspec.DecodeError:
        pass
    if isinstance(data, bytes):  # the standard library would guess UTF-16/32 and accept a BOM: UTF-8 only
        data = data.decode("utf-8")
    return json.loads(data, parse_int=_parse_int)


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """True when ``value`` nests lists/objects more than ``limit`` levels deep."""
    stack = [(value, 1)]
    children: Any
    while stack:
        v, d = stack.pop()
        if type(v) is dict:
            children = v.values()
        elif type(v) is list:
            children = v
        else:
            continue
        if d > limit:
            return True
        stack.extend((c, d + 1) for c in children if type(c) is dict or type(c) is list)
    return False


def _parse_one(text: bytes, limits: BodyLimits, where: str) -> Any:
    try:
        value = loads(text)
    except RecursionError:
        return Malformed(f"{where}nested deeper than {limits.max_depth} levels")
    except ValueError as exc:
        return Malformed(f"{where}invalid JSON: {exc}")
    if json_depth_exceeds(value, limits.max_depth):
        return Malformed(f"{where}nested deeper than {limits.max_depth} levels")
    return value


@dataclass
class DecodedBody:
    """A request body, decoded but not yet parsed: see the module docstring."""

    #: The decoded body text.
    data: bytes
    #: ``"array"`` (one JSON array), ``"object"`` (one possibly pretty-printed object) or ``"ndjson"``.
    form: str
    limits: BodyLimits = field(default_factory=BodyLimits)
    _lines: list[tuple[int, bytes]] | None = None
    _items: list[Any] | None = None

    def lines(self) -> list[tuple[int, bytes]]:
        """NDJSON: (line number, text) of every non-blank line."""
        if self._lines is None:
            self._lines = [(n, line) for n, line in enumerate(self.data.split(b"\n"), start=1) if line.strip()]
        return self._lines

    def json_array(self) -> bytes:
        """The body as one JSON array of its items (for a typed decoder's single pass)."""
        if self.form == "array":
            return self.data
        if self.form == "object":
            return b"[" + self.data + b"]"
        return b"[" + b",".join(line for _, line in self.lines()) + b"]"

    def items(self) -> list[Any]:
        """Each item as Python values, or a :class:`Malformed` entry for one that cannot be read.

        Raises :class:`BodyError` when the body as a whole is not JSON (a broken
        array) or when no NDJSON line is.
        """
        if self._items is not None:
            return self._items
        limits = self.limits
        if self.form == "array":
            try:
                items = loads(self.data)
            except RecursionError:
                raise BodyError(f"invalid JSON: nested deeper than {limits.max_depth} levels") from None
            except ValueError as exc:
                raise BodyError(f"invalid JSON: {exc}") from None
            if not isinstance(items, list):
                raise BodyError("expected a JSON array of objects or NDJSON")
            out = [Malformed(f"item {i}: nested deeper than {limits.max_depth} levels")
                   if json_depth_exceeds(v, limits.max_depth) else v for i, v in enumerate(items)]
        elif self.form == "object":
            out = [_parse_one(self.data, limits, "")]
        else:
            out = [_parse_one(line, limits, f"line {n}: ") for n, line in self.lines()]
            if out and all(isinstance(i, Malformed) for i in out):
                raise BodyError(f"expected a JSON array of objects or NDJSON ({out[0].message})")
        self._items = out
        return out


def decompress(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip`` / ``deflate`` without ever holding more than ``limit`` bytes."""
    encoding = (encoding or "").strip().lower()
    if not encoding or encoding == "identity":
        if len(raw) > limit:
            raise BodyTooLarge(f"body larger than {limit} bytes")
        return raw
    if encoding not in ("gzip", "deflate"):
        raise UnsupportedEncoding(encoding)
    if encoding == "deflate" and raw[:1] and (raw[0] & 0x0F != 8 or int.from_bytes(raw[:2], "big") % 31):
        wbits = -zlib.MAX_WBITS  # no zlib header: raw deflate, as some clients send for "deflate"
    else:
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    parts: list[bytes] = []
    size = 0
    rest = raw
    while True:  # gzip allows several members one after the other (RFC 1952 section 2.2)
        d = zlib.decompressobj(wbits)
        try:
            out = d.decompress(rest, limit + 1 - size)
        except zlib.error as exc:
            raise BodyError(f"invalid {encoding} body: {exc}") from None
        size += len(out)
        parts.append(out)
        if size > limit or d.unconsumed_tail:
            raise BodyTooLarge(f"decoded body larger than {limit} bytes")
        if not d.eof:  # the stream stops early: its events would be lost without a word
            raise BodyError(f"truncated {encoding} body (the compressed stream does not end)")
        rest = d.unused_data
        if not rest or encoding != "gzip":
            break
    if rest:
        raise BodyError(f"invalid {encoding} body: {len(rest)} bytes after the end of the compressed stream")
    return b"".join(parts)


def decode_items(body: bytes, encoding: str | None = None, limits: BodyLimits = BodyLimits()) -> DecodedBody:
    """Decode a request body and recognise its form (JSON array, one object, NDJSON).

    A UTF-8 byte-order mark is skipped; a body in UTF-16 or UTF-32 is refused
    as a whole (JSON travels as UTF-8).

    Raises :class:`UnsupportedEncoding`, :class:`BodyTooLarge` or :class:`BodyError`
    (empty body, broken compression, not UTF-8).
    """
    data = decompress(body, encoding, limits.max_bytes)
    data = data.removeprefix(UTF8_BOM)
    for bom, name in _OTHER_BOMS:
        if data.startswith(bom):
            raise BodyError(f"body is {name} text: send JSON encoded as UTF-8")
    if b"\x00" in data[:4]:  # UTF-16/32 without a byte-order mark: JSON's first character is ASCII
        raise BodyError("body is not UTF-8 text (NUL bytes): send JSON encoded as UTF-8")
    text = data.lstrip()
    if not text:
        raise BodyError("empty body: expected a JSON array of objects or NDJSON")
    if text[:1] == b"[":
        return DecodedBody(data, "array", limits)
    if text[:1] == b"{":
        try:  # one (possibly pretty-printed) object, or NDJSON of several
            obj = loads(data)
        except (ValueError, RecursionError):
            obj = None
        if isinstance(obj, dict):
            return DecodedBody(data, "object", limits)
    return DecodedBody(data, "ndjson", limits)
