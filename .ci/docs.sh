#!/usr/bin/env bash
# Docs: build the site with warnings as errors, then open it in headless Chromium from a local
# server and check that every page renders (no console error, no failed request, no broken
# picture). Screenshots of the home page, an API page and the FlowGAN tutorial land in
# site-screenshots/ (git-ignored). Installs Debian's chromium when it is missing (CI runs as root
# on a fresh machine; about 35 s).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SITE=${SITE:-site}
SHOTS=${SHOTS:-site-screenshots}

echo "[docs] mkdocs build --strict -> $SITE/"
log=$(mktemp)
if ! NO_MKDOCS_2_WARNING=1 "$PY" -m mkdocs build --strict --clean --site-dir "$SITE" >"$log" 2>&1; then
    cat "$log" >&2
    echo "[docs] FAIL: mkdocs build --strict (every warning above is an error)" >&2
    rm -f "$log"
    exit 1
fi
grep -E "Documentation built in" "$log" || true
rm -f "$log"

if [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "[docs] chromium is missing: install it (apt-get install chromium) or set CHROMIUM=" >&2
        exit 1
    fi
    echo "[docs] installing Debian's chromium"
    t0=$(date +%s)
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    echo "[docs] chromium installed in $(( $(date +%s) - t0 )) s"
fi

rm -rf "$SHOTS"
"$PY" tests/docs/site_check.py --site "$SITE" --out "$SHOTS"
