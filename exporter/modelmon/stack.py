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
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import signal
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
    """A local Alertmanager webhook receiver: one line per alert on stdout."""

    def __init__(self, address: str):
        host, _, port = _local(address).rpartition(":")

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                try:
                    body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                    for alert in body.get("alerts", []):
                        labels = alert.get("labels", {})
                        print(f"notification [{body.get('receiver')}] {alert.get('status')} "
                              f"{labels.get('alertname')} model={labels.get('model', '-')} "
                              f"severity={labels.get('severity', '-')}: "
                              f"{alert.get('annotations', {}).get('summary', '')}", flush=True)
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
        local_cfg = rewrite_prometheus_config(config, prom_cfg_path.parent, addrs, args.scrape_interval)
        local_cfg_path.write_text("# Written by `modelmon stack` from " + str(prom_cfg_path) + "\n"
                                  + yaml.safe_dump(local_cfg, sort_keys=False))
        if args.webhook_url:
            webhook_url = args.webhook_url
        else:
            printer = WebhookPrinter(args.webhook_listen_address)
            webhook_url = printer.url
        am_cfg = render_alertmanager_config(am_cfg_path, data_dir / "alertmanager.yml", webhook_url)
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
        print(f"modelmon stack running (logs and data in {data_dir}):\n"
              f"  exporter      http://{_local(addrs.exporter)}/metrics\n"
              f"  Prometheus    http://{_local(addrs.prometheus)}  (alerts: /alerts, rules: /rules)\n"
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
    p.set_defaults(func=cmd_stack)
