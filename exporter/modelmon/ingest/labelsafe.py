"""The label-value rule, as the ingest schema uses it (defined in :mod:`modelmon.labelsafe`,
a leaf module, so that reference profiles apply the same rule to their categories)."""

from ..labelsafe import (
    MAX_LABEL_LENGTH,
    ItemError,
    check_label,
    is_label_safe,
    label_problem,
    label_string,
    shown_name,
)

__all__ = ["MAX_LABEL_LENGTH", "ItemError", "check_label", "is_label_safe", "label_problem", "label_string", "shown_name"]
