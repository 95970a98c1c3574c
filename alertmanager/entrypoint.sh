#!/bin/sh
# Container entrypoint: render the config with $MODELMON_WEBHOOK_URL (see
# render-config.sh; Alertmanager 0.25 does not expand environment variables),
# then run Alertmanager on the rendered copy.  Extra arguments go to
# Alertmanager.
#
#   MODELMON_WEBHOOK_URL            webhook receiver URL (default http://webhook:5001/)
#   MODELMON_ALERTMANAGER_CONFIG    source config (default: alertmanager.yml next to this script)
#   MODELMON_ALERTMANAGER_RENDERED  rendered copy (default /tmp/alertmanager.yml)
#   ALERTMANAGER_BIN                the binary (default /bin/alertmanager, as in prom/alertmanager)
set -eu

here=$(cd "$(dirname "$0")" && pwd)
src=${MODELMON_ALERTMANAGER_CONFIG:-$here/alertmanager.yml}
out=${MODELMON_ALERTMANAGER_RENDERED:-/tmp/alertmanager.yml}
bin=${ALERTMANAGER_BIN:-/bin/alertmanager}

sh "$here/render-config.sh" "$src" "$out"
exec "$bin" --config.file="$out" "$@"
