"""Reading tabular data files (reference and batch-drift inputs) into columns.

One code path for CSV, JSON lines (``.jsonl``, ``.ndjson``) and Parquet:
pyarrow reads the file in C, and each column comes back as numpy arrays in
one pass, never as Python values:

- a *numeric* column (Arrow integer, floating or decimal type) as float64
  with NaN for missing values (:class:`NumericColumn`);
- a *categorical* column (Arrow string, boolean, dictionary, dates...) as
  int32 codes into a list of distinct strings, ``-1`` for missing, encoded by
  Arrow's ``dictionary_encode`` (:class:`CategoricalColumn`);
- a column with no value at all as :class:`EmptyColumn` (its type is decided
  by the other table, or it is reported as unusable).

Missing values: the spellings in :data:`NULL_SPELLINGS` (``NA``, ``null``,
``N/A``, ``None``, ``#N/A``, ``nan``, the empty cell, ...) are nulls in every
column type and every format (JSON ``null`` too).

Types: a column's type comes from its Arrow type, unless the caller says
which features are numerical or categorical (``types``): the reference
decides the types used for the current file, and a config decides both.
A text column whose values are numbers but for a few (:data:`NUMERIC_SHARE`)
is not quietly taken as categorical: it is an error naming the file, the column and a value that is
not a number (:func:`load_table`, ``on_non_numeric``).

pyarrow is imported by the functions that read files, not at module level,
so that an exporter whose reference is a frozen profile never loads it
(about 110 ms and 40 MB of RSS; docs/drift.md).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .booleans import FALSE, TRUE, canonical_booleans
from .missing import NULL_SPELLINGS

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa


#: A number as text (what float() reads, infinities and NaN included).
_NUMBER_RE = r"^\s*[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?\s*$|^\s*[-+]?(inf|infinity|nan)\s*$"

#: A text column is taken for a numerical one with stray bad values (an
#: error) when at least this share of its non-missing values are numbers;
#: below it, it is categorical (codes such as "1", "2", "x").
NUMERIC_SHARE = 0.95


class DataError(ValueError):
    """A data file that cannot be used, with the file named."""


@dataclass(frozen=True, slots=True)
class NumericColumn:
    """float64 values; NaN is missing (infinities are kept as read)."""

    values: np.ndarray
    kind: Literal["numerical"] = "numerical"

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True, slots=True)
class CategoricalColumn:
    """int32 ``codes`` into ``dictionary`` (distinct strings); -1 is missing."""

    codes: np.ndarray
    dictionary: list[str]
    kind: Literal["categorical"] = "categorical"

    def __len__(self) -> int:
        return len(self.codes)

    def counts(self) -> np.ndarray:
        """Occurrences of each dictionary entry."""
        c = self.codes
        return np.bincount(c[c >= 0], minlength=len(self.dictionary))


@dataclass(frozen=True, slots=True)
class EmptyColumn:
    """A column without any usable value: every cell missing, or values of a
    type no feature can have (lists, structs, binary), which ``why`` names."""

    rows: int
    kind: Literal["empty"] = "empty"
    why: str = ""

    def __len__(self) -> int:
        return self.rows

    @property
    def problem(self) -> str:
        """What is wrong with the column, to follow "has" in a message."""
        return self.why or f"no values (all {self.rows} missing)"


Column = NumericColumn | CategoricalColumn | EmptyColumn


@dataclass(slots=True)
class Table(Mapping[str, Column]):
    """A data file's columns (all ``rows`` long), in file order; a mapping from
    column name to column."""

    path: Path
    rows: int
    columns: dict[str, Column]

    def __contains__(self, name: object) -> bool:
        return name in self.columns

    def __getitem__(self, name: str) -> Column:
        return self.columns[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)


def load_table(
    path: str | Path,
    types: Mapping[str, str] | None = None,
    on_non_numeric: Literal["error", "missing"] = "error",
) -> Table:
    """Read ``path`` (CSV unless it ends in ``.jsonl``/``.ndjson``/``.parquet``).

    ``types`` maps column names to ``"numerical"`` or ``"categorical"``; the
    other columns are typed from their Arrow type.  A numerical column
    stored as text is parsed; its non-numeric values are an error naming
    the file, column and one such value (``on_non_numeric="error"``, for
    reference data), or missing values (``"missing"``, for current data, as
    the exporter counts them).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: {'a directory, not a data file' if p.is_dir() else 'no such file'}")
    types = dict(types or {})
    suffix = data_suffix(p)
    try:
        if suffix in (".jsonl", ".ndjson"):
            table = _read_jsonl(p)
        elif suffix == ".parquet":
            table = _read_parquet(p)
        else:
            table = _read_csv(p, types, delimiter="\t" if suffix == ".tsv" else None)
    except (OSError, UnicodeDecodeError, csv.Error, EOFError) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from None
    if table.num_rows == 0:
        raise DataError(f"{p}: no data rows")
    names = [str(n) for n in table.column_names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"{p}: duplicate column {', '.join(repr(d) for d in dupes)} in the header")
    cols: dict[str, Column] = {}
    for name, arr in zip(names, table.columns, strict=True):
        cols[name] = _column(p, name, arr, types.get(name), on_non_numeric)
    rows = int(table.num_rows)
    del table, arr
    _release_arrow_memory()
    return Table(path=p, rows=rows, columns=cols)


#: Compressed files are read through (``ref.csv.gz``, ``events.jsonl.zst``); the suffix before names the format.
COMPRESSION_SUFFIXES = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd", ".lz4": "lz4"}
#: Delimiters a CSV header is checked for when it has no comma (European ``;`` exports, tab- and pipe-separated).
OTHER_DELIMITERS = (";", "\t", "|")


def data_suffix(p: Path) -> str:
    """The format suffix of a data file, below a compression suffix (``.csv`` for ``ref.csv.gz``)."""
    suffixes = [x.lower() for x in p.suffixes]
    if len(suffixes) >= 2 and suffixes[-1] in COMPRESSION_SUFFIXES:
        return suffixes[-2]
    return p.suffix.lower()


def _open_binary(p: Path) -> Any:
    """The file's bytes, decompressed when its name ends in a compression suffix (Arrow's codecs)."""
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)

    codec = COMPRESSION_SUFFIXES.get(p.suffix.lower())
    return pa.input_stream(str(p), compression=codec) if codec else p.open("rb")


def _first_line(p: Path, limit: int = 1 << 24) -> str:
    """The file's first line as text (a CSV header), read through any compression."""
    buf = b""
    with _open_binary(p) as fh:
        while b"\n" not in buf and len(buf) < limit:
            chunk = fh.read(65536)
            if not chunk:
                break
            buf += chunk
    return buf.split(b"\n", 1)[0].decode("utf-8-sig")


def _release_arrow_memory() -> None:
    """Hand Arrow's freed buffers back to the system: an exporter that
    profiled a large reference at start-up should not keep the file's
    memory for its whole life."""
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)

    pa.default_memory_pool().release_unused()


# --------------------------------------------------------------------------- readers


def _read_csv(p: Path, types: Mapping[str, str], delimiter: str | None = None) -> pa.Table:
    # Lazy: pyarrow only loads when a data file is read (module docs).
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.csv as pacsv  # noqa: PLC0415 (lazy: see the module docstring)

    line = _first_line(p)  # the header, to check it and map stripped names
    if not line.strip():
        raise DataError(f"{p}: empty file" if not line else f"{p}: empty first line (expected the header)")
    if delimiter is None:
        # A header without a comma but with one of the other usual delimiters: a file exported with it
        # (read as one column, it would share no column with anything).
        others = [d for d in OTHER_DELIMITERS if d in line]
        delimiter = max(others, key=line.count) if "," not in line and others else ","
    header = next(csv.reader([line], delimiter=delimiter))
    stripped = [h.strip() for h in header]
    if any(not h for h in stripped):
        raise DataError(f"{p}: empty column name in the header (column {stripped.index('') + 1})")
    # Categorical features stay text (a code "007" keeps its zeros).
    column_types = {s: pa.string() for s in stripped if types.get(s) == "categorical"}
    bad_rows: list[Any] = []

    def invalid_row(row: Any) -> str:
        bad_rows.append(row)
        return "error"

    try:
        table = pacsv.read_csv(
            p,
            read_options=pacsv.ReadOptions(column_names=stripped, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=invalid_row),
            convert_options=pacsv.ConvertOptions(
                null_values=list(NULL_SPELLINGS), strings_can_be_null=True, quoted_strings_can_be_null=True,
                column_types=column_types,
            ),
        )
    except pa.ArrowInvalid as exc:
        if bad_rows:
            r = bad_rows[0]
            where = f"line {r.number}: " if r.number is not None else ""
            raise DataError(f"{p}: {where}{r.actual_columns} fields, header has {r.expected_columns} "
                            f"(row {r.text[:60]!r})") from None
        raise DataError(f"{p}: cannot parse CSV: {_arrow_message(exc)}") from None
    return table


def _read_jsonl(p: Path) -> pa.Table:
    # Lazy: pyarrow only loads when a data file is read (module docs).
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.json as pajson  # noqa: PLC0415 (lazy: see the module docstring)

    try:
        return pajson.read_json(p)
    except pa.ArrowInvalid as exc:
        msg = _arrow_message(exc)
        if "changed from" not in msg:
            raise DataError(f"{p}: invalid JSON lines: {msg}") from None
    # A column mixing numbers and text ({"x": 1} then {"x": "NA"}): Arrow
    # cannot type it, so such files are parsed here and every mixed column
    # becomes text, which _column then types like a CSV column.
    rows: list[dict[str, Any]] = []
    with _open_binary(p) as raw, io.TextIOWrapper(raw, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{p}: line {lineno}: invalid JSON: {e.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}: line {lineno}: expected a JSON object")
            rows.append(obj)
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    arrays = {}
    for n in names:
        values = [r.get(n) for r in rows]
        try:
            arrays[n] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[n] = pa.array([None if v is None else str(v) for v in values], type=pa.string())
    return pa.table(arrays)


def _read_parquet(p: Path) -> pa.Table:
    # Lazy: pyarrow only loads when a data file is read (module docs).
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.parquet as pq  # noqa: PLC0415 (lazy: see the module docstring)

    try:
        return pq.read_table(p)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{p}: cannot read Parquet: {_arrow_message(exc)}") from None


def _arrow_message(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --------------------------------------------------------------------------- columns


def _column(p: Path, name: str, arr: Any, wanted: str | None, on_non_numeric: str) -> Column:
    """One Arrow column as numpy (module docs)."""
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.compute as pc  # noqa: PLC0415 (lazy: see the module docstring)

    t = arr.type
    rows = len(arr)
    if arr.null_count == rows:
        return EmptyColumn(rows)
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        if wanted == "categorical":
            return _categorical(pc.cast(arr, pa.string()))
        values = pc.cast(arr, pa.float64()).to_numpy()
        return NumericColumn(np.ascontiguousarray(values, dtype=np.float64))
    if pa.types.is_boolean(t):
        if wanted == "numerical":
            return NumericColumn(pc.cast(arr, pa.float64()).to_numpy().astype(np.float64))
        codes = pc.fill_null(pc.cast(arr, pa.int32()), -1).to_numpy().astype(np.int32)
        return CategoricalColumn(codes, [FALSE, TRUE])  # the spelling of JSON and of the event API
    if pa.types.is_dictionary(t):
        arr = pc.cast(arr, pa.string()) if not pa.types.is_string(t.value_type) else arr
    elif not (pa.types.is_string(t) or pa.types.is_large_string(t)):
        # Not a feature (lists, structs, raw bytes): unusable if one asks for it, no bar to the others.
        unsupported = EmptyColumn(rows, why=f"an unsupported type ({t}: no feature can hold it)")
        if pa.types.is_nested(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t):
            return unsupported
        try:
            arr = pc.cast(arr, pa.string())
        except pa.ArrowException:
            return unsupported
    col = _categorical(arr)
    if wanted == "categorical":
        return col
    numbers, bad = _parse_numbers(col)
    present = int(np.count_nonzero(col.codes >= 0))
    counts = col.counts()
    bad_count = int(counts[bad].sum()) if bad.size else 0
    if wanted == "numerical" or (present and (present - bad_count) / present >= NUMERIC_SHARE):
        if bad_count and on_non_numeric == "error":
            first = int(np.flatnonzero(np.isin(col.codes, bad))[0])
            example = col.dictionary[int(col.codes[first])]
            raise DataError(
                f"{p}: column {name!r}: non-numeric value {example!r} (row {first + 1}; {bad_count} of {present} "
                f"values are not numbers) in a numerical column; fix the data, spell missing values "
                f"as empty, NA or null, or declare the feature categorical in a config"
            )
        lookup = np.append(numbers, np.nan)  # code -1 (missing) reads the trailing NaN
        return NumericColumn(lookup[col.codes])
    return col


def _categorical(arr: Any) -> CategoricalColumn:
    """Dictionary-encode a text column in Arrow; the missing spellings are -1."""
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.compute as pc  # noqa: PLC0415 (lazy: see the module docstring)

    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    enc = arr if pa.types.is_dictionary(arr.type) else pc.dictionary_encode(arr)
    dictionary = enc.dictionary.cast(pa.string()).to_pylist()  # one entry per distinct value
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int32)
    return _spelled_out(codes, dictionary)


def _spelled_out(codes: np.ndarray, dictionary: list[str]) -> CategoricalColumn:
    """``codes`` into ``dictionary`` with the missing spellings turned into -1 and, in a column of
    boolean spellings only (``True``, ``false``, ``TRUE``...), the entries ``true``/``false``,
    merged when the data mixed spellings (modelmon.booleans)."""
    null_mask = np.isin(np.asarray(dictionary, dtype=object), np.asarray(NULL_SPELLINGS, dtype=object))
    if null_mask.any():
        keep = ~null_mask
        remap = np.full(len(dictionary) + 1, -1, dtype=np.int32)
        remap[: len(dictionary)][keep] = np.arange(int(keep.sum()), dtype=np.int32)
        codes = remap[codes]  # -1 stays -1 (the trailing slot)
        dictionary = [d for d, k in zip(dictionary, keep, strict=True) if k]
    canonical = canonical_booleans(dictionary)
    if canonical is None:
        return CategoricalColumn(codes, dictionary)
    merged = sorted(set(canonical))
    remap = np.array([merged.index(c) for c in canonical] + [-1], dtype=np.int32)
    return CategoricalColumn(remap[codes], merged)


def _parse_numbers(col: CategoricalColumn) -> tuple[np.ndarray, np.ndarray]:
    """Each dictionary entry as a float (NaN when not a number) and the
    indices of the entries that are not numbers; vectorised in Arrow."""
    import pyarrow as pa  # noqa: PLC0415 (lazy: see the module docstring)
    import pyarrow.compute as pc  # noqa: PLC0415 (lazy: see the module docstring)

    d = pa.array(col.dictionary, type=pa.string())
    ok = pc.match_substring_regex(d, _NUMBER_RE, ignore_case=True).to_numpy(zero_copy_only=False)
    numbers = np.full(len(col.dictionary), np.nan)
    if ok.any():
        good = pc.utf8_trim_whitespace(pc.filter(d, pa.array(ok)))
        numbers[ok] = pc.cast(good, pa.float64()).to_numpy(zero_copy_only=False)
    return numbers, np.flatnonzero(~ok)


def categorical_from_values(values: Any) -> CategoricalColumn:
    """A categorical column from in-memory values (lists or numpy arrays, as
    the simulator and tests pass them), compared as strings.  None and NaN
    read as "None" and "nan", which are missing spellings, so they are -1
    like the other spellings; no Python loop per value (numpy's C ``astype``
    and ``unique``)."""
    arr = np.asarray(values)
    text = arr if arr.dtype.kind == "U" else arr.astype(str)
    dictionary, inverse = np.unique(text.reshape(-1), return_inverse=True)
    codes = inverse.reshape(-1).astype(np.int32)
    return _spelled_out(codes, [str(d) for d in dictionary])  # one entry per distinct value
