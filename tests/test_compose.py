"""docker-compose.yml validates, references only files that exist, and its
Prometheus / Alertmanager / Grafana mounts line up with the bundle's folders
and with what the configs inside them expect.

No Docker daemon here: Debian's ``docker-compose`` validates and resolves the
file offline (``docker-compose config``); the rest is read from the resolved
output and the bundle's own files.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
PINNED = re.compile(r"^[\w./-]+:v?\d+\.\d+\.\d+(-[\w.-]+)?$")
ENV_KEYS = ("MODELMON_SCENARIO", "MODELMON_ANOMALY_AFTER", "GRAFANA_ADMIN_PASSWORD", "MODELMON_BIND",
            "MODELMON_WEBHOOK_URL")


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found; install it with: apt-get install -y docker-compose "
                    "(or run scripts/install-deps.sh)", pytrace=False)
    clean = {k: v for k, v in os.environ.items() if k not in ENV_KEYS and not k.startswith("COMPOSE_")}
    return subprocess.run([binary, "-f", str(COMPOSE), *args], cwd=REPO, capture_output=True, text=True,
                          env={**clean, **(env or {})}, timeout=60)


def resolved(env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = compose("config", env=env)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return resolved()


#: Services that read the host itself (read-only): node_exporter and cAdvisor.
HOST_READERS = {"node-exporter", "cadvisor"}


def mounts(service: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(source, container path, is_bind) for each volume entry."""
    return [(s, t, b) for s, t, b, _ in mounts_ro(service)]


def mounts_ro(service: dict[str, Any]) -> list[tuple[str, str, bool, bool]]:
    """(source, container path, is_bind, read-only) for each volume entry."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            parts = v.split(":")
            source, target = parts[0], parts[1]
            ro = len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            source, target, ro = v["source"], v["target"], bool(v.get("read_only"))
        out.append((source, target, source.startswith("/"), ro))
    return out


def host_path(service: dict[str, Any], container_path: str) -> Path:
    """The host file behind a container path, through the service's bind mounts."""
    best = None
    for source, target, is_bind in mounts(service):
        if is_bind and (container_path == target or container_path.startswith(target.rstrip("/") + "/")):
            if best is None or len(target) > len(best[1]):
                best = (source, target)
    assert best, f"{container_path} is not inside any bind mount of the service"
    rel = PurePosixPath(container_path).relative_to(best[1])
    return Path(best[0]) / rel


def flag(service: dict[str, Any], name: str) -> str | None:
    for arg in service.get("command", []) or []:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def test_compose_file_validates() -> None:
    proc = compose("config", "-q")
    assert proc.returncode == 0, f"docker-compose config -q failed:\n{proc.stderr}"


def test_services_images_pinned_healthchecks(cfg: dict[str, Any]) -> None:
    services = cfg["services"]
    assert {"exporter", "prometheus", "alertmanager", "grafana", "webhook"} <= set(services)
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        if "build" not in svc:
            assert PINNED.match(svc["image"]), f"{name}: image {svc['image']} is not pinned to a version"
    dockerfile = (REPO / "exporter" / "Dockerfile").read_text()
    bases = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert bases and all(PINNED.match(b) for b in bases), f"Dockerfile base images not pinned: {bases}"


def test_build_context_and_dockerignore(cfg: dict[str, Any]) -> None:
    exporter = cfg["services"]["exporter"]
    context = Path(exporter["build"]["context"])
    assert (context / exporter["build"]["dockerfile"]).is_file()
    dockerfile = (context / exporter["build"]["dockerfile"]).read_text()
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore should start by excluding everything"
    for sources in re.findall(r"^COPY\s+(.+)\s+\S+$", dockerfile, re.M):
        for src in sources.split():
            assert (context / src).exists(), f"Dockerfile copies missing {src}"
            assert f"!{src}" in ignore, f".dockerignore excludes {src}, which the Dockerfile copies"
    # pyproject's readme must be in the image too, or `pip install .` fails.
    assert "!README.md" in ignore and "!pyproject.toml" in ignore


def test_bind_mounts_exist_and_data_uses_named_volumes(cfg: dict[str, Any]) -> None:
    declared = set(cfg.get("volumes", {}))
    data_paths = {"prometheus": flag(cfg["services"]["prometheus"], "storage.tsdb.path"),
                  "alertmanager": "/alertmanager", "grafana": "/var/lib/grafana"}
    for name, svc in cfg["services"].items():
        for source, target, is_bind, ro in mounts_ro(svc):
            if is_bind and name in HOST_READERS:
                # The host's own folders (absent on a machine without Docker), never writable.
                assert ro, f"{name}: host path {source} must be mounted read-only"
            elif is_bind:
                assert Path(source).exists(), f"{name}: mounts missing {source}"
                assert Path(source).resolve().is_relative_to(REPO), f"{name}: mounts {source} outside the repo"
            else:
                assert source in declared, f"{name}: volume {source} not declared"
    for name, path in data_paths.items():
        named = {t for s, t, b in mounts(cfg["services"][name]) if not b}
        assert path in named, f"{name}: data at {path} should be a named volume"
    assert "/alertmanager" == flag(cfg["services"]["alertmanager"], "storage.path")


def test_prometheus_mount_config_and_targets(cfg: dict[str, Any]) -> None:
    svc = cfg["services"]["prometheus"]
    config_path = host_path(svc, flag(svc, "config.file"))
    assert config_path == REPO / "prometheus" / "prometheus.yml" and config_path.is_file()
    prom = yaml.safe_load(config_path.read_text())
    rule_files = [f for pattern in prom["rule_files"] for f in glob.glob(str(config_path.parent / pattern))]
    assert set(map(Path, rule_files)) == set((REPO / "prometheus" / "rules").glob("*.yml")), \
        "prometheus.yml's rule_files must load every file in prometheus/rules/"
    ports = {"exporter": flag(cfg["services"]["exporter"], "web.listen-address").rsplit(":", 1)[1],
             "alertmanager": "9093", "prometheus": "9090", "cadvisor": "8080"}
    for name in ("node-exporter", "blackbox-exporter"):
        ports[name] = flag(cfg["services"][name], "web.listen-address").rsplit(":", 1)[1]
    scraped = [job for job in prom["scrape_configs"] if job.get("metrics_path") != "/probe"]
    targets = [t for job in scraped for sc in job.get("static_configs", []) for t in sc["targets"]]
    targets += [t for am in prom["alerting"]["alertmanagers"] for sc in am["static_configs"] for t in sc["targets"]]
    for target in targets:
        host, port = target.rsplit(":", 1)
        if host == "localhost":
            assert port == "9090", f"{target}: only Prometheus itself is localhost inside its container"
            continue
        assert host in cfg["services"], f"prometheus.yml targets {target}, not a compose service"
        assert ports.get(host) == port, f"prometheus.yml targets {target}, but {host} listens on {ports.get(host)}"
    job_targets = {job["job_name"]: job for job in prom["scrape_configs"]}
    assert "modelmon" in job_targets, "the dashboards' job variable and the exporter alerts expect job=modelmon"
    # Probes: the probed URLs and the blackbox_exporter they go through are compose services.
    probes = [job for job in prom["scrape_configs"] if job.get("metrics_path") == "/probe"]
    assert [j["job_name"] for j in probes] == ["blackbox"]
    relabel = probes[0]["relabel_configs"]
    address = next(r["replacement"] for r in relabel if r.get("target_label") == "__address__")
    host, port = address.rsplit(":", 1)
    assert ports.get(host) == port, f"probes go through {address}, but {host} listens on {ports.get(host)}"
    for sc in probes[0]["static_configs"]:
        for url in sc["targets"]:
            u = urlsplit(url)
            assert u.hostname in cfg["services"] and str(u.port) == ports[u.hostname], url
            assert sc["labels"]["probe"] in ("model", "exporter"), sc
            if sc["labels"]["probe"] == "model":
                assert sc["labels"].get("model"), f"{url}: a model probe needs the model label"


def test_system_exporters(cfg: dict[str, Any]) -> None:
    """node_exporter, cAdvisor and blackbox_exporter run beside the model,
    and every target on the Docker host shares one `host` label."""
    services = cfg["services"]
    assert HOST_READERS | {"blackbox-exporter"} <= set(services)
    node = services["node-exporter"]
    assert node.get("pid") == "host" and flag(node, "path.rootfs") == "/host"
    assert ("/", "/host") in [(s, t) for s, t, _ in mounts(node)]
    assert services["cadvisor"].get("privileged") is True
    blackbox = services["blackbox-exporter"]
    config_path = host_path(blackbox, flag(blackbox, "config.file"))
    assert config_path == REPO / "blackbox" / "blackbox.yml"
    modules = yaml.safe_load(config_path.read_text())["modules"]
    prom = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    assert {"node", "cadvisor", "blackbox"} <= set(jobs)
    for module in jobs["blackbox"]["params"]["module"]:
        assert module in modules, f"prometheus.yml probes with module {module}, not in blackbox.yml"
    for name in ("modelmon", "node", "cadvisor", "blackbox"):
        hosts = {sc.get("labels", {}).get("host") for sc in jobs[name]["static_configs"]}
        assert hosts == {"docker-host"}, (name, hosts)
    # No system exporter is published beyond the compose network.
    for name in (*HOST_READERS, "blackbox-exporter"):
        assert not services[name].get("ports"), f"{name} needs no published port"
    for name in (*HOST_READERS, "blackbox-exporter"):
        assert name in services["prometheus"].get("depends_on", {}), name


@pytest.mark.e2e  # runs a server binary (its --config.check mode)
def test_blackbox_config_is_valid() -> None:
    binary = shutil.which("prometheus-blackbox-exporter")
    if binary is None:
        pytest.fail("prometheus-blackbox-exporter not found; run scripts/install-deps.sh", pytrace=False)
    proc = subprocess.run([binary, "--config.check", f"--config.file={REPO / 'blackbox' / 'blackbox.yml'}"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def test_alertmanager_mount_entrypoint_and_templates(cfg: dict[str, Any]) -> None:
    svc = cfg["services"]["alertmanager"]
    entry = svc.get("entrypoint") or []
    script = next((a for a in entry if a.endswith(".sh")), None)
    if script:
        script_path = host_path(svc, script)
        assert script_path.is_file(), f"entrypoint {script} -> {script_path} missing"
        config_path = script_path.parent / "alertmanager.yml"
        assert "--config.file" not in " ".join(svc.get("command", [])), "the entrypoint passes --config.file"
    else:
        config_path = host_path(svc, flag(svc, "config.file"))
    assert config_path == REPO / "alertmanager" / "alertmanager.yml" and config_path.is_file()
    am = yaml.safe_load(config_path.read_text())
    for pattern in am.get("templates", []):
        assert glob.glob(str(config_path.parent / pattern)), f"alertmanager.yml template {pattern} matches nothing"
    webhook = cfg["services"]["alertmanager"]["environment"].get("MODELMON_WEBHOOK_URL", "")
    assert urlsplit(webhook).hostname in cfg["services"], f"default webhook {webhook} is not a compose service"


def test_grafana_provisioning_lines_up(cfg: dict[str, Any]) -> None:
    svc = cfg["services"]["grafana"]
    provisioning = host_path(svc, "/etc/grafana/provisioning")
    assert provisioning == REPO / "grafana" / "provisioning"
    datasources = [yaml.safe_load(p.read_text()) for p in sorted((provisioning / "datasources").glob("*.yml"))]
    providers = [yaml.safe_load(p.read_text()) for p in sorted((provisioning / "dashboards").glob("*.yml"))]
    assert datasources and providers
    ds = {d["uid"]: d for f in datasources for d in f["datasources"]}
    prom = ds["modelmon-prometheus"]
    assert prom["type"] == "prometheus" and prom.get("isDefault")
    for d in ds.values():
        url = urlsplit(d["url"])
        assert url.hostname in cfg["services"], f"datasource {d['name']} points at {d['url']}, not a compose service"
        assert str(url.port) == {"prometheus": "9090", "alertmanager": "9093"}[url.hostname]
    scrape = yaml.safe_load((REPO / "prometheus" / "prometheus.yml").read_text())["global"]["scrape_interval"]
    assert prom["jsonData"]["timeInterval"] == scrape, "$__rate_interval needs Prometheus's scrape interval"
    dashboards = sorted(p.name for p in (REPO / "grafana" / "dashboards").glob("*.json"))
    for f in providers:
        for provider in f["providers"]:
            folder = host_path(svc, provider["options"]["path"])
            assert folder == REPO / "grafana" / "dashboards", f"provider reads {folder}"
            assert sorted(p.name for p in folder.glob("*.json")) == dashboards and dashboards
    home = host_path(svc, svc["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home.is_file()
    for path in (REPO / "grafana" / "dashboards").glob("*.json"):
        var = next(v for v in json.loads(path.read_text())["templating"]["list"] if v["name"] == "datasource")
        assert var["current"]["value"] in ds, f"{path.name}: datasource default is not a provisioned uid"


def test_grafana_access_and_password_from_env() -> None:
    default = resolved()["services"]["grafana"]["environment"]
    assert default["GF_SECURITY_ADMIN_PASSWORD"] == "admin"
    assert default["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and default["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    custom = resolved({"GRAFANA_ADMIN_PASSWORD": "s3cret"})["services"]["grafana"]["environment"]
    assert custom["GF_SECURITY_ADMIN_PASSWORD"] == "s3cret"


def test_scenario_and_bind_address_from_env() -> None:
    default = resolved()["services"]
    assert "--scenario=normal" in default["exporter"]["command"]
    incident = resolved({"MODELMON_SCENARIO": "incident", "MODELMON_ANOMALY_AFTER": "30s"})["services"]
    assert "--scenario=incident" in incident["exporter"]["command"]
    assert "--anomaly-after=30s" in incident["exporter"]["command"]
    for name, svc in default.items():
        for port in svc.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else str(port).split(":")[0]
            assert host_ip == "127.0.0.1", f"{name}: published beyond this machine by default ({port})"


def test_scenario_names_are_the_simulators() -> None:
    """The compose comment lists the scenarios; they must be the real ones."""
    from modelmon.sources.simulator import SCENARIOS

    header = COMPOSE.read_text().split("services:")[0]
    for name in SCENARIOS:
        assert name in header, f"docker-compose.yml does not mention scenario {name}"
