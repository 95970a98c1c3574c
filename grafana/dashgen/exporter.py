"""Exporter health: can the numbers on the other dashboards be trusted?

Whether Prometheus reaches every exporter replica, how long scrapes and the
collectors (drift recomputation included) take, whether events flow in, and
what gets rejected and why.
"""

from __future__ import annotations

from .common import (
    BYTES,
    COUNT,
    EPS,
    PLAIN,
    RATIO,
    SECONDS,
    base_vars,
    rate,
    sel,
    stat,
    timeseries,
    value_mapping,
)
from .model import Dashboard, Row, Step, Target

UP = 'up{job=~"$job", instance=~"$instance"}'


def _scrape(metric: str) -> str:
    return f'{metric}{{job=~"$job", instance=~"$instance"}}'


def build() -> Dashboard:
    now = Row("Now", [
        stat("Replicas up", "Exporter replicas Prometheus scraped successfully on the last try / replicas it knows.",
             COUNT, [Target(f"sum({UP})", "up"), Target(f"count({UP})", "known")], text_mode="value_and_name"),
        stat("Uptime", "Time since the exporter process started (the oldest replica).", SECONDS,
             [Target(f'time() - min({sel("modelmon_exporter_start_time_seconds", model=False)})', "uptime")]),
        stat("Exporter version", "modelmon version running (modelmon_build_info).", PLAIN,
             [Target(f'max by (version) ({sel("modelmon_build_info", model=False)})', "{{version}}", instant=True)],
             text_mode="name"),
        stat("Scrape duration", "Longest time Prometheus needed for the last scrape of a replica.", SECONDS,
             [Target(f"max({_scrape('scrape_duration_seconds')})", "scrape")], graph=True),
        stat("Events accepted", "Events per second accepted for this model, all sources.", EPS,
             [Target(f'sum({rate(sel("modelmon_events_accepted_total"))})', "accepted")], graph=True),
        stat("Events rejected", "Events or requests refused per second, all sources and reasons (all models: "
                                "rejections often happen before the model is known).", EPS,
             [Target(f'sum({rate(sel("modelmon_events_rejected_total", model=False))})', "rejected")],
             graph=True, color_mode="value", steps=[Step("green"), Step("red", 0.001)]),
    ])
    scraping = Row("Scraping", [
        timeseries(
            "Targets up", "1 when Prometheus scraped the replica successfully, 0 when the scrape failed.", PLAIN,
            [Target(UP, "{{instance}}")], width=8, min=0, max=1,
            mappings=[value_mapping({"0": ("down", "red"), "1": ("up", "green")})],
        ),
        timeseries(
            "Scrape duration by replica", "Time Prometheus needed to scrape each replica (drift is recomputed inside a "
                               "scrape at most every drift.recompute_interval).", SECONDS,
            [Target(_scrape("scrape_duration_seconds"), "{{instance}}")], width=8, min=0,
        ),
        timeseries(
            "Samples per scrape", "Series each scrape returned; a jump means a label grew (it should not: labels "
                                  "are bounded by configuration).", COUNT,
            [Target(_scrape("scrape_samples_scraped"), "{{instance}}")], width=8, min=0,
        ),
    ])
    computation = Row("Computation", [
        timeseries(
            "Collector durations", "Wall time of each collector's previous collection "
                                   "(modelmon_collector_duration_seconds; drift includes recomputation).", SECONDS,
            [Target(f'max by (collector) ({sel("modelmon_collector_duration_seconds", model=False)})', "{{collector}}")],
            width=8, min=0,
        ),
        timeseries(
            "Drift computation time", "Wall time of the last drift computation per window for this model.", SECONDS,
            [Target(f'max by (window) ({sel("modelmon_drift_computation_seconds")})', "{{window}} window")],
            width=8, min=0,
        ),
        timeseries(
            "Drift result age", "Seconds since drift was last computed per window: it should stay near the "
                                "scrape interval or drift.recompute_interval, whichever is longer.", SECONDS,
            [Target(f'time() - max by (window) ({sel("modelmon_drift_last_computation_timestamp_seconds")})',
                    "{{window}} window")],
            width=8, min=0,
        ),
    ])
    events = Row("Events", [
        timeseries(
            "Events accepted by source", "Events per second accepted into the pipeline for this model, per source "
                                         "(simulator, api, proxy, client).", EPS,
            [Target(f'sum by (source) ({rate(sel("modelmon_events_accepted_total"))})', "{{source}}")], min=0,
        ),
        timeseries(
            "Events rejected by reason", "Events or requests refused per second, per source and reason "
                                         "(malformed, invalid_field, non_finite, unknown_model, unknown_feature, "
                                         "body_too_large, unauthorized, overloaded, unknown_id).", EPS,
            [Target(f'sum by (source, reason) ({rate(sel("modelmon_events_rejected_total", model=False))})',
                    "{{source}} {{reason}}")], min=0,
        ),
        timeseries(
            "Events in windows", "Events held per sliding window (capped at the window's max_events).", COUNT,
            [Target(f'max by (window) ({sel("modelmon_window_events")})', "{{window}} window")], min=0,
        ),
        timeseries(
            "Label join buffer", "Events with an id waiting for their label (modelmon_label_join_pending_events). "
                                 "Dashed red: the buffer's cap (ingest.label_join_max_events); at the cap the "
                                 "oldest are pushed out unlabelled.", COUNT,
            [Target(f'sum({sel("modelmon_label_join_pending_events", model=False)})', "pending"),
             Target(f'sum({sel("modelmon_label_join_capacity_events", model=False)})', "capacity", threshold=True)],
            min=0,
        ),
        timeseries(
            "Events expired unlabelled", "Events per second that left the join buffer without a label: past "
                                         "ingest.label_join_horizon, or pushed out when full. Their labels, if they "
                                         "come, are refused as unknown_id.", EPS,
            [Target(f'sum({rate(sel("modelmon_label_join_expired_events_total", model=False))})', "expired")],
            min=0,
        ),
    ])
    process = Row("Process", [
        timeseries(
            "CPU", "CPU time the exporter uses per second (1 = one core busy).", RATIO,
            [Target(f"{rate(_scrape('process_cpu_seconds_total'))}", "{{instance}}")], width=8, min=0,
        ),
        timeseries(
            "Resident memory", "Resident memory of the exporter process; windows are bounded, so it should level "
                               "off.", BYTES,
            [Target(_scrape("process_resident_memory_bytes"), "{{instance}}")], width=8, min=0,
        ),
        timeseries(
            "Open file descriptors", "Open file descriptors against the process limit.", COUNT,
            [Target(_scrape("process_open_fds"), "{{instance}} open"),
             Target(_scrape("process_max_fds"), "{{instance}} limit", threshold=True)], width=8, min=0, log=True,
        ),
    ])
    return Dashboard(
        uid="modelmon-exporter",
        title="modelmon / Exporter health",
        description="Can the numbers be trusted? Scrape health, computation time, accepted and rejected events, "
                    "and the exporter process.",
        rows=[now, scraping, computation, events, process],
        variables=base_vars(),
    )
