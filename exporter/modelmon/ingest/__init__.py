"""The ingest schema: what every source does between bytes on the wire and an
:class:`~modelmon.events.EventBatch` handed to the pipeline.

``body bytes -> decode_items() -> DecodedBody -> EventValidator.validate() -> ValidatedEvents``

Public API (sources import from ``modelmon.ingest`` only):

Body decoding (:mod:`.body`)
    ``decode_items(body, encoding, limits=BodyLimits()) -> DecodedBody``
        Undoes ``Content-Encoding`` (gzip, deflate, identity) within
        ``limits.max_bytes`` (decompression bombs stop there) and recognises a
        JSON array, one (pretty-printed) object or NDJSON.  Raises
        ``UnsupportedEncoding`` (answer 415), ``BodyTooLarge`` (413) or
        ``BodyError`` (400); all three are ``BodyError`` subclasses.
    ``DecodedBody.items() -> list``
        Each item as Python values; an NDJSON line that is not JSON, or an item
        nested deeper than ``limits.max_depth``, is a ``Malformed(message)``
        entry so its neighbours are kept.  Raises ``BodyError`` when nothing is
        readable (a broken JSON array, no valid NDJSON line).
    ``loads(data)``
        JSON to Python values (msgspec, with the standard library as fallback
        so ``NaN`` becomes a value the checks refuse as ``non_finite``).

Item validation (:mod:`.validate`, :mod:`.schema`)
    ``EventValidator(models, unknown_feature="ignore", clock=time.time)``
        ``.validate(decoded, source) -> ValidatedEvents`` decodes the whole
        body with the models' typed msgspec structs in one pass when it fits,
        else item by item; ``.validate_items(items, source)`` takes Python
        values.  ``ValidatedEvents`` has ``batches`` (one ``EventBatch`` per
        model), ``rejected`` (``Rejection(index, reason, message)``, reasons
        from ``pipeline.REJECT_REASONS``), ``unknown_models``,
        ``unknown_features`` and ``accepted``.
    ``ItemValidator(model_cfg, source, unknown_feature="ignore")``
        One model's events: ``.add(item_dict, now)`` raises ``ItemError``
        (``.reason``, message naming the field) and leaves it unchanged;
        ``.batch() -> EventBatch``.  For sources that build items themselves
        (the reverse proxy).

Label safety (:mod:`modelmon.labelsafe`) -- the one rule for every string that can become a label value
    ``check_label(value, field) -> str`` / ``label_string(value, field) -> str``
        Valid UTF-8 without lone surrogates, at most ``MAX_LABEL_LENGTH``
        characters; ``label_string`` also takes integers (a 4000-digit
        integer is refused like a 4000-character string).  Raise ``ItemError``
        with reason ``invalid_field``.  ``is_label_safe(value) -> bool``.

Single values (:mod:`.values`)
    ``canonical_class``, ``finite_number``, ``regression_value``, ``timestamp``, ``category``.
"""

from ..labelsafe import (
    MAX_LABEL_LENGTH,
    ItemError,
    check_label,
    is_label_safe,
    label_problem,
    label_string,
    shown_name,
)
from .body import (
    DEFAULT_MAX_DEPTH,
    BodyError,
    BodyLimits,
    BodyTooLarge,
    DecodedBody,
    Malformed,
    UnsupportedEncoding,
    decode_items,
    loads,
)
from .validate import (
    EVENT_FIELDS,
    EventValidator,
    ItemValidator,
    Rejection,
    ValidatedEvents,
)
from .values import (
    canonical_class,
    category,
    finite_number,
    regression_value,
    timestamp,
)

__all__ = [
    "DEFAULT_MAX_DEPTH", "EVENT_FIELDS", "MAX_LABEL_LENGTH", "BodyError", "BodyLimits", "BodyTooLarge", "DecodedBody",
    "EventValidator", "ItemError", "ItemValidator", "Malformed", "Rejection", "UnsupportedEncoding", "ValidatedEvents",
    "canonical_class", "category", "check_label", "decode_items", "finite_number", "is_label_safe", "label_problem",
    "label_string", "loads", "regression_value", "shown_name", "timestamp",
]
