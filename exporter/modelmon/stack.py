"""``modelmon stack``: the bundle's alerting path on one machine, without Docker.

Starts a local exporter (the simulated model unless ``--exporter`` names a
running one), ``prometheus`` with the bundle's ``prometheus/prometheus.yml``
and rules, Alertmanager (Debian's ``prometheus-alertmanager`` or upstream
``alertmanager``) with ``alertmanager/alertmanager.yml``, and a webhook
receiver that prints every notification, then waits until Ctrl-C / SIGTERM
and stops them in reverse order.  Alert -> Prometheus -> Alertmanager ->
notification, all on this machine.

The bundle's Prometheus config names the docker-compose services
(``exporter:9874``, ``alertmanager:9093``).  Rather than keeping a second
copy, the runner rewrites those targets to the local addresses in a copy it
writes to the data directory, makes the rule paths absolute, and drops the
``file_sd`` target files (they list exporters elsewhere).  The Alertmanager
config goes through the bundle's own ``render-config.sh`` (as the compose
entrypoint does) with ``MODELMON_WEBHOOK_URL`` set to the local receiver, or
to ``--webhook-url``.  Everything else - rules, intervals, routing,
templates - is the bundle's own.

``--demo`` trades realism for speed so that a newcomer sees every alert of a
scenario within a minute or two: the rules are loaded from rewritten copies
(every ``for:`` set to :data:`DEMO_FOR`, 5-minute ranges shortened to
:data:`DEMO_RANGE`, the low-throughput guard's "up for 300 s" likewise), 1 s
scrape and evaluation, Alertmanager's ``group_wait`` / ``group_interval``
shortened, and the anomaly starting after 30 s unless ``--anomaly-after``
says otherwise.  Expressions, thresholds, routes and templates are otherwise
the bundle's own; the output says DEMO on every line that matters.

Before starting anything, every address the stack will listen on is checked,
so a busy port fails at once with the port, the server that needed it and,
where /proc tells, the process holding it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

#: The folder holding prometheus/ and alertmanager/ when run from a checkout.
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2]
#: Compose service names in the bundle's prometheus.yml -> which local server replaces them.
SERVICE_HOSTS = {"exporter": "exporter", "alertmanager": "alertmanager", "prometheus": "prometheus",
                 "localhost:9090": "prometheus"}
#: System exporters started beside Prometheus when Debian's packages are
#: installed: compose service -> (binary = package, default listen address).
#: Scrape targets of other compose services (cAdvisor needs Docker) and of
#: exporters not installed are left out of the local config.
SYSTEM_EXPORTERS = {"node-exporter": ("prometheus-node-exporter", "127.0.0.1:9100"),
                    "blackbox-exporter": ("prometheus-blackbox-exporter", "127.0.0.1:9115")}
#: Compose services without a local counterpart (cAdvisor watches Docker's containers).
COMPOSE_ONLY = {"cadvisor"}


#: Demo mode: every alert's ``for:``, the length that replaces the rules' 5-minute ranges, and the
#: scrape / evaluation interval.
DEMO_FOR = "10s"
DEMO_RANGE = "1m"
DEMO_INTERVAL = "1s"
DEMO_ANOMALY_AFTER = "30s"
#: Demo Alertmanager timings (the bundle waits 30 s for a group and batches changes every 5 minutes).
DEMO_GROUP_WAIT = "1s"
DEMO_GROUP_INTERVAL = "5s"
_SECONDS = {"s": 1, "m": 60, "h": 3600}


class StackError(Exception):
    """Bad input or a server that would not start; the message says which."""


@dataclass
class Addresses:
    exporter: str
    prometheus: str
    alertmanager: str
    #: Running system exporters: compose service name -> local address.
    system: dict[str, str] = field(default_factory=dict)


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    ready_url: str | None = None

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _local(address: str) -> str:
    """``:9874`` -> ``127.0.0.1:9874`` (an address to connect to)."""
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    return f"{host}:{port}"


def rewrite_prometheus_config(config: dict[str, Any], config_dir: Path, addrs: Addresses,
                              scrape_interval: str | None = None) -> dict[str, Any]:
    """The bundle's Prometheus config pointed at local servers (module docs)."""
    cfg = dict(config)
    local = {"exporter": _local(addrs.exporter), "prometheus": _local(addrs.prometheus),
             "alertmanager": _local(addrs.alertmanager),
             **{name: _local(a) for name, a in addrs.system.items()}}

    def address(target: str) -> str | None:
        """The local address replacing a compose ``host:port``; None for a service not running here."""
        host = target.rsplit(":", 1)[0]
        key = SERVICE_HOSTS.get(target) or SERVICE_HOSTS.get(host) or host
        if key in local:
            return local[key]
        return None if key in SYSTEM_EXPORTERS or key in COMPOSE_ONLY else target

    def retarget(targets: list[str]) -> list[str]:
        out = []
        for t in targets:
            if "://" in t:  # a probed URL
                u = urlsplit(t)
                new = address(u.netloc)
                if new:
                    out.append(u._replace(netloc=new).geturl())
            elif new := address(t):
                out.append(new)
        return list(dict.fromkeys(out))

    def local_job(job: dict[str, Any]) -> dict[str, Any] | None:
        job = {k: v for k, v in job.items() if k != "file_sd_configs"}
        relabel = []
        for rule in job.get("relabel_configs", []):
            if rule.get("target_label") == "__address__" and "replacement" in rule:  # the probing exporter
                new = address(rule["replacement"])
                if not new:
                    return None
                rule = {**rule, "replacement": new}
            relabel.append(copy.deepcopy(rule))  # no shared objects: no YAML anchors in the written file
        if relabel:
            job["relabel_configs"] = relabel
        # `host` labels name the compose machine; here the relabelling takes it from the addresses.
        groups = []
        for sc in job.get("static_configs", []):
            group = {**sc, "targets": retarget(sc.get("targets", []))}
            labels = {k: v for k, v in sc.get("labels", {}).items() if k != "host"}
            group.pop("labels", None)
            if labels:
                group["labels"] = labels
            groups.append(group)
        job["static_configs"] = [g for g in groups if g["targets"]]
        return job if job["static_configs"] else None

    if scrape_interval:
        cfg["global"] = {**cfg.get("global", {}), "scrape_interval": scrape_interval,
                         "evaluation_interval": scrape_interval}
        timeout = cfg["global"].get("scrape_timeout")
        if timeout:
            cfg["global"].pop("scrape_timeout")  # must not exceed the interval; Prometheus's default does not
    cfg["rule_files"] = [str(config_dir / p) if not os.path.isabs(p) else p for p in cfg.get("rule_files", [])]
    alerting = dict(cfg.get("alerting", {}))
    alerting["alertmanagers"] = [
        {**am, "static_configs": [{**sc, "targets": retarget(sc.get("targets", []))} for sc in am.get("static_configs", [])]}
        for am in alerting.get("alertmanagers", [])
    ] or [{"static_configs": [{"targets": [local["alertmanager"]]}]}]
    cfg["alerting"] = alerting
    cfg["scrape_configs"] = [j for j in map(local_job, cfg.get("scrape_configs", [])) if j]
    return cfg


def _seconds(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([smh])", duration)
    if not m:
        raise ValueError(f"unsupported duration {duration!r} (use e.g. 30s, 1m)")
    return int(m.group(1)) * _SECONDS[m.group(2)]


def demo_rules(doc: dict[str, Any], for_: str = DEMO_FOR, range_: str = DEMO_RANGE) -> dict[str, Any]:
    """A rule file's groups rewritten for ``--demo`` (module docs): every
    alert's ``for:`` becomes ``for_``; in expressions, ``[5m]`` ranges and
    ``offset 5m`` become ``range_``, and the throughput guard's ``>= 300``
    seconds of uptime becomes that range in seconds.  Rule names (``rate5m``)
    stay, so dashboards and other rules still find them."""
    seconds = _seconds(range_)
    groups = []
    for group in doc.get("groups") or []:
        rules = []
        for rule in group.get("rules") or []:
            rule = dict(rule)
            expr = str(rule.get("expr", ""))
            expr = expr.replace("[5m]", f"[{range_}]").replace("offset 5m", f"offset {range_}")
            if "modelmon_exporter_start_time_seconds" in expr:
                expr = re.sub(r"\)\s*>=\s*300\b", f") >= {seconds}", expr)
            rule["expr"] = expr
            if "alert" in rule:
                rule["for"] = for_
            rules.append(rule)
        groups.append({**group, "rules": rules})
    return {**doc, "groups": groups}


def write_demo_rules(rule_globs: list[str], dest: Path) -> list[str]:
    """Rewritten copies (:func:`demo_rules`) of every rule file the globs
    match, written under ``dest``; returns the copies' paths."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for pattern in rule_globs:
        base = Path(pattern)
        for path in sorted(base.parent.glob(base.name)):
            try:
                doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise StackError(f"{path}: {exc}") from None
            copy = dest / path.name
            copy.write_text(f"# DEMO copy of {path} written by `modelmon stack --demo`: for: {DEMO_FOR}, "
                            f"5m ranges -> {DEMO_RANGE}.\n" + yaml.safe_dump(demo_rules(doc), sort_keys=False),
                            encoding="utf-8")
            out.append(str(copy))
    if not out:
        raise StackError(f"no rule files match {', '.join(rule_globs)}")
    return out


def demo_alertmanager_config(source: Path, dest: Path) -> Path:
    """``source`` (a rendered Alertmanager config) written to ``dest`` with
    group_wait / group_interval shortened on every route; relative template
    paths are made absolute so the copy works from anywhere."""
    try:
        cfg = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise StackError(f"{source}: {exc}") from None
    cfg["templates"] = [t if os.path.isabs(t) else str(source.parent / t) for t in cfg.get("templates") or []]

    def shorten(route: dict[str, Any]) -> None:
        if "group_wait" in route or route is cfg.get("route"):
            route["group_wait"] = DEMO_GROUP_WAIT
        if "group_interval" in route or route is cfg.get("route"):
            route["group_interval"] = DEMO_GROUP_INTERVAL
        for child in route.get("routes") or []:
            shorten(child)

    shorten(cfg.setdefault("route", {}))
    dest.write_text(f"# DEMO copy of {source} written by `modelmon stack --demo` (short group_wait / "
                    "group_interval)\n" + yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return dest


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        return host, int(port)
    except ValueError:
        raise StackError(f"{address}: not a HOST:PORT address") from None


def port_holder(port: int) -> str | None:
    """``pid 1234 (prometheus)`` for the process listening on a TCP port, when
    /proc tells (Linux, and only for processes this user may inspect)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return None
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in inodes:
                    cmd = (proc / "cmdline").read_bytes().split(b"\0")
                    name = " ".join(c.decode(errors="replace") for c in cmd[:3] if c)
                    return f"pid {proc.name} ({name[:120]})"
        except OSError:
            continue
    return None


def check_ports(wanted: dict[str, str]) -> None:
    """Fail at once, naming the port, who needed it and who holds it, when any
    of these ``{what: HOST:PORT}`` addresses cannot be listened on."""
    problems = []
    seen: dict[int, str] = {}
    for what, address in wanted.items():
        host, port = _split(address)
        if port in seen and port != 0:
            problems.append(f"{what} and {seen[port]} both want port {port}")
            continue
        seen[port] = what
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
            try:
                s.bind((host, port))
            except OSError as exc:
                holder = port_holder(port) if exc.errno == 98 else None
                problems.append(f"{what} cannot listen on {address}: {exc.strerror or exc}"
                                + (f", held by {holder}" if holder else ""))
    if problems:
        raise StackError("; ".join(problems) + " (pick other ports with the --*.listen-address flags)")


def prometheus_links(base: str) -> str:
    """Where this Prometheus shows alerts and rules: its web UI (``/alerts``),
    the classic UI (``/classic/alerts``: Debian's 2.42 builds ship no other),
    or only the HTTP API; found by asking it."""
    if _ready(f"{base}/alerts"):
        return f"alerts {base}/alerts, rules {base}/rules, targets {base}/targets"
    if _ready(f"{base}/classic/alerts"):
        return f"alerts {base}/classic/alerts, rules {base}/classic/rules, targets {base}/classic/targets"
    return (f"no web UI in this build; HTTP API only: {base}/api/v1/alerts, {base}/api/v1/rules, "
            f"{base}/api/v1/targets")


def notification_line(receiver: str | None, alert: dict[str, Any], demo: bool = False) -> str:
    """One printed line per alert of a webhook notification.  A resolved
    alert carries the annotations it had while firing, so its summary is
    framed as what ended."""
    labels = alert.get("labels", {})
    summary = alert.get("annotations", {}).get("summary", "")
    status = alert.get("status", "")
    text = f"ended, no longer true: {summary}" if status == "resolved" else summary
    return (f"{'DEMO ' if demo else ''}notification [{receiver}] {status} "
            f"{labels.get('alertname')} model={labels.get('model', '-')} "
            f"severity={labels.get('severity', '-')}: {text}")


def start_system_exporters(stack: Stack, args: argparse.Namespace, bundle: Path) -> dict[str, str]:
    """Start the installed system exporters; say which are missing.  Returns
    compose service name -> local address of those running."""
    running = {}
    for service, (binary, _default) in SYSTEM_EXPORTERS.items():
        path = shutil.which(binary)
        if path is None:
            print(f"modelmon stack: {binary} not installed (Debian: apt-get install {binary}): "
                  f"no {service.split('-')[0]} metrics", flush=True)
            continue
        addr = getattr(args, service.replace("-", "_") + "_listen_address")
        cmd = [path, f"--web.listen-address={addr}"]
        if service == "blackbox-exporter":
            cmd.append(f"--config.file={bundle / 'blackbox' / 'blackbox.yml'}")
        stack.start(service, cmd, f"http://{_local(addr)}/metrics")
        running[service] = addr
    return running


def _binary(names: list[str], flag: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    raise StackError(f"{' or '.join(names)} not found on PATH (Debian: apt-get install prometheus "
                     f"prometheus-alertmanager), or name it with {flag}")


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


class WebhookPrinter:
    """A local Alertmanager webhook receiver: one line per alert on stdout,
    printed when the alert is first notified or changes status (Alertmanager
    re-sends a whole group whenever one alert in it changes, and reminders)."""

    def __init__(self, address: str, demo: bool = False):
        host, _, port = _local(address).rpartition(":")
        last_status: dict[tuple[tuple[str, str], ...], str] = {}
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    for alert in body.get("alerts", []):
                        key = tuple(sorted(alert.get("labels", {}).items()))
                        with lock:
                            if last_status.get(key) == alert.get("status"):
                                continue
                            last_status[key] = alert.get("status")
                        print(time.strftime("%H:%M:%S ") + notification_line(body.get("receiver"), alert, demo),
                              flush=True)
                    self.send_response(200)
                except (ValueError, AttributeError):
                    self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        try:
            self.httpd = ThreadingHTTPServer((host, int(port)), Handler)
        except OSError as exc:
            raise StackError(f"--webhook.listen-address {address}: {exc.strerror or exc}") from None
        self.url = f"http://{host}:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def render_alertmanager_config(source: Path, dest: Path, webhook_url: str) -> Path:
    """The bundle's render-config.sh when it has one (webhook URL, absolute
    template paths), else the source as it is."""
    script = source.parent / "render-config.sh"
    if not script.is_file():
        return source
    proc = subprocess.run(["sh", str(script), str(source), str(dest)], capture_output=True, text=True,
                          env={**os.environ, "MODELMON_WEBHOOK_URL": webhook_url}, timeout=30)
    if proc.returncode != 0:
        raise StackError(f"{script} failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return dest


@dataclass
class Stack:
    """The running servers; ``stop`` ends them in reverse start order."""

    data_dir: Path
    children: list[Child] = field(default_factory=list)

    def start(self, name: str, cmd: list[str], ready_url: str | None, timeout: float = 60) -> Child:
        log = self.data_dir / f"{name}.log"
        fh = open(log, "wb")
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.data_dir, start_new_session=True)
        fh.close()
        child = Child(name, proc, log, ready_url)
        self.children.append(child)
        deadline = time.monotonic() + timeout
        while ready_url and not _ready(ready_url):
            if proc.poll() is not None:
                raise StackError(f"{name} exited with status {proc.returncode}:\n{child.tail()}")
            if time.monotonic() > deadline:
                raise StackError(f"{name} not ready at {ready_url} after {timeout:.0f}s:\n{child.tail()}")
            time.sleep(0.25)
        return child

    def dead(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self, timeout: float = 10) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            try:
                child.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                child.proc.kill()
                child.proc.wait(timeout=5)


def run(args: argparse.Namespace, stop: threading.Event) -> int:
    bundle = Path(args.bundle).resolve()
    prom_cfg_path = bundle / "prometheus" / "prometheus.yml"
    am_cfg_path = bundle / "alertmanager" / "alertmanager.yml"
    for path in (prom_cfg_path, am_cfg_path):
        if not path.is_file():
            raise StackError(f"{path}: not found (--bundle must name the folder holding prometheus/ and alertmanager/)")
    prometheus = args.prometheus_binary or _binary(["prometheus"], "--prometheus.binary")
    alertmanager = args.alertmanager_binary or _binary(["prometheus-alertmanager", "alertmanager"],
                                                       "--alertmanager.binary")
    addrs = Addresses(args.exporter or args.exporter_listen_address, args.prometheus_listen_address,
                      args.alertmanager_listen_address)
    wanted = {"the exporter (--exporter.listen-address)": args.exporter_listen_address} if not args.exporter else {}
    wanted["Prometheus (--prometheus.listen-address)"] = args.prometheus_listen_address
    wanted["Alertmanager (--alertmanager.listen-address)"] = args.alertmanager_listen_address
    if not args.webhook_url:
        wanted["the notification printer (--webhook.listen-address)"] = args.webhook_listen_address
    for service, (binary, _default) in SYSTEM_EXPORTERS.items():
        if shutil.which(binary):
            flag = service.replace("-", "_") + "_listen_address"
            wanted[f"{binary} (--{service}.listen-address)"] = getattr(args, flag)
    check_ports(wanted)
    demo = bool(getattr(args, "demo", False))
    scrape_interval = args.scrape_interval or (DEMO_INTERVAL if demo else None)
    if demo and not args.exporter and args.anomaly_after is None:
        args.anomaly_after = DEMO_ANOMALY_AFTER
    data_dir = Path(args.data_dir).resolve() if args.data_dir else Path(tempfile.mkdtemp(prefix="modelmon-stack-"))
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        config = yaml.safe_load(prom_cfg_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise StackError(f"{prom_cfg_path}: {exc}") from None
    local_cfg_path = data_dir / "prometheus.yml"

    stack = Stack(data_dir)
    printer = None
    try:
        addrs.system = start_system_exporters(stack, args, bundle)
        local_cfg = rewrite_prometheus_config(config, prom_cfg_path.parent, addrs, scrape_interval)
        if demo:
            local_cfg["rule_files"] = write_demo_rules(local_cfg["rule_files"], data_dir / "demo-rules")
        local_cfg_path.write_text("# Written by `modelmon stack` from " + str(prom_cfg_path) + "\n"
                                  + yaml.safe_dump(local_cfg, sort_keys=False))
        if args.webhook_url:
            webhook_url = args.webhook_url
        else:
            printer = WebhookPrinter(args.webhook_listen_address, demo)
            webhook_url = printer.url
        am_cfg = render_alertmanager_config(am_cfg_path, data_dir / "alertmanager.yml", webhook_url)
        if demo:
            am_cfg = demo_alertmanager_config(am_cfg, data_dir / "alertmanager-demo.yml")
        stack.start("alertmanager", [
            alertmanager, f"--config.file={am_cfg}", f"--storage.path={data_dir / 'alertmanager-data'}",
            f"--web.listen-address={addrs.alertmanager}", "--cluster.listen-address=",
        ], f"http://{_local(addrs.alertmanager)}/-/ready")
        if not args.exporter:
            cmd = [sys.executable, "-m", "modelmon", "serve", f"--web.listen-address={addrs.exporter}"]
            if args.config:
                cmd += ["--config", args.config]
            for flag in ("scenario", "anomaly_after", "anomaly_duration", "rate", "seed"):
                value = getattr(args, flag)
                if value is not None:
                    cmd.append(f"--{flag.replace('_', '-')}={value}")
            stack.start("exporter", cmd, f"http://{_local(addrs.exporter)}/-/ready")
        stack.start("prometheus", [
            prometheus, f"--config.file={local_cfg_path}", f"--storage.tsdb.path={data_dir / 'prometheus-data'}",
            f"--web.listen-address={addrs.prometheus}", "--web.enable-lifecycle",
        ], f"http://{_local(addrs.prometheus)}/-/ready")
        prom_url = f"http://{_local(addrs.prometheus)}"
        banner = ""
        if demo:
            banner = (f"DEMO MODE, not the bundle's production timings: every alert's for: is {DEMO_FOR}, "
                      f"rule ranges are {DEMO_RANGE} instead of 5m, scrape and evaluation every "
                      f"{scrape_interval}, Alertmanager group_wait {DEMO_GROUP_WAIT} / group_interval "
                      f"{DEMO_GROUP_INTERVAL}" + (f", anomaly after {args.anomaly_after}" if not args.exporter else "")
                      + ". Alerts reach this terminal within a minute or two of the anomaly.\n")
        print(banner + f"modelmon stack{' DEMO' if demo else ''} running (logs and data in {data_dir}):\n"
              f"  exporter      http://{_local(addrs.exporter)}/metrics\n"
              f"  Prometheus    {prom_url}  ({prometheus_links(prom_url)})\n"
              f"  Alertmanager  http://{_local(addrs.alertmanager)}\n"
              + "".join(f"  {name:<13} http://{_local(a)}/metrics\n" for name, a in addrs.system.items()) +
              f"  notifications {webhook_url}" + (" (printed below)" if printer else "") + "\n"
              "Ctrl-C stops everything.", flush=True)
        while not stop.wait(0.5):
            dead = stack.dead()
            if dead:
                print(f"modelmon: error: {dead.name} exited with status {dead.proc.returncode}:\n{dead.tail()}",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        stack.stop()
        if printer:
            printer.stop()
        if not args.data_dir:
            shutil.rmtree(data_dir, ignore_errors=True)


def cmd_stack(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    try:
        return run(args, stop)
    except StackError as exc:
        print(f"modelmon: error: {exc}", file=sys.stderr)
        return 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "stack", help="run exporter, Prometheus and Alertmanager locally with the bundle's configs (no Docker)",
        description="Start a local exporter (simulated unless --exporter names a running one), Prometheus with "
                    "the bundle's prometheus.yml and rules, and Alertmanager with its alertmanager.yml, pointed "
                    "at each other on this machine. Ctrl-C stops them. Exit 2 on bad input or a server that "
                    "does not start, 1 if one dies while running.",
    )
    p.add_argument("--bundle", default=str(DEFAULT_BUNDLE), metavar="DIR",
                   help="folder holding prometheus/ and alertmanager/ (default: this checkout)")
    p.add_argument("--exporter", metavar="HOST:PORT", help="scrape this running exporter instead of starting one")
    p.add_argument("--config", metavar="FILE", help="exporter config (default: the simulated demo model)")
    p.add_argument("--scenario", help="simulator scenario (e.g. incident)")
    p.add_argument("--anomaly-after", metavar="DURATION")
    p.add_argument("--anomaly-duration", metavar="DURATION")
    p.add_argument("--rate", type=float, help="simulated requests per second")
    p.add_argument("--seed", type=int)
    p.add_argument("--exporter.listen-address", dest="exporter_listen_address", default="127.0.0.1:9874",
                   metavar="HOST:PORT")
    p.add_argument("--prometheus.listen-address", dest="prometheus_listen_address", default="127.0.0.1:9090",
                   metavar="HOST:PORT")
    p.add_argument("--alertmanager.listen-address", dest="alertmanager_listen_address", default="127.0.0.1:9093",
                   metavar="HOST:PORT")
    for service, (binary, default) in SYSTEM_EXPORTERS.items():
        p.add_argument(f"--{service}.listen-address", dest=service.replace("-", "_") + "_listen_address",
                       default=default, metavar="HOST:PORT", help=f"where {binary} listens, when installed")
    p.add_argument("--webhook.listen-address", dest="webhook_listen_address", default="127.0.0.1:5001",
                   metavar="HOST:PORT", help="where the built-in receiver printing notifications listens")
    p.add_argument("--webhook-url", metavar="URL",
                   help="send notifications here instead of the built-in receiver (sets MODELMON_WEBHOOK_URL)")
    p.add_argument("--prometheus.binary", dest="prometheus_binary", metavar="PATH")
    p.add_argument("--alertmanager.binary", dest="alertmanager_binary", metavar="PATH")
    p.add_argument("--scrape-interval", metavar="DURATION",
                   help="override the bundle's scrape and evaluation interval (e.g. 1s for a quick demo)")
    p.add_argument("--data-dir", metavar="DIR", help="keep logs and data here (default: a temp dir removed on exit)")
    p.add_argument("--demo", action="store_true",
                   help=f"demo timings, not for production: rules with for: {DEMO_FOR} and {DEMO_RANGE} ranges, "
                        f"{DEMO_INTERVAL} scrape/evaluation, short Alertmanager grouping, anomaly after "
                        f"{DEMO_ANOMALY_AFTER}; every scenario's alerts reach the terminal within a minute or two")
    p.set_defaults(func=cmd_stack)
