"""The Open Inference Protocol (KServe v2, Triton, MLServer, Seldon Core 2).

A request carries typed tensors, a response the model's outputs::

    {"id": "42", "inputs": [{"name": "input0", "shape": [2, 2], "datatype": "FP32",
                             "data": [[1, 2], [3, 4]]}]}
    {"model_name": "m", "model_version": "3", "id": "42",
     "outputs": [{"name": "output0", "shape": [2], "datatype": "INT64", "data": [0, 1]}]}

``data`` is row-major, flat or nested; the first dimension is the batch, so a
tensor of shape ``[n, k]`` holds ``n`` rows.  Features are found

* by name: an input named like a feature is that feature (MLServer's
  ``"content_type": "pd"`` sends one input per DataFrame column);
* by selector: ``features: {income: "input0[:, 3]"}`` takes column 3 of ``input0``;
* by position: the columns of the first input tensor are the mapping's
  ``columns`` (the model's features in config order unless configured), when
  the tensor has exactly that many columns.

The prediction is the ``prediction`` selector or else the first output, the
score the ``score`` selector (``predict_proba[:, 1]``) or else column 1 of a
two-column ``predict_proba`` output (scikit-learn's, as MLServer names it).
The version is ``model_version``.  A response with an ``error`` member marks
every row as an error (``invalid_request`` for a 4xx status, else ``error``).

Triton's binary tensor extension (``Inference-Header-Content-Length: N``: the
first N bytes are the JSON, each tensor with ``"parameters":
{"binary_data_size": s}`` follows as s raw little-endian bytes, in order) is
decoded for every datatype; tensors in shared memory cannot be seen and are
refused as ``binary_unsupported``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import Mapping, ProtocolError, build_events
from .selectors import Selector, parse_selector

#: Fixed-width datatypes and their little-endian numpy dtypes (BF16 is decoded by hand).
DTYPES: dict[str, str] = {
    "BOOL": "|b1", "UINT8": "|u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "|i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "BF16": "<u2",
}
DATATYPES = frozenset(DTYPES) | {"BYTES"}
#: Output names whose column 1 is taken as the positive-class score when no ``score`` is configured.
PROBABILITY_OUTPUTS = ("predict_proba", "probabilities", "probability")

@dataclass
class Tensor:
    """One input or output tensor, its data not yet decoded."""

    name: str
    shape: tuple[int, ...]
    datatype: str
    data: Any = None
    raw: bytes | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: Held in the server's shared memory (Triton's extension): the data is not in the message.
    shared_memory: bool = False

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 1

    @property
    def width(self) -> int:
        """Values per row (the product of the non-batch dimensions)."""
        return math.prod(self.shape[1:]) if len(self.shape) > 1 else 1

    def values(self) -> np.ndarray:
        """The elements, flat and row-major (float64, bool or object for BYTES)."""
        size = math.prod(self.shape)
        if self.raw is not None:
            arr = _decode_raw(self.raw, self.datatype, size, self.name)
        else:
            arr = _decode_json(self.data, self.datatype, self.name)
        if arr.size != size:
            raise ProtocolError("shape_mismatch",
                                f"tensor {self.name!r}: {arr.size} values for shape {list(self.shape)}")
        return arr

    def column(self, index: int | None) -> list[Any]:
        """One Python value per row: the whole row when it is one value, else column ``index``."""
        if len(self.shape) > 2:
            raise ProtocolError("unsupported_shape",
                                f"tensor {self.name!r}: shape {list(self.shape)} has more than two dimensions")
        arr = self.values().reshape(self.rows, self.width)
        if index is None:
            if self.width != 1:
                raise ProtocolError("unsupported_shape",
                                    f"tensor {self.name!r}: {self.width} values per row; select one with {self.name}[:, N]")
            index = 0
        if index >= self.width:
            raise ProtocolError("shape_mismatch", f"tensor {self.name!r}: no column {index} (width {self.width})")
        return arr[:, index].tolist()

    def matrix(self) -> list[list[Any]]:
        if len(self.shape) > 2:
            raise ProtocolError("unsupported_shape",
                                f"tensor {self.name!r}: shape {list(self.shape)} has more than two dimensions")
        return self.values().reshape(self.rows, self.width).T.tolist()


def _decode_json(data: Any, datatype: str, name: str) -> np.ndarray:
    if not isinstance(data, list):
        raise ProtocolError("malformed", f"tensor {name!r}: data must be an array")
    flat = _flatten(data)
    if datatype == "BYTES":
        return np.array([v if type(v) is str else None for v in flat], dtype=object)
    if datatype == "BOOL":
        if not all(type(v) is bool for v in flat):
            raise ProtocolError("malformed", f"tensor {name!r}: BOOL data must be true or false")
        return np.array(flat, dtype=bool)
    if not all(type(v) in (int, float) for v in flat):
        raise ProtocolError("malformed", f"tensor {name!r}: {datatype} data must be numbers")
    return np.array(flat, dtype=np.float64)


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in data):
        return data
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _decode_raw(raw: bytes, datatype: str, size: int, name: str) -> np.ndarray:
    if datatype == "BYTES":
        out: list[Any] = []
        pos = 0
        while pos < len(raw):
            if pos + 4 > len(raw):
                raise ProtocolError("binary_unsupported", f"tensor {name!r}: truncated BYTES element")
            n = int.from_bytes(raw[pos:pos + 4], "little")
            item = raw[pos + 4:pos + 4 + n]
            if len(item) != n:
                raise ProtocolError("binary_unsupported", f"tensor {name!r}: truncated BYTES element")
            try:
                out.append(item.decode("utf-8"))
            except UnicodeDecodeError:
                out.append(None)
            pos += 4 + n
        return np.array(out, dtype=object)
    dtype = np.dtype(DTYPES[datatype])
    if len(raw) != size * dtype.itemsize:
        raise ProtocolError("binary_unsupported",
                            f"tensor {name!r}: {len(raw)} bytes for {size} {datatype} values")
    arr = np.frombuffer(raw, dtype=dtype)
    if datatype == "BF16":  # the upper half of an IEEE float32
        return (arr.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return arr if datatype == "BOOL" else arr.astype(np.float64)


def _tensors(items: Any, what: str, binary: memoryview | None) -> tuple[list[Tensor], int]:
    if not isinstance(items, list):
        raise ProtocolError("malformed", f"{what}: must be an array of tensors")
    out: list[Tensor] = []
    offset = 0
    for i, t in enumerate(items):
        if not isinstance(t, dict) or type(t.get("name")) is not str:
            raise ProtocolError("malformed", f"{what}[{i}]: must be an object with a name")
        name = t["name"]
        shape = t.get("shape")
        if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
            raise ProtocolError("malformed", f"{what}[{i}] ({name!r}): shape must be an array of non-negative integers")
        datatype = t.get("datatype")
        if type(datatype) is not str or datatype not in DATATYPES:
            raise ProtocolError("unsupported_datatype", f"{what}[{i}] ({name!r}): unknown datatype {str(datatype)[:32]!r}")
        params: dict[str, Any] = t["parameters"] if isinstance(t.get("parameters"), dict) else {}
        tensor = Tensor(name, tuple(shape), datatype, t.get("data"), None, params)
        tensor.shared_memory = "shared_memory_region" in params
        size = params.get("binary_data_size")
        if size is not None:
            if binary is None or type(size) is not int or size < 0 or offset + size > len(binary):
                raise ProtocolError("binary_unsupported",
                                    f"{what}[{i}] ({name!r}): binary_data_size {size!r} beyond the binary part of the body")
            tensor.raw = bytes(binary[offset:offset + size])
            offset += size
        out.append(tensor)
    return out, offset


def _document(body: bytes, json_length: int | None) -> tuple[dict[str, Any], memoryview | None]:
    if json_length is not None:
        if json_length < 0 or json_length > len(body):
            raise ProtocolError("binary_unsupported",
                                f"Inference-Header-Content-Length {json_length} exceeds the body ({len(body)} bytes)")
        head, binary = body[:json_length], memoryview(body)[json_length:]
    else:
        head, binary = body, None
    try:
        doc = json.loads(head)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ProtocolError("malformed", "body must be a JSON object")
    return doc, binary


@dataclass
class InferRequest:
    id: str | None
    inputs: list[Tensor]


@dataclass
class InferResponse:
    model_name: str | None
    model_version: str | None
    id: str | None
    outputs: list[Tensor]
    error: str | None = None


def _id(doc: dict[str, Any]) -> str | None:
    v = doc.get("id")
    return v if type(v) is str and v else None


def decode_request(body: bytes, json_length: int | None = None) -> InferRequest:
    """Parse an inference request (``json_length``: the binary extension's header value)."""
    doc, binary = _document(body, json_length)
    if "inputs" not in doc:
        raise ProtocolError("malformed", "inputs: required")
    inputs, _ = _tensors(doc["inputs"], "inputs", binary)
    return InferRequest(_id(doc), inputs)


def decode_response(body: bytes, json_length: int | None = None) -> InferResponse:
    """Parse an inference response or an ``{"error": ...}`` object."""
    doc, binary = _document(body, json_length)
    if "error" in doc and "outputs" not in doc:
        err = doc["error"]
        return InferResponse(None, None, None, [], str(err)[:256] if err is not None else "error")
    if "outputs" not in doc:
        raise ProtocolError("malformed", "outputs: required")
    outputs, _ = _tensors(doc["outputs"], "outputs", binary)
    version = doc.get("model_version")
    name = doc.get("model_name")
    return InferResponse(name if type(name) is str else None,
                         str(version) if type(version) in (str, int) and version != "" else None, _id(doc), outputs)


def looks_like_request(doc: Any) -> bool:
    """An OIP request: ``inputs`` is an array of objects with a ``datatype``."""
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(t, dict) and "datatype" in t for t in inputs)


def looks_like_response(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("outputs"), list)


# --------------------------------------------------------------------------- mapping to rows


def _use(tensor: Tensor, column: int | None) -> list[Any]:
    if tensor.shared_memory:
        raise ProtocolError("binary_unsupported", f"tensor {tensor.name!r} is in server shared memory")
    return tensor.column(column)


def request_features(mapping: Mapping, req: InferRequest) -> tuple[int, dict[str, list[Any]]]:
    """(rows, feature -> one value per row) from a request, as described in the module docstring."""
    by_name = {t.name: t for t in req.inputs}
    cols: dict[str, list[Any]] = {}
    for feature, text in mapping.features.items():
        sel = parse_selector(text)
        t = by_name.get(sel.tensor)
        if t is not None:
            cols[feature] = _use(t, sel.column)
    for feature in mapping.feature_types:
        if feature not in cols and feature in by_name:
            cols[feature] = _use(by_name[feature], None)
    if not cols and req.inputs:
        first = req.inputs[0]
        names = mapping.row_columns
        if names and len(first.shape) <= 2 and first.width == len(names) and not first.shared_memory:
            for name, col in zip(names, first.matrix(), strict=True):
                if name in mapping.feature_types:
                    cols[name] = col
    rows = {len(c) for c in cols.values()}
    if len(rows) > 1:
        raise ProtocolError("shape_mismatch", f"inputs have different batch sizes {sorted(rows)}")
    return (rows.pop() if rows else (req.inputs[0].rows if req.inputs else 1)), cols


def response_outputs(mapping: Mapping, resp: InferResponse) -> tuple[list[Any] | None, list[Any] | None]:
    """(predictions, scores), one per row, from a successful response."""
    by_name = {t.name: t for t in resp.outputs}
    preds = scores = None
    if mapping.prediction:
        sel = parse_selector(mapping.prediction)
        if sel.tensor in by_name:
            preds = _use(by_name[sel.tensor], sel.column)
    elif resp.outputs:
        first = next((t for t in resp.outputs if t.name not in PROBABILITY_OUTPUTS), resp.outputs[0])
        if first.width == 1 and len(first.shape) <= 2:
            preds = _use(first, None)
    if mapping.score:
        sel = parse_selector(mapping.score)
        if sel.tensor in by_name:
            scores = _use(by_name[sel.tensor], sel.column)
    else:
        proba = next((by_name[n] for n in PROBABILITY_OUTPUTS if n in by_name), None)
        if proba is not None and proba.width == 2 and len(proba.shape) == 2:
            scores = _use(proba, 1)
    if preds is not None and scores is not None and len(preds) != len(scores):
        raise ProtocolError("shape_mismatch", f"outputs have different batch sizes ({len(preds)}, {len(scores)})")
    return preds, scores


def error_reason(status: int | None) -> str:
    return "invalid_request" if status is not None and 400 <= status < 500 else "error"


def extract(mapping: Mapping, request: bytes | None, response: bytes | None, base: dict[str, Any], *,
            status: int | None = None, request_json_length: int | None = None,
            response_json_length: int | None = None) -> tuple[list[dict[str, Any]], list[ProtocolError]]:
    """The events of one request/response exchange and the problems met.

    Either body may be ``None`` (not seen, or not parsed); a part that cannot
    be decoded is left out and its problem returned, so latency, status and
    the other part are still recorded.
    """
    problems: list[ProtocolError] = []
    base = dict(base)
    n: int | None = None
    feats: dict[str, list[Any]] = {}
    if request is not None:
        try:
            req = decode_request(request, request_json_length)
            n, feats = request_features(mapping, req)
            if req.id is not None and "id" not in base:
                base["id"] = req.id[:256]
        except ProtocolError as exc:
            problems.append(exc)
    preds = scores = None
    if status is not None and not 200 <= status < 300:
        base.setdefault("error", error_reason(status))  # the body is an error message, if anything
    elif response is not None:
        try:
            resp = decode_response(response, response_json_length)
            if resp.error is not None:
                base.setdefault("error", error_reason(status))
            else:
                preds, scores = response_outputs(mapping, resp)
            if resp.model_version and "version" not in base:
                base["version"] = resp.model_version[:256]
            if resp.id is not None and "id" not in base:
                base["id"] = resp.id[:256]
        except ProtocolError as exc:
            problems.append(exc)
    out_rows = len(preds) if preds is not None else (len(scores) if scores is not None else None)
    if n is None:
        n = out_rows if out_rows is not None else 1
    elif out_rows is not None and out_rows != n:
        problems.append(ProtocolError("shape_mismatch", f"{n} input rows but {out_rows} output rows"))
        preds = scores = None
    if n == 0:
        return [], problems
    return build_events(mapping, feats, preds, scores, n, base), problems
