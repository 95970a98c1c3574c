"""The registry filter behind the metric-group switches (the groups themselves
are in :mod:`modelmon.metric_groups`): ``--no-collector.bins`` or, in the
config, ``collectors: {bins: false}`` drops those families from ``/metrics``."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric

from ..metric_groups import GROUPS, NAMES, MetricGroup, check_names, group_of

__all__ = ["GROUPS", "NAMES", "GroupFilteredRegistry", "MetricGroup", "check_names", "group_of"]


class GroupFilteredRegistry(CollectorRegistry):
    """A registry whose ``collect`` leaves out the families of disabled groups."""

    def __init__(self, disabled: Iterable[str] = (), auto_describe: bool = False):
        super().__init__(auto_describe=auto_describe)
        self.disabled = frozenset(check_names(disabled))

    def collect(self) -> Iterator[Metric]:
        for family in super().collect():
            if not self.disabled or group_of(family.name) not in self.disabled:
                yield family
