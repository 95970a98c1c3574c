"""System: is the model slow or failing because of its machine or network?

The host (node_exporter), its containers (cAdvisor) and probes from outside
(blackbox_exporter) beside the model's own serving metrics, for the exporter
instance(s) selected.  The link is the ``host`` target label that
prometheus/prometheus.yml puts on every target: the ``host`` variable holds
the hosts of the selected exporter instances, and the host, container and
probe panels select on it (probes of the model's endpoint also on ``model``).
The job names are the bundle's (``node``, ``cadvisor``, ``blackbox``), as in
prometheus/rules/alerts-system.yml.
"""

from __future__ import annotations

from .common import BYTES, PLAIN, RATIO, REQPS, SECONDS, base_vars, rate, sel, stat, timeseries, value_mapping
from .model import Dashboard, Row, Step, Target, Variable

BYTES_PER_SECOND = "Bps"
HOST = 'host=~"$host"'
NODE = f'job="node", {HOST}'
CADVISOR = f'job="cadvisor", {HOST}, name!=""'
REAL_FS = 'fstype!~"tmpfs|ramfs|overlay|squashfs|nsfs|fuse.*"'
NO_CADVISOR = ("No cAdvisor data: cAdvisor runs in docker-compose (service cadvisor). Without Docker "
               "(modelmon stack, Debian packages) there are no containers to show.")

REQUESTS = sel("modelmon_requests_total")
ERRORS = sel("modelmon_request_errors_total")
BUCKETS = sel("modelmon_request_duration_seconds_bucket")
P95 = f"histogram_quantile(0.95, sum by (le) ({rate(BUCKETS)}))"
LATENCY_LIMIT = f'max({sel("modelmon_threshold_latency_p95_seconds")})'


def node(metric: str, extra: str = "") -> str:
    """A node_exporter series of the selected hosts; ``extra``: more matchers."""
    return f"{metric}{{{NODE}{', ' + extra if extra else ''}}}"


IDLE = 'mode="idle"'
CPU_BUSY = f'1 - avg by (host) ({rate(node("node_cpu_seconds_total", IDLE))})'
MEM_AVAILABLE = f'{node("node_memory_MemAvailable_bytes")} / {node("node_memory_MemTotal_bytes")}'
NOT_LO = 'device!="lo"'


def _probe(metric: str, **labels: str) -> str:
    """Probes of this host (the exporter's) or of the selected model's endpoint."""
    extra = "".join(f', {k}="{v}"' for k, v in labels.items())
    return (f'{metric}{{job="blackbox", {HOST}{extra}}} or {metric}{{job="blackbox", model="$model"{extra}}}')


def host_var() -> Variable:
    # No allValue: "All" is then the hosts of the selected exporter instances
    # (Grafana joins the query's values), not every host Prometheus knows.
    return Variable(
        "host", "Host", "query", 'label_values(modelmon_build_info{job=~"$job", instance=~"$instance"}, host)',
        "Machines the selected exporter instances run on (the host target label, prometheus/prometheus.yml).",
        include_all=True, multi=True, current="$__all",
    )


def build() -> Dashboard:
    now = Row("Now", [
        stat("Request rate", "Predictions served per second by the selected exporter instances.", REQPS,
             [Target(f"sum({rate(REQUESTS)})", "requests/s")], graph=True),
        stat("p95 latency", "95th percentile time to serve a prediction (the model's own histogram).", SECONDS,
             [Target(P95, "p95")], graph=True),
        stat("Error ratio", "Failed predictions / all predictions.", RATIO,
             [Target(f"sum({rate(ERRORS)}) / sum({rate(REQUESTS)})", "errors")], graph=True),
        stat("Host CPU busy", "Share of the host's CPU time not idle (busiest selected host).", RATIO,
             [Target(f"max({CPU_BUSY})", "busy")], graph=True, color_mode="value",
             steps=[Step("green"), Step("orange", 0.8), Step("red", 0.95)]),
        stat("Host memory available", "Memory the kernel can hand out without swapping / total (lowest host). "
                                       "ModelmonHostMemoryLow fires under 10 %.", RATIO,
             [Target(f"min({MEM_AVAILABLE})", "available")], graph=True, color_mode="value",
             steps=[Step("red"), Step("orange", 0.05), Step("green", 0.10)]),
        stat("Probes succeeding", "Probes of this host and of the model's endpoint that succeeded on the last try "
                                  "/ all of them (blackbox_exporter).", PLAIN,
             [Target(f'sum({_probe("probe_success")})', "ok"), Target(f'count({_probe("probe_success")})', "probes")],
             text_mode="value_and_name"),
    ])
    model = Row("Model on this host", [
        timeseries(
            "Latency: model vs probe", "The model's p95 (its own histogram) beside the mean time blackbox_exporter "
                                       "needs for a whole request to the model's endpoint (DNS, connect, TLS, "
                                       "answer). Dashed red: the model's p95 threshold, which ModelmonProbeSlow "
                                       "also uses. Both high: the model is slow; only the probe: the path to it.",
            SECONDS,
            [Target(P95, "model p95"),
             Target('probe_duration_seconds{job="blackbox", model="$model"}', "probe {{instance}}"),
             Target(LATENCY_LIMIT, "p95 limit", threshold=True)],
            min=0,
        ),
        timeseries(
            "Request rate and errors", "Predictions and failed predictions per second of the selected instances.",
            REQPS,
            [Target(f"sum({rate(REQUESTS)})", "requests"), Target(f"sum({rate(ERRORS)})", "errors")], min=0,
        ),
    ])
    host = Row("Host (node_exporter)", [
        timeseries("CPU busy", "Share of CPU time not idle, all cores, per host.", RATIO,
                   [Target(CPU_BUSY, "{{host}}")], width=8, min=0, max=1),
        timeseries("Memory available", "MemAvailable / MemTotal per host. Dashed: ModelmonHostMemoryLow's 10 % "
                                        "(warning) and 5 % (critical).", RATIO,
                   [Target(MEM_AVAILABLE, "{{host}}")], width=8, min=0, max=1,
                   steps=[Step("red"), Step("orange", 0.05), Step("green", 0.10)]),
        timeseries("Disk space free", "Free / size per writable real filesystem (no tmpfs, overlay). Dashed: "
                                       "ModelmonHostDiskFull's 10 % and 5 %.", RATIO,
                   [Target(f'{node("node_filesystem_avail_bytes", REAL_FS)} / {node("node_filesystem_size_bytes", REAL_FS)}',
                           "{{host}} {{mountpoint}}")],
                   width=8, min=0, max=1, steps=[Step("red"), Step("orange", 0.05), Step("green", 0.10)]),
        timeseries("Network traffic", "Bytes received (positive) and sent (negative) per second per network "
                                      "interface, loopback excluded.", BYTES_PER_SECOND,
                   [Target(f'sum by (host, device) ({rate(node("node_network_receive_bytes_total", NOT_LO))})',
                           "{{host}} {{device}} in"),
                    Target(f'-sum by (host, device) ({rate(node("node_network_transmit_bytes_total", NOT_LO))})',
                           "{{host}} {{device}} out")], width=8),
        timeseries("Network errors and drops", "Packets per second the interfaces failed to receive or send, or "
                                               "dropped: a flaky network shows here before it shows as latency.",
                   "pps",
                   [Target(f'sum by (host) ({rate(node("node_network_receive_errs_total"))} + '
                           f'{rate(node("node_network_transmit_errs_total"))})', "{{host}} errors"),
                    Target(f'sum by (host) ({rate(node("node_network_receive_drop_total"))} + '
                           f'{rate(node("node_network_transmit_drop_total"))})', "{{host}} drops")],
                   width=8, min=0),
        timeseries("Disk I/O busy", "Share of time each disk was busy with I/O (1 = saturated).", RATIO,
                   [Target(rate(node("node_disk_io_time_seconds_total")), "{{host}} {{device}}")],
                   width=8, min=0, max=1),
    ])
    containers = Row("Containers (cAdvisor)", [
        timeseries("Container CPU", "CPU cores each container uses (1 = one core busy).", PLAIN,
                   [Target(f'sum by (name) ({rate("container_cpu_usage_seconds_total{" + CADVISOR + "}")})', "{{name}}")],
                   width=8, min=0, no_value=NO_CADVISOR),
        timeseries("Container memory", "Working set per container (what the kernel counts against its limit).",
                   BYTES, [Target(f"container_memory_working_set_bytes{{{CADVISOR}}}", "{{name}}")],
                   width=8, min=0, no_value=NO_CADVISOR),
        timeseries("Container uptime", "Time since each container started: a drop to zero is a restart.", SECONDS,
                   [Target(f"time() - container_start_time_seconds{{{CADVISOR}}}", "{{name}}")],
                   width=8, min=0, no_value=NO_CADVISOR),
    ])
    probes = Row("Probes (blackbox_exporter)", [
        timeseries("Probe success", "1 when the probe of the URL succeeded (2xx in time, valid TLS), 0 when it "
                                    "failed; ModelmonProbeFailing fires after 3 minutes of 0.", PLAIN,
                   [Target(_probe("probe_success"), "{{probe}} {{instance}}")], width=8, min=0, max=1,
                   mappings=[value_mapping({"0": ("failing", "red"), "1": ("ok", "green")})]),
        timeseries("Probe phases", "Where a probe of the model's endpoint spends its time: resolve, connect, "
                                   "tls, processing (the server's answer), transfer.", SECONDS,
                   [Target('sum by (phase) (probe_http_duration_seconds{job="blackbox", model="$model"})', "{{phase}}")],
                   width=8, min=0),
        timeseries("HTTP status", "Status code of each probe's last answer (0: no answer).", PLAIN,
                   [Target(_probe("probe_http_status_code"), "{{instance}}")], width=8, min=0),
        timeseries("Certificate expiry", "Time until the earliest certificate of each https:// probe target "
                                         "expires. Dashed: ModelmonProbeCertificateExpiring's 14 days (warning) "
                                         "and 3 days (critical).", SECONDS,
                   [Target(f'({_probe("probe_ssl_earliest_cert_expiry")}) - time()', "{{instance}}")],
                   width=24, min=0, steps=[Step("red"), Step("orange", 3 * 86400), Step("green", 14 * 86400)],
                   no_value="No https:// probe target: certificate expiry applies to TLS endpoints only."),
    ])
    return Dashboard(
        uid="modelmon-system",
        title="modelmon / System",
        description="Is it the machine or the network? Host CPU, memory, disk and network, containers, and probes "
                    "from outside, beside the model's latency and traffic, for the selected exporter instance.",
        rows=[now, model, host, containers, probes],
        variables=base_vars(host_var()),
    )
