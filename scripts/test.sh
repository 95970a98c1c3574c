#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what it needs, then runs
# pytest (unit tests, promtool/amtool checks, and end-to-end tests against
# real Prometheus and Alertmanager servers).  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/install-deps.sh
exec $PY -m pytest -p no:cacheprovider "$@"
