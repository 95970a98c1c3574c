"""Kubernetes packaging (deploy/kubernetes): the manifests parse and fit
together, the generated PrometheusRule holds exactly the groups of
prometheus/rules/*.yml (and promtool accepts them), the dashboard ConfigMaps
hold exactly grafana/dashboards/*.json, and the exporter's args and config in
the manifests are accepted by modelmon itself.  No cluster here: kubectl and
kustomize are not installable, so the references between files are checked
by reading them."""

from __future__ import annotations

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
from modelmon.webauth import load_web_config_file
from servers import require_binary

REPO = Path(__file__).resolve().parent.parent
K8S = REPO / "deploy" / "kubernetes"
HARDENED = K8S / "hardened"
REGENERATE = "python deploy/kubernetes/generate.py"


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


def base_objects() -> dict[tuple[str, str], dict[str, Any]]:
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out = {}
    for res in kust["resources"]:
        for d in docs(K8S / res):
            out[(d["kind"], d["metadata"]["name"])] = d
    return out


def test_generated_files_are_up_to_date() -> None:
    r = subprocess.run([sys.executable, str(K8S / "generate.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, f"{r.stderr.strip()} (prometheus/rules or grafana/dashboards changed: run {REGENERATE})"


def test_prometheusrule_groups_equal_the_rule_files(tmp_path: Path) -> None:
    (rule,) = docs(K8S / "prometheusrule.yaml")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["kind"] == "PrometheusRule"
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
    cms = {d["metadata"]["name"]: d for d in docs(K8S / "dashboards.yaml")}
    files = sorted((REPO / "grafana" / "dashboards").glob("*.json"))
    assert files and len(cms) == len(files)
    for f in files:
        cm = cms[f"modelmon-dashboard-{f.stem.removeprefix('modelmon-')}"]
        assert cm["kind"] == "ConfigMap" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert json.loads(cm["data"][f.name]) == json.loads(f.read_text()), f"{f.name} changed: run {REGENERATE}"
        # kubectl apply keeps a copy in an annotation limited to 256 KiB.
        assert len(json.dumps(cm)) * 2 < 256 * 1024


def test_every_manifest_parses_and_kustomizations_resolve() -> None:
    for path in sorted(K8S.rglob("*.yaml")):
        for d in docs(path):
            assert d.get("apiVersion") and d.get("kind"), path
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], path
    objects = base_objects()
    for kust_path in (K8S / "kustomization.yaml", HARDENED / "kustomization.yaml"):
        kust = yaml.safe_load(kust_path.read_text())
        for res in kust.get("resources", []):
            assert (kust_path.parent / res).exists(), (kust_path, res)
        for patch in kust.get("patches", []):
            (p,) = docs(kust_path.parent / patch["path"])
            assert (p["kind"], p["metadata"]["name"]) in objects, f"{patch['path']} patches nothing in the base"
    kinds = {k for k, _ in objects}
    assert {"Deployment", "Service", "ServiceMonitor", "PrometheusRule", "ConfigMap", "Namespace"} <= kinds


def _container(dep: dict[str, Any]) -> dict[str, Any]:
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    return c


def test_deployment_service_and_servicemonitor_fit_together() -> None:
    from modelmon.app import Exporter

    o = base_objects()
    dep, svc, sm = o[("Deployment", "modelmon")], o[("Service", "modelmon")], o[("ServiceMonitor", "modelmon")]
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert set(sm["spec"]["podTargetLabels"]) <= set(pod_labels)
    c = _container(dep)
    port_names = {p["name"] for p in c["ports"]}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} <= port_names
    assert {e["port"] for e in sm["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    # Restricted pod security: non-root, no privilege escalation, no capabilities, read-only root.
    pod_sc, sc = dep["spec"]["template"]["spec"]["securityContext"], c["securityContext"]
    assert pod_sc["runAsNonRoot"] and pod_sc["seccompProfile"]["type"] == "RuntimeDefault"
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    # modelmon accepts the container's args, and its config from the ConfigMap at the path the args name.
    args = build_parser().parse_args(c["args"])
    assert args.func.__name__ == "cmd_serve"
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    cfg_dir = Path(args.config).parent
    (vol,) = [n for n, p in mounts.items() if Path(p) == cfg_dir]
    cm = o[("ConfigMap", volumes[vol]["configMap"]["name"])]
    cfg = config_from_dict(yaml.safe_load(cm["data"][Path(args.config).name]), source=args.config)
    # The probes' paths are the exporter's, and that config really serves them.
    exp = Exporter(cfg, listen="127.0.0.1:0")
    try:
        for probe in ("readinessProbe", "livenessProbe"):
            assert ("GET", c[probe]["httpGet"]["path"]) in exp.app.routes
            assert c[probe]["httpGet"]["port"] in port_names
    finally:
        exp.stop()


def test_hardened_overlay_is_accepted_by_modelmon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelmon.inference_log import validate_logs_config

    (dep_patch,) = docs(HARDENED / "deployment-patch.yaml")
    c = _container(dep_patch)
    args = build_parser().parse_args(c["args"])
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert Path(args.web_config_file).parent == Path(mounts["web-config"])
    # The example web config, with a real hash in place of the placeholder, loads; its certificate
    # paths are where the TLS Secret is mounted.
    example = (HARDENED / "web.yml.example").read_text()
    placeholder = re.search(r"\$2b\$12\$\S+", example).group(0)
    with pytest.raises(Exception, match="bcrypt hash"):  # the placeholder itself is refused at start
        from modelmon.webauth import WebSecurity

        web = tmp_path / "web.yml"
        web.write_text(example)
        WebSecurity(load_web_config_file(web), str(web), field_prefix="")
    web.write_text(example.replace(placeholder, bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()))
    cfg = load_web_config_file(web)
    for f in (cfg.tls_server_config.cert_file, cfg.tls_server_config.key_file):
        assert Path(f).parent == Path(mounts["tls"])
    # The patched config needs the token variable the patch sets from the Secret.
    (cm,) = docs(HARDENED / "configmap-patch.yaml")
    conf = config_from_dict(yaml.safe_load(cm["data"]["modelmon.yml"]))
    env = {e["name"] for e in c["env"]}
    assert conf.ingest.token_env in env and conf.logs.hash_salt_env in env
    monkeypatch.setenv(conf.logs.hash_salt_env, "x")
    validate_logs_config(conf)
    # Prometheus scrapes over HTTPS with credentials.
    (sm,) = docs(HARDENED / "servicemonitor-patch.yaml")
    (ep,) = sm["spec"]["endpoints"]
    assert ep["scheme"] == "https" and ep["basicAuth"] and ep["tlsConfig"]["ca"]
