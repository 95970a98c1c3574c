"""Reading tabular data files (reference and batch-drift inputs) into columns.

CSV and JSON lines need nothing beyond the standard library; Parquet needs the
optional ``pyarrow`` extra.  Columns come back as Python lists of raw values
(strings from CSV, ``None`` for empty cells) and numerical conversion happens
where the feature type is known.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file that cannot be used, with the file named."""


def load_table(path: str | Path) -> dict[str, list[Any]]:
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            cols = _load_jsonl(p)
        elif suffix == ".parquet":
            cols = _load_parquet(p)
        else:
            cols = _load_csv(p)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{p}: cannot read: {exc}") from None
    if not cols or not any(len(v) for v in cols.values()):
        raise DataError(f"{p}: no data rows")
    return cols


def _load_csv(p: Path) -> dict[str, list[Any]]:
    with p.open(newline="", encoding="utf-8-sig") as fh:  # -sig: tolerate a BOM (spreadsheet exports)
        reader = csv.reader(fh)
        try:
            header = next(reader)
        except StopIteration:
            raise DataError(f"{p}: empty file") from None
        header = [h.strip() for h in header]
        dupes = sorted({h for h in header if header.count(h) > 1})
        if dupes:
            raise DataError(f"{p}: duplicate column {', '.join(repr(d) for d in dupes)} in the header")
        if any(not h for h in header):
            raise DataError(f"{p}: empty column name in the header (column {header.index('') + 1})")
        cols: dict[str, list[Any]] = {h: [] for h in header}
        for lineno, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{p}: line {lineno}: {len(row)} fields, header has {len(header)}")
            for h, v in zip(header, row):
                cols[h].append(v if v != "" else None)
    return cols


def _load_jsonl(p: Path) -> dict[str, list[Any]]:
    rows = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}: line {lineno}: invalid JSON: {exc.msg}") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}: line {lineno}: expected a JSON object")
            rows.append(obj)
    names: dict[str, None] = {}
    for r in rows:
        names.update(dict.fromkeys(r))
    return {n: [r.get(n) for r in rows] for n in names}


def _load_parquet(p: Path) -> dict[str, list[Any]]:
    try:
        import pyarrow.parquet as pq  # type: ignore[import-not-found]
    except ImportError:
        raise DataError(f"{p}: reading Parquet needs the optional extra: pip install 'modelmon[parquet]'") from None
    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises its own error types
        raise DataError(f"{p}: cannot read Parquet: {exc}") from None
    return table.to_pydict()
