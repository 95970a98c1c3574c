"""What a drift method is: the small interface every method module implements."""

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
    ``len(categories)`` meaning "other / unseen").  ``counts`` are the counts
    the window maintains incrementally: per reference bin (``len(edges) + 1``
    slots: below-min, the bins, above-max) for numerical features, per category
    plus other for categorical ones.  Binned methods read only ``counts`` so a
    scrape costs O(bins), not O(window).
    """

    values: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())


class DriftMethod(ABC):
    """A statistical drift method.

    ``higher_is_drift`` is True for distances (drift when statistic >=
    threshold) and False for tests reported by p-value (drift when p-value <
    threshold); ``threshold`` always means what the method's docs say.
    """

    name: ClassVar[str]
    feature_types: ClassVar[frozenset[str]]
    default_threshold: ClassVar[float]
    has_p_value: ClassVar[bool] = False
    #: Whether the method needs raw window values (exact tests) or only bin counts.
    needs_values: ClassVar[bool] = False

    @abstractmethod
    def compute(
        self, ref: NumericalProfile | CategoricalProfile, cur: CurrentColumn, threshold: float
    ) -> DriftResult:
        """Score the current column against the reference profile."""
