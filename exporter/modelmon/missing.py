"""The spellings of a missing value, shared by every way data comes in.

Reference and batch files (:mod:`modelmon.datasets`) read these cells as
nulls, so the reference profile never holds them as categories.  A live
categorical value spelled the same way must be missing too, or the monitor
would count it as an unseen category: a drift and a missing-value ratio the
same data read from a file would not show.
"""

from __future__ import annotations

#: Cell values read as missing, in every column and file format.
NULL_SPELLINGS: tuple[str, ...] = (
    "", "NA", "N/A", "n/a", "na", "NaN", "nan", "NAN", "-NaN", "-nan", "null", "NULL", "Null",
    "None", "none", "NONE", "#N/A", "#N/A N/A", "#NA", "<NA>", "1.#IND", "1.#QNAN", "-1.#IND", "-1.#QNAN",
)
#: The same, for membership tests.
NULL_SET: frozenset[str] = frozenset(NULL_SPELLINGS)
