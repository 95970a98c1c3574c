"""What a drift method is: the small interface every method module implements.

A method module declares which feature types it applies to, its default
threshold, whether it reports a p-value (tests) or a distance, and whether it
needs the window's raw values (exact tests: KS, Wasserstein, mean/std) or only
the per-bin / per-category counts the window keeps incrementally (PSI,
Jensen-Shannon, chi-square).  The engine uses ``needs_values`` to skip copying
and sorting raw values when no configured method reads them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .reference import CategoricalProfile, NumericalProfile


@dataclass(frozen=True, slots=True)
class DriftResult:
    """One method's verdict on one feature in one window."""

    statistic: float
    p_value: float | None
    threshold: float
    drifted: bool


@dataclass(slots=True)
class CurrentColumn:
    """The current window's view of one feature.

    ``values`` are the non-missing values (floats for numerical features; for
    categorical features, integer codes into the profile's categories with
    ``len(categories)`` meaning "other / unseen").  When ``is_sorted`` is True
    they are in ascending order (the engine sorts each numerical column once
    and shares it between methods); use :meth:`sorted_values` rather than
    sorting again.  ``counts`` are the counts the window maintains
    incrementally: per reference slot (``len(edges) + 1`` slots: below-min, the
    bins, above-max) for numerical features, per category plus other for
    categorical ones.  Binned methods read only ``counts`` so a scrape costs
    O(bins), not O(window).
    """

    values: np.ndarray
    counts: np.ndarray
    is_sorted: bool = False

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def sorted_values(self) -> np.ndarray:
        """The values in ascending order (sorted at most once)."""
        if not self.is_sorted:
            self.values = np.sort(np.asarray(self.values, dtype=np.float64))
            self.is_sorted = True
        return self.values


class DriftMethod(ABC):
    """A statistical drift method.

    ``has_p_value`` methods are tests: drift when the p-value < threshold.
    The others are distances: drift when statistic >= threshold (``meanstd``
    keeps a strict ``>``).  ``threshold`` always means
    what the method's docs say.
    """

    name: ClassVar[str]
    feature_types: ClassVar[frozenset[str]]
    default_threshold: ClassVar[float]
    has_p_value: ClassVar[bool] = False
    #: Whether the method needs raw window values (exact tests) or only bin counts.
    needs_values: ClassVar[bool] = False
    #: Fewest window values the exporter scores the method on (on top of the
    #: model's ``drift.min_samples``).  Tests account for the sample size in
    #: their p-value and need no floor; distances have a noise floor that
    #: shrinks like 1/sqrt(n), and below these sizes they cross their default
    #: threshold on windows without any drift (docs/drift.md has the rates).
    min_values: ClassVar[int] = 1

    def required_values(self, ref: NumericalProfile | CategoricalProfile) -> int:
        """:attr:`min_values` for this reference (binned methods scale it
        with the number of occupied reference slots)."""
        return self.min_values

    @abstractmethod
    def compute(
        self, ref: NumericalProfile | CategoricalProfile, cur: CurrentColumn, threshold: float
    ) -> DriftResult:
        """Score the current column against the reference profile."""

    # Helpers shared by the method modules ------------------------------------
    @staticmethod
    def p_value_result(statistic: float, p_value: float, threshold: float) -> DriftResult:
        """A test's verdict: drift when ``p_value < threshold``."""
        return DriftResult(statistic=float(statistic), p_value=float(p_value), threshold=threshold,
                           drifted=bool(p_value < threshold))

    @staticmethod
    def distance_result(statistic: float, threshold: float) -> DriftResult:
        """A distance's verdict: drift when ``statistic >= threshold``."""
        return DriftResult(statistic=float(statistic), p_value=None, threshold=threshold,
                           drifted=bool(statistic >= threshold))
