#!/bin/sh
# Render alertmanager.yml for a run.
#
# Alertmanager 0.25 does not expand environment variables in its config, so
# the webhook URL cannot be written as ${MODELMON_WEBHOOK_URL}.  This script
# copies the config, replacing the placeholder receiver URL
# (http://webhook:5001/) with $MODELMON_WEBHOOK_URL when that is set, and
# making the relative `templates/` path absolute so the copy can live
# anywhere (the source folder may be mounted read-only).
#
# usage: render-config.sh SOURCE.yml DEST.yml
set -eu

if [ $# -ne 2 ]; then
  echo "usage: $0 SOURCE.yml DEST.yml" >&2
  exit 2
fi
src=$1
dst=$2
dir=$(cd "$(dirname "$src")" && pwd)
placeholder='http://webhook:5001/'
url=${MODELMON_WEBHOOK_URL:-$placeholder}

case $url in
  http://?*|https://?*) ;;
  *)
    echo "$0: MODELMON_WEBHOOK_URL must be an http:// or https:// URL, got '$url'" >&2
    exit 2
    ;;
esac
case $url in
  *[[:space:]\'\"]*)
    echo "$0: MODELMON_WEBHOOK_URL must not contain spaces or quotes" >&2
    exit 2
    ;;
esac

# Escape what sed's replacement text treats specially (\, & and the | delimiter).
esc_url=$(printf '%s' "$url" | sed 's/[\\&|]/\\&/g')
esc_dir=$(printf '%s' "$dir" | sed 's/[\\&|]/\\&/g')

sed -e "s|url: $placeholder\$|url: '$esc_url'|" \
    -e "s|^\\([[:space:]]*- \\)templates/|\\1$esc_dir/templates/|" \
    "$src" > "$dst.tmp"
mv "$dst.tmp" "$dst"
