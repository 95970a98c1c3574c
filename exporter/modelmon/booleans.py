"""One spelling of a boolean category, shared by files and live events.

A boolean feature reaches the exporter in several spellings: JSON ``true``
in events (which the ingest schema spells ``"true"``), ``True``/``False``
from pandas' ``to_csv``, ``TRUE`` from a spreadsheet, an Arrow boolean
column from Parquet.  Compared as plain strings, a reference read one way and
live traffic sent another share no category at all, and the feature shows
full drift (Jensen-Shannon 1) on identical data.  So a categorical column
whose every value is a boolean spelling reads as ``"true"``/``"false"``, and
a reference profile whose categories are boolean spellings maps each
spelling of a live value onto them.
"""

from __future__ import annotations

from collections.abc import Iterable

TRUE, FALSE = "true", "false"
#: Every spelling read as a boolean (the ones Arrow's CSV reader infers as booleans) -> its canonical form.
BOOLEAN_SPELLINGS: dict[str, str] = {
    **dict.fromkeys(("true", "True", "TRUE"), TRUE),
    **dict.fromkeys(("false", "False", "FALSE"), FALSE),
}


def canonical_booleans(values: Iterable[str]) -> list[str] | None:
    """``values`` in canonical spelling when every one is a boolean spelling (and there is one), else None."""
    out = []
    for v in values:
        c = BOOLEAN_SPELLINGS.get(v)
        if c is None:
            return None
        out.append(c)
    return out or None


def boolean_aliases(categories: Iterable[str]) -> dict[str, int]:
    """Extra ``spelling -> index`` entries for categories that are all boolean spellings (else empty),
    so that ``True``, ``TRUE`` and ``true`` find the same category."""
    cats = list(categories)
    canonical = canonical_booleans(cats)
    if canonical is None:
        return {}
    where = {c: i for i, c in reversed(list(enumerate(canonical)))}
    return {s: where[c] for s, c in BOOLEAN_SPELLINGS.items() if c in where}
