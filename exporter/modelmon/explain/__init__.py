"""Attribution monitoring: global feature importance from per-event attributions."""

from .attributions import (
    IMPORTANCE_SECTION,
    ImportanceComparison,
    ImportanceProfile,
    compare_importance,
    mean_abs_attribution,
    rank_average,
    spearman,
)

__all__ = ["IMPORTANCE_SECTION", "ImportanceComparison", "ImportanceProfile", "compare_importance",
           "mean_abs_attribution", "rank_average", "spearman"]
