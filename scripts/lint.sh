#!/usr/bin/env bash
# Lint and type checks: ruff (rules in pyproject.toml [tool.ruff]) on the
# Python code, mypy (pyproject.toml [tool.mypy]) on the package.  Prints the
# findings, then a count per file, and exits 1 when either tool found anything.
#   scripts/lint.sh            check
#   scripts/lint.sh --fix      let ruff fix what it safely can first
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PATHS=(exporter tests bench grafana deploy/kubernetes)

if [ "${1:-}" = "--fix" ]; then
  $PY -m ruff check --fix --quiet "${PATHS[@]}" || true
fi

ruff_out=$($PY -m ruff check --output-format concise "${PATHS[@]}" 2>&1)
ruff_rc=$?
mypy_out=$($PY -m mypy 2>&1)
mypy_rc=$?

[ $ruff_rc -eq 0 ] || printf '%s\n' "$ruff_out"
[ $mypy_rc -eq 0 ] || printf '%s\n' "$mypy_out"

echo "== ruff: findings per file"
printf '%s\n' "$ruff_out" | grep -E '^[^: ]+:[0-9]+:[0-9]+: ' | cut -d: -f1 | sort | uniq -c | sort -rn || true
echo "== mypy: errors per file"
printf '%s\n' "$mypy_out" | grep -E '^[^: ]+:[0-9]+: error:' | cut -d: -f1 | sort | uniq -c | sort -rn || true

if [ $ruff_rc -ne 0 ] || [ $mypy_rc -ne 0 ]; then
  echo "lint: ruff exit $ruff_rc, mypy exit $mypy_rc" >&2
  exit 1
fi
echo "lint: ruff and mypy clean"
