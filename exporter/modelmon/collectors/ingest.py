"""The ingestion sources' own health: the label join buffer, ignored features, the proxy.

    modelmon_label_join_pending_events 15230
    modelmon_label_join_capacity_events 200000
    modelmon_label_join_expired_events_total 1200
    modelmon_ingest_unknown_feature_values_total{model="fraud"} 3
    modelmon_proxy_extraction_failures_total{model="fraud"} 0
    modelmon_proxy_dropped_events_total{model="fraud"} 0
    modelmon_proxy_responses_total{model="fraud",code="2xx"} 120000
    modelmon_proxy_rejected_requests_total{model="fraud",reason="framing"} 2
    modelmon_proxy_open_connections{model="fraud"} 16
    modelmon_proxy_protocol_failures_total{model="fraud",protocol="oip-v2",reason="binary_unsupported"} 0
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..protocols import REASONS


class IngestCollector:
    """Reads the API's and the join buffer's counters."""

    def __init__(self, api: Any, join: Any):
        self.api = api
        self.join = join

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("modelmon_label_join_pending_events",
                                    "Events with an id waiting for their label in the join buffer.")
        pending.add_metric([], self.join.pending())
        capacity = GaugeMetricFamily("modelmon_label_join_capacity_events",
                                     "Most events the join buffer holds (ingest.label_join_max_events).")
        capacity.add_metric([], self.join.max_events)
        expired = CounterMetricFamily(
            "modelmon_label_join_expired_events",
            "Events that left the join buffer unlabelled (older than the horizon, or pushed out when full).",
        )
        expired.add_metric([], self.join.expired)
        unknown = CounterMetricFamily(
            "modelmon_ingest_unknown_feature_values",
            "Feature values ignored because the feature is not in the model's config (ingest.unknown_feature: ignore).",
            labels=["model"],
        )
        for model, n in sorted(dict(self.api.unknown_features if self.api is not None else {}).items()):
            unknown.add_metric([model], n)
        yield from (pending, capacity, expired, unknown)


class ProxyCollector:
    """Reads the reverse proxy's counters."""

    def __init__(self, proxy: Any):
        self.proxy = proxy

    def collect(self) -> Iterator[Metric]:
        out: list[Metric] = []
        if self.proxy is not None:
            failures = CounterMetricFamily(
                "modelmon_proxy_extraction_failures",
                "Proxied requests whose features or prediction could not be extracted (the request itself was served).",
                labels=["model"],
            )
            failures.add_metric([self.proxy.model], self.proxy.extraction_failures)
            dropped = CounterMetricFamily(
                "modelmon_proxy_dropped_events",
                "Proxied requests not recorded because the proxy's queue was full.", labels=["model"],
            )
            dropped.add_metric([self.proxy.model], self.proxy.dropped)
            responses = CounterMetricFamily(
                "modelmon_proxy_responses",
                "Responses the proxy returned, by status class (502/504 for an unreachable or slow upstream count as 5xx).",
                labels=["model", "code"],
            )
            for code, n in sorted(dict(self.proxy.responses).items()):
                responses.add_metric([self.proxy.model, code], n)
            rejected = CounterMetricFamily(
                "modelmon_proxy_rejected_requests",
                "Requests and connections the proxy refused itself, by reason (framing: 400 for an ambiguous or "
                "malformed request; connection_limit: 503 over proxy.max_connections; header_timeout: 408 for a "
                "request head not complete in time; body_timeout: 408; "
                "client_body: 400 for a body that broke off or was malformed mid-stream; expectation: 417 for an "
                "Expect other than 100-continue).",
                labels=["model", "reason"],
            )
            for reason, n in sorted(dict(self.proxy.rejected).items()):
                rejected.add_metric([self.proxy.model, reason], n)
            conns = GaugeMetricFamily("modelmon_proxy_open_connections",
                                      "Client connections open on the proxy listener now.", labels=["model"])
            conns.add_metric([self.proxy.model], self.proxy.open_connections)
            protocol = CounterMetricFamily(
                "modelmon_proxy_protocol_failures",
                "Proxied payloads the configured protocol (proxy.protocol) could not read, by reason; "
                "the request was still served and recorded.",
                labels=["model", "protocol", "reason"],
            )
            failures_by_reason = self.proxy.protocol_failures
            if failures_by_reason is not None:
                for reason in REASONS:
                    protocol.add_metric([self.proxy.model, self.proxy.cfg.protocol, reason],
                                        failures_by_reason.get(reason, 0))
            out += [failures, dropped, responses, rejected, conns, protocol]
        yield from out
