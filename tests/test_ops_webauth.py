"""TLS and basic auth on the exporter (exporter-toolkit web config): config
errors, the auth check, an in-process server over real TLS (server and client
certificates made by openssl), and a real Prometheus scraping
``modelmon serve --web.config.file`` over HTTPS with basic auth."""

from __future__ import annotations

import base64
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import bcrypt
import pytest
import requests
import yaml

from modelmon.app import Exporter
from modelmon.config import ConfigError, config_from_dict
from modelmon.webauth import WebSecurity, effective_web_config, load_web_config_file
from servers import ServerProcess, free_port, require_binary, wait_until

PASSWORD = "correct horse battery staple"
#: Cost 4 (bcrypt's minimum) keeps the tests fast; deployments should use 10+.
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()


def _openssl(*args: str, cwd: Path) -> None:
    if shutil.which("openssl") is None:
        pytest.fail("openssl not found on PATH; install it with: apt-get install -y openssl", pytrace=False)
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A test CA, a server certificate for 127.0.0.1 and a client certificate, all signed by the CA."""
    d = tmp_path_factory.mktemp("certs")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=modelmon-test-ca", cwd=d)
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=d)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=d)
    return d


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize("web, path, message", [
    ({"basic_auth_users": {"alice": "plaintext"}}, "web.basic_auth_users.alice", "bcrypt hash"),
    ({"tls_server_config": {"cert_file": "/x.crt"}}, "web.tls_server_config", "set together"),
    ({"tls_server_config": {"client_ca_file": "/ca.crt"}}, "web.tls_server_config", "need TLS"),
    ({"tls_server_config": {"cert_file": "/nonexistent.crt", "key_file": "/nonexistent.key"}},
     "web.tls_server_config", "cannot load certificate"),
    ({"tls_server_config": {"cert_file": "/x.crt", "key_file": "/x.key", "client_auth_type": "RequireAndVerifyClientCert"}},
     "web.tls_server_config.client_ca_file", "needs client_ca_file"),
    ({"http_server_config": {"headers": {"Content-Type": "text/html"}}}, "web.http_server_config.headers.Content-Type",
     "cannot be overridden"),
])
def test_inline_config_errors_name_the_field(web: dict, path: str, message: str) -> None:
    cfg = config_from_dict({"web": web})
    with pytest.raises(ConfigError) as err:
        WebSecurity(cfg.web, "modelmon.yml")
    assert err.value.field_path == path and message in str(err.value)


def test_web_config_file_errors_name_the_file(tmp_path: Path) -> None:
    f = tmp_path / "web.yml"
    f.write_text("tls_server_config:\n  cert_file: a.crt\n  cipher_suites: [x]\n")
    with pytest.raises(ConfigError) as err:
        load_web_config_file(f)
    assert str(f) in str(err.value) and "tls_server_config.cipher_suites: unknown field" in str(err.value)
    # Relative paths in the file are relative to the file, as in the exporter-toolkit.
    f.write_text("tls_server_config: {cert_file: tls/a.crt, key_file: /abs/a.key}\n")
    web = load_web_config_file(f)
    assert web.tls_server_config.cert_file == str(tmp_path / "tls" / "a.crt")
    assert web.tls_server_config.key_file == "/abs/a.key"
    # A file and inline settings at once is ambiguous.
    cfg = config_from_dict({"web": {"config_file": str(f), "basic_auth_users": {"a": HASH}}})
    with pytest.raises(ConfigError, match="not both"):
        effective_web_config(cfg)


def test_basic_auth_check() -> None:
    sec = WebSecurity(config_from_dict({"web": {"basic_auth_users": {"alice": HASH}}}).web)
    assert sec.check(_basic("alice", PASSWORD)) is None
    assert sec.check(_basic("alice", PASSWORD)) is None  # cached path
    assert sec.check(_basic("alice", "wrong")) == "invalid"
    assert sec.check(_basic("mallory", PASSWORD)) == "invalid"
    assert sec.check(None) == "missing"
    assert sec.check("Bearer abc") == "missing"
    assert sec.check("Basic !!!notbase64") == "invalid"
    assert sec.check("Basic " + base64.b64encode(b"no-colon").decode()) == "invalid"
    assert not sec.needs_auth("/-/healthy") and sec.needs_auth("/metrics") and sec.needs_auth("/api/v1/events")
    with_token = WebSecurity(config_from_dict({"web": {"basic_auth_users": {"alice": HASH}}}).web, bearer_paths=("/api/",))
    assert not with_token.needs_auth("/api/v1/events")


# --------------------------------------------------------------------------- in-process TLS


@pytest.fixture
def tls_exporter(certs: Path, request: pytest.FixtureRequest) -> Iterator[Exporter]:
    tls: dict[str, Any] = {"cert_file": str(certs / "server.crt"), "key_file": str(certs / "server.key")}
    tls.update(getattr(request, "param", {}))
    cfg = config_from_dict({
        "models": [{"name": "m"}],
        "web": {"tls_server_config": tls, "basic_auth_users": {"alice": HASH},
                "http_server_config": {"headers": {"Strict-Transport-Security": "max-age=31536000"}}},
    })
    exp = Exporter(cfg, listen="127.0.0.1:0")
    exp.start()
    yield exp
    exp.stop()


def test_tls_and_basic_auth_in_process(tls_exporter: Exporter, certs: Path) -> None:
    url = f"https://127.0.0.1:{tls_exporter.port}"
    ca = str(certs / "ca.crt")
    r = requests.get(url + "/metrics", verify=ca, timeout=10)
    assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Basic")
    r = requests.get(url + "/no/such/path", verify=ca, timeout=10)
    assert r.status_code == 401  # paths are not revealed before auth
    r = requests.get(url + "/metrics", verify=ca, auth=("alice", "wrong"), timeout=10)
    assert r.status_code == 401
    r = requests.get(url + "/metrics", verify=ca, auth=("alice", PASSWORD), timeout=10)
    assert r.status_code == 200 and "modelmon_model_info" in r.text
    assert r.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert 'modelmon_web_auth_failures_total{reason="missing"} 2.0' in r.text
    assert 'modelmon_web_auth_failures_total{reason="invalid"} 1.0' in r.text
    assert requests.get(url + "/-/healthy", verify=ca, timeout=10).status_code == 200  # probes need no credentials
    with pytest.raises(requests.exceptions.ConnectionError):  # plain HTTP on the TLS port
        requests.get(f"http://127.0.0.1:{tls_exporter.port}/metrics", timeout=10)
    with pytest.raises(requests.exceptions.SSLError):  # a client that does not trust the CA
        requests.get(url + "/-/healthy", timeout=10)
    r = requests.get(url + "/metrics", verify=ca, auth=("alice", PASSWORD), timeout=10)
    failures = [line for line in r.text.splitlines() if line.startswith("modelmon_web_tls_handshake_failures_total ")]
    assert failures and float(failures[0].split()[1]) >= 2
    # The new families pass the Prometheus linter.
    own = "\n".join(line for line in r.text.splitlines() if "modelmon_web_" in line) + "\n"
    lint = subprocess.run([require_binary("promtool"), "check", "metrics"], input=own, capture_output=True, text=True)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


def test_every_new_tls_connection_gets_its_first_request_answered(tls_exporter: Exporter, certs: Path) -> None:
    # A request sent right after the handshake must reach the server, however the two race.
    for _ in range(20):
        with requests.Session() as s:
            assert s.get(f"https://127.0.0.1:{tls_exporter.port}/-/healthy", verify=str(certs / "ca.crt"),
                         timeout=5).status_code == 200


def test_mutual_tls(certs: Path) -> None:
    cfg = config_from_dict({"models": [{"name": "m"}], "web": {"tls_server_config": {
        "cert_file": str(certs / "server.crt"), "key_file": str(certs / "server.key"),
        "client_auth_type": "RequireAndVerifyClientCert", "client_ca_file": str(certs / "ca.crt")}}})
    exp = Exporter(cfg, listen="127.0.0.1:0")
    exp.start()
    try:
        url = f"https://127.0.0.1:{exp.port}/metrics"
        ca = str(certs / "ca.crt")
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(url, verify=ca, timeout=10)
        r = requests.get(url, verify=ca, cert=(str(certs / "client.crt"), str(certs / "client.key")), timeout=10)
        assert r.status_code == 200
    finally:
        exp.stop()


# --------------------------------------------------------------------------- real Prometheus


class _TLSExporterProcess:
    """``modelmon serve --web.config.file`` in a subprocess, polled for readiness over HTTPS."""

    def __init__(self, workdir: Path, web_config: Path, ca: Path):
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "modelmon", "serve", f"--web.listen-address={self.address}",
               f"--web.config.file={web_config}", "--rate", "50", "--seed", "1"]
        self.process = ServerProcess(f"modelmon-tls-{self.port}", cmd, workdir)

        def ready() -> bool:
            if not self.process.alive():
                pytest.fail(f"exporter exited:\n{self.process.log_tail()}", pytrace=False)
            return requests.get(f"https://{self.address}/-/ready", verify=str(ca), timeout=2).status_code == 200

        wait_until(ready, 30, what="exporter over HTTPS")

    def stop(self) -> None:
        self.process.stop()


@pytest.mark.e2e
def test_prometheus_scrapes_over_tls_with_basic_auth(servers, certs: Path, tmp_path: Path) -> None:
    web = tmp_path / "web.yml"
    # Relative certificate paths: resolved against the web config file's folder.
    shutil.copytree(certs, tmp_path / "tls")
    web.write_text(yaml.safe_dump({
        "tls_server_config": {"cert_file": "tls/server.crt", "key_file": "tls/server.key"},
        "basic_auth_users": {"prometheus": HASH},
    }))
    exp = servers._track(_TLSExporterProcess(tmp_path, web, certs / "ca.crt"))
    base = {"scheme": "https", "tls_config": {"ca_file": str(certs / "ca.crt")},
            "static_configs": [{"targets": [exp.address]}]}
    prom = servers.prometheus({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "secure", "basic_auth": {"username": "prometheus", "password": PASSWORD}, **base},
            {"job_name": "wrong-password", "basic_auth": {"username": "prometheus", "password": "nope"}, **base},
        ],
    })
    prom.wait_for('up{job="secure"} == 1', timeout=30)
    prom.wait_for('modelmon_requests_total{job="secure"} > 0', timeout=30)
    wait_until(lambda: prom.api("targets")["activeTargets"] and all(
        t["lastError"] for t in prom.api("targets")["activeTargets"] if t["labels"]["job"] == "wrong-password"),
        20, what="wrong-password scrape to fail")
    targets = {t["labels"]["job"]: t for t in prom.api("targets")["activeTargets"]}
    # 401, then 429 once the wrong password has failed often enough (bcrypt is no longer run for it)
    assert targets["wrong-password"]["health"] == "down"
    assert "401" in targets["wrong-password"]["lastError"] or "429" in targets["wrong-password"]["lastError"]
    prom.wait_for('modelmon_web_auth_failures_total{job="secure",reason="invalid"} > 0', timeout=20)


def _serial(port: int, ca: Path) -> int:
    ctx = ssl.create_default_context(cafile=str(ca))
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
        der = s.getpeercert(binary_form=True)
    out = subprocess.run(["openssl", "x509", "-inform", "DER", "-noout", "-serial"], input=der, capture_output=True, check=True)
    return int(out.stdout.decode().strip().split("=")[1], 16)


def test_certificate_reloaded_when_file_changes_and_slow_clients_do_not_block(certs: Path, tmp_path: Path) -> None:
    import os
    import socket

    for f in ("server.crt", "server.key"):
        shutil.copy(certs / f, tmp_path / f)
    cfg = config_from_dict({"models": [{"name": "m"}], "web": {"tls_server_config": {
        "cert_file": str(tmp_path / "server.crt"), "key_file": str(tmp_path / "server.key")}}})
    exp = Exporter(cfg, listen="127.0.0.1:0")
    exp.start()
    try:
        # A client that connects and never starts the handshake must not stall the others.
        idle = socket.create_connection(("127.0.0.1", exp.port), timeout=5)
        first = _serial(exp.port, certs / "ca.crt")
        # Re-issue the server certificate (a new serial), as cert-manager would.
        _openssl("x509", "-req", "-in", str(certs / "server.csr"), "-CA", str(certs / "ca.crt"), "-CAkey",
                 str(certs / "ca.key"), "-CAcreateserial", "-out", str(tmp_path / "new.crt"), "-days", "2",
                 "-extfile", str(certs / "server.ext"), cwd=tmp_path)
        os.replace(tmp_path / "new.crt", tmp_path / "server.crt")
        st = os.stat(tmp_path / "server.crt")
        os.utime(tmp_path / "server.crt", (st.st_atime, st.st_mtime + 5))  # a distinct mtime even on coarse clocks
        second = _serial(exp.port, certs / "ca.crt")
        assert first != second
        idle.close()
    finally:
        exp.stop()
