"""Sources: what feeds the pipeline (the simulator, the ingestion API, the reverse proxy).

Each source is a plug-in that :mod:`modelmon.app` wires from its ``SOURCES``
table.  The contract is small (:class:`Source`): a ``name`` (the ``source``
label of the health counters), the HTTP ``routes()`` it adds to the exporter's
server, the ``collectors()`` of its own health metrics, and ``start()`` /
``stop()``.  A source decodes and validates what it receives with the shared
ingest schema (:mod:`modelmon.ingest`) and hands :class:`~modelmon.events.EventBatch`
objects to ``Pipeline.submit``; it never imports another source.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Config
from ..labels import LabelJoin
from ..pipeline import Pipeline
from ..web import Route


class Source(Protocol):
    """What the app needs from a source."""

    name: str

    def routes(self) -> list[Route]:
        """Routes on the exporter's HTTP server (none for a source with its own listener)."""

    def collectors(self) -> list[Any]:
        """prometheus_client collectors of the source's own health."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass
class SourceContext:
    """What a source is built from."""

    cfg: Config
    pipeline: Pipeline
    #: The label join buffer (events waiting for late labels), shared by every source.
    label_join: LabelJoin
    #: False while the exporter starts or stops.
    ready: Callable[[], bool]


@dataclass(frozen=True)
class SourceSpec:
    """One row of the app's source table."""

    name: str
    enabled: Callable[[Config], bool]
    build: Callable[[SourceContext], Source]
    #: Checks of the source's own config section (run by ``check_sources`` and before building).
    check_config: Callable[[Config], None] | None = None
