"""Kubernetes packaging (deploy/kubernetes): ``kubectl kustomize`` renders the
root, ``base/`` and ``overlays/hardened/`` (offline, no cluster), and the
rendered objects fit together: every object lands in the ``modelmon``
namespace, the generated PrometheusRule holds exactly the groups of
prometheus/rules/*.yml (and promtool accepts them), the dashboard ConfigMaps
hold exactly grafana/dashboards/*.json, the hardened overlay really patches
the base, and the exporter's args and config in the rendered manifests are
accepted by modelmon itself."""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from modelmon.cli import build_parser
from modelmon.config import config_from_dict
from modelmon.inference_log import validate_logs_config
from modelmon.webauth import WebSecurity, load_web_config_file
from servers import require_binary

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
BASE = K8S / "base"
HARDENED = K8S / "overlays" / "hardened"
REGENERATE = "python deploy/kubernetes/generate.py"
Objects = dict[tuple[str, str], dict[str, Any]]


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


@functools.cache
def _kustomize(directory: Path) -> str:
    r = subprocess.run([require_binary("kubectl"), "kustomize", str(directory)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, f"kubectl kustomize {directory.relative_to(REPO)} failed:\n{r.stderr}"
    # Only the deprecation warnings for the kustomize-v2 spellings we keep on purpose (see the kustomizations).
    others = [line for line in r.stderr.splitlines()
              if line.strip() and not re.match(r"# Warning: '(bases|patchesStrategicMerge)' is deprecated", line)]
    assert not others, "\n".join(others)
    return r.stdout


def render(directory: Path) -> Objects:
    """What ``kubectl kustomize DIR`` would apply, keyed by (kind, name)."""
    out: Objects = {}
    for d in yaml.safe_load_all(_kustomize(directory)):
        key = (d["kind"], d["metadata"]["name"])
        assert key not in out, f"{key} twice in {directory}"
        out[key] = d
    return out


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_root_renders_the_base() -> None:
    # `kubectl apply -k deploy/kubernetes` (the README's command) deploys exactly the base.
    assert _kustomize(K8S) == _kustomize(BASE)


@pytest.mark.parametrize("directory", [BASE, HARDENED], ids=["base", "hardened"])
def test_every_object_lands_in_the_modelmon_namespace(directory: Path) -> None:
    objs = render(directory)
    assert ("Namespace", "modelmon") in objs
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= {k for k, _ in objs}
    for (kind, name), d in objs.items():
        if kind != "Namespace":
            assert d["metadata"].get("namespace") == "modelmon", f"{kind}/{name} would land in the default namespace"
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "modelmon", f"{kind}/{name}"
    (ns,) = [d for (k, _), d in objs.items() if k == "Namespace"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_generated_files_are_up_to_date() -> None:
    r = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stderr.strip()} (prometheus/rules or grafana/dashboards changed: run {REGENERATE})"


def test_prometheusrule_groups_equal_the_rule_files(tmp_path: Path) -> None:
    rule = render(BASE)[("PrometheusRule", "modelmon")]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    expected = []
    files = sorted((REPO / "prometheus" / "rules").glob("*.yml"))
    assert files, "no rule files in prometheus/rules"
    for f in files:
        expected += yaml.safe_load(f.read_text())["groups"]
    assert rule["spec"]["groups"] == expected, f"PrometheusRule differs from prometheus/rules/*.yml: run {REGENERATE}"
    names = [g["name"] for g in expected]
    assert len(names) == len(set(names)), "group names must be unique across rule files (one PrometheusRule)"
    # What the operator hands to Prometheus must pass promtool too.
    out = tmp_path / "rules.yml"
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    r = subprocess.run([require_binary("promtool"), "check", "rules", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_dashboard_configmaps_hold_the_dashboards() -> None:
    objs = render(BASE)
    files = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    cms = {n: d for (k, n), d in objs.items() if k == "ConfigMap" and n.startswith("modelmon-dashboard-")}
    assert files and len(cms) == len(files)
    for f in files:
        cm = cms[f"modelmon-dashboard-{f.stem.removeprefix('modelmon-')}"]
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"]["grafana_folder"] == "modelmon"
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text()), f"{f.name} changed: run {REGENERATE}"
        # kubectl apply keeps a copy in an annotation limited to 256 KiB.
        assert len(json.dumps(cm)) * 2 < 256 * 1024


def test_every_manifest_parses() -> None:
    files = sorted(K8S.rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        for d in docs(path):
            assert d.get("apiVersion") and d.get("kind"), path
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], path


def test_base_deployment_service_and_servicemonitor_fit_together() -> None:
    o = render(BASE)
    dep, svc, sm = o[("Deployment", "modelmon")], o[("Service", "modelmon")], o[("ServiceMonitor", "modelmon")]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert set(sm["spec"]["podTargetLabels"]) <= set(pod_labels)
    c = _container(dep)
    assert c["image"] == "modelmon:0.1.0"  # the kustomization's images: entry
    port_names = {p["name"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    # Restricted pod security: non-root, no privilege escalation, no capabilities, read-only root.
    pod_sc, sc = dep["spec"]["template"]["spec"]["securityContext"], c["securityContext"]
    assert pod_sc["runAsNonRoot"] and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    # modelmon accepts the container's args, and its config from the ConfigMap at the path the args name.
    args = build_parser().parse_args(c["args"])
    assert args.func == "modelmon.serve_cli:cmd_serve"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cfg_dir = Path(args.config).parent
    (vol,) = [n for n, p in mounts.items() if Path(p) == cfg_dir]
    cm = o[("ConfigMap", volumes[vol]["configMap"]["name"])]
    config_from_dict(yaml.safe_load(cm["data"][Path(args.config).name]), source=args.config)
    # The probes ask the exporter's own health endpoints (tests/test_core_serve_e2e.py serves them).
    assert c["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in port_names
        assert c[probe]["httpGet"].get("scheme", "HTTP") == "HTTP"


def test_hardened_overlay_patches_the_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base, hard = render(BASE), render(HARDENED)
    assert set(hard) == set(base) | {("NetworkPolicy", "modelmon")}
    dep = hard[("Deployment", "modelmon")]
    c = _container(dep)
    base_c = _container(base[("Deployment", "modelmon")])
    # The patch is merged, not a replacement: the base's security context, ports and config mount stay.
    assert c["securityContext"] == base_c["securityContext"] and c["ports"] == base_c["ports"]
    assert c["image"] == base_c["image"] and c["resources"] == base_c["resources"]
    args = build_parser().parse_args(c["args"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert set(mounts) == {"config", "web-config", "tls"}
    assert Path(args.config).parent == Path(mounts["config"])
    assert Path(args.web_config_file).parent == Path(mounts["web-config"])
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert volumes["web-config"]["secret"]["secretName"] == "modelmon-web-config"
    assert volumes["tls"]["secret"]["secretName"] == "modelmon-tls"
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["scheme"] == "HTTPS"
        assert c[probe]["periodSeconds"] == base_c[probe]["periodSeconds"]  # merged, not replaced
    # The example web config, with a real hash in place of the placeholder, loads; its certificate
    # paths are where the TLS Secret is mounted.
    example = (HARDENED / "web.yml.example").read_text()
    placeholder = re.search(r"\$2b\$12\$\S+", example).group(0)
    web = tmp_path / "web.yml"
    web.write_text(example)
    with pytest.raises(Exception, match="bcrypt hash"):  # the placeholder itself is refused at start
        WebSecurity(load_web_config_file(web), str(web), field_prefix="")
    web.write_text(example.replace(placeholder, bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()))
    web_cfg = load_web_config_file(web)
    for f in (web_cfg.tls_server_config.cert_file, web_cfg.tls_server_config.key_file):
        assert Path(f).parent == Path(mounts["tls"])
    # The patched config replaced the base's and needs the token variable the patch sets from the Secret.
    cm = hard[("ConfigMap", "modelmon-config")]
    assert cm["data"] != base[("ConfigMap", "modelmon-config")]["data"]
    conf = config_from_dict(yaml.safe_load(cm["data"]["modelmon.yml"]))
    env = {e["name"]: e for e in c["env"]}
    assert conf.ingest.token_env in env and conf.logs.hash_salt_env in env
    assert env[conf.ingest.token_env]["valueFrom"]["secretKeyRef"]["name"] == "modelmon-ingest-token"
    monkeypatch.setenv(conf.logs.hash_salt_env, "x")
    validate_logs_config(conf)
    # Prometheus scrapes over HTTPS with credentials.
    (ep,) = hard[("ServiceMonitor", "modelmon")]["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["basicAuth"] and ep["tlsConfig"]["ca"]
    # The NetworkPolicy selects the exporter's pods and opens only its port.
    np = hard[("NetworkPolicy", "modelmon")]
    assert np["spec"]["podSelector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    ports = {p["port"] for rule in np["spec"]["ingress"] for p in rule["ports"]}
    assert ports == {p["containerPort"] for p in c["ports"]}
