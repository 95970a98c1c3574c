#!/usr/bin/env bash
# Installs what modelmon's tests need: the Python package with its test extras,
# and Debian's Prometheus, Alertmanager (promtool, amtool) and docker-compose
# (only used to validate docker-compose.yml offline), node_exporter and
# blackbox_exporter (the system dashboard's test; `modelmon stack` starts them
# too), VictoriaMetrics (victoria-metrics, vmagent, vmalert: the scale-out
# test) and kubernetes-client (kubectl, only used to render deploy/kubernetes
# with `kubectl kustomize`).  Idempotent and quiet when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}

# binary -> the Debian package that ships it
declare -A package=(
  [prometheus]=prometheus [promtool]=prometheus
  [prometheus-alertmanager]=prometheus-alertmanager [amtool]=prometheus-alertmanager
  [docker-compose]=docker-compose
  [prometheus-node-exporter]=prometheus-node-exporter
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [victoria-metrics]=victoria-metrics [vmagent]=victoria-metrics [vmalert]=victoria-metrics
)
need_apt=()
for bin in "${!package[@]}"; do
  command -v "$bin" >/dev/null 2>&1 || need_apt+=("${package[$bin]}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  echo "install-deps: missing ${need_apt[*]}; installing Debian packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Any kubectl will do (it renders the kustomizations offline); Debian's is 1.20.
if ! command -v kubectl >/dev/null 2>&1; then
  echo "install-deps: missing kubectl; installing Debian's kubernetes-client" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# Node.js and npm: tests/test_dashboards_schema.py turns the pinned
# @grafana/schema npm package (grafana/schema/) into JSON Schema.
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  echo "install-deps: missing node/npm; installing Debian packages" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# The package itself, editable from THIS checkout, with its test extras.  A
# modelmon installed from another checkout (or an older one lacking a newer
# dependency) would make the tests' `python -m modelmon` run other code, so
# reinstall unless this checkout's package is the one imported and every
# declared dependency is present (pip's own check, no network needed).
here="$(pwd)/exporter/modelmon/__init__.py"
if ! $PY - "$here" >/dev/null 2>&1 <<'PYCHECK' || [ "${MODELMON_REINSTALL:-0}" = 1 ]; then
import os, sys, tomllib
from importlib.metadata import version, PackageNotFoundError
from packaging.requirements import Requirement
import modelmon
if os.path.realpath(modelmon.__file__) != os.path.realpath(sys.argv[1]):
    sys.exit(1)
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
for req in project["dependencies"] + project["optional-dependencies"]["test"]:
    r = Requirement(req)
    try:
        installed = version(r.name)
    except PackageNotFoundError:
        sys.exit(1)
    if r.specifier and not r.specifier.contains(installed, prereleases=True):
        sys.exit(1)
PYCHECK
  echo "install-deps: installing modelmon (editable, from $(pwd)) with test extras" >&2
  $PY -m pip install -q --disable-pip-version-check -e ".[test]"
fi
