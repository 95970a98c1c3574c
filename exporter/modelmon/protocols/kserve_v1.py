"""KServe's v1 prediction protocol (also TensorFlow Serving's REST row format).

Request and response::

    {"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}      -> {"predictions": [1, 1]}
    {"instances": [{"age": 39, "income": 5200.0}]}                   -> {"predictions": [0]}

``instances`` (or ``inputs``) is a list of rows: a list is read by position
(the mapping's ``columns``, by default the model's features in config order),
an object by feature name, a bare value is the only feature.  ``inputs`` as an
object of columns (TensorFlow Serving's columnar form) is read by name too.
Each element of ``predictions`` is one row's output: a value is the
prediction; a list of numbers is class probabilities (classification): the
prediction is the most likely class index and the score the probability at
index ``positive_class``.

The protocol has no model version and no error body of its own: the version
comes from the proxy's configuration or the CloudEvent's endpoint, errors
from the HTTP status.
"""

from __future__ import annotations

import json
from typing import Any

from . import Mapping, ProtocolError, build_events


def _document(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", "body must be a JSON object")
    return doc


def looks_like_request(doc: Any) -> bool:
    if not isinstance(doc, dict):
        return False
    rows = doc.get("instances", doc.get("inputs"))
    return isinstance(rows, (list, dict))


def looks_like_response(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("predictions"), list)


def request_features(mapping: Mapping, doc: dict[str, Any]) -> tuple[int, dict[str, list[Any]]]:
    """(rows, feature -> one value per row) of a parsed request."""
    rows = doc.get("instances", doc.get("inputs"))
    names = [n for n in mapping.feature_types]
    if isinstance(rows, dict):  # columnar: {"inputs": {"age": [...], ...}}
        cols = {n: rows[n] for n in names if isinstance(rows.get(n), list)}
        lengths = {len(c) for c in cols.values()}
        if len(lengths) > 1:
            raise ProtocolError("shape_mismatch", f"columns of different lengths {sorted(lengths)}")
        return (lengths.pop() if lengths else 1), cols
    if not isinstance(rows, list):
        raise ProtocolError("malformed", "instances: must be an array of rows")
    positions = mapping.row_columns
    cols = {n: [None] * len(rows) for n in names}
    for i, row in enumerate(rows):
        if isinstance(row, dict):
            for n in names:
                if n in row:
                    cols[n][i] = row[n]
        elif isinstance(row, list):
            if len(row) != len(positions):
                raise ProtocolError("shape_mismatch",
                                    f"instances[{i}]: {len(row)} values for {len(positions)} columns")
            for n, v in zip(positions, row, strict=True):
                if n in cols:
                    cols[n][i] = v
        elif len(names) == 1:
            cols[names[0]][i] = row
        else:
            raise ProtocolError("malformed", f"instances[{i}]: a row must be an array or an object")
    return len(rows), cols


def response_outputs(mapping: Mapping, doc: dict[str, Any]) -> tuple[list[Any], list[dict[str, float] | None] | None]:
    """(predictions, probabilities) of a parsed response."""
    preds = doc.get("predictions")
    if not isinstance(preds, list):
        raise ProtocolError("malformed", "predictions: required (an array, one element per row)")
    out: list[Any] = []
    probs: list[dict[str, float] | None] = []
    for p in preds:
        if isinstance(p, list) and mapping.classification and p and all(type(v) in (int, float) for v in p):
            best = max(range(len(p)), key=p.__getitem__)
            out.append(best)
            probs.append({str(k): float(v) for k, v in enumerate(p)})
        else:
            out.append(p if type(p) in (str, int, float, bool) else None)
            probs.append(None)
    return out, (probs if any(v is not None for v in probs) else None)


def extract(mapping: Mapping, request: bytes | None, response: bytes | None, base: dict[str, Any], *,
            status: int | None = None, **_: Any) -> tuple[list[dict[str, Any]], list[ProtocolError]]:
    """The events of one exchange and the problems met (see :func:`modelmon.protocols.oip_v2.extract`)."""
    problems: list[ProtocolError] = []
    base = dict(base)
    if status is not None and not 200 <= status < 300:
        base.setdefault("error", "invalid_request" if 400 <= status < 500 else "error")
        response = None  # an error body has no predictions
    n: int | None = None
    feats: dict[str, list[Any]] = {}
    if request is not None:
        try:
            n, feats = request_features(mapping, _document(request))
        except ProtocolError as exc:
            problems.append(exc)
    preds = probs = None
    if response is not None:
        try:
            preds, probs = response_outputs(mapping, _document(response))
        except ProtocolError as exc:
            problems.append(exc)
    if n is None:
        n = len(preds) if preds is not None else 1
    elif preds is not None and len(preds) != n:
        problems.append(ProtocolError("shape_mismatch", f"{n} instances but {len(preds)} predictions"))
        preds = probs = None
    if n == 0:
        return [], problems
    return build_events(mapping, feats, preds, None, n, base, probabilities=probs), problems
