#!/usr/bin/env bash
# Install the pinned browser packages (web/package-lock.json) and copy the few files the page
# and the API docs load into web/static/vendor/ (gitignored). Re-runs are instant: redone only
# when the lockfile changes. Needs node + npm and the npm registry (or its cache) once.
set -euo pipefail
cd "$(dirname "$0")"

vendor=static/vendor
stamp="$vendor/.built-$(sha256sum package-lock.json build.sh | sha256sum | cut -c1-16)"
[ -f "$stamp" ] && exit 0

if ! command -v npm >/dev/null 2>&1; then
  echo "web/build.sh: npm is missing; install Node.js >= 18 with npm (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
echo "web: npm ci (onnxruntime-web, swagger-ui-dist, redoc; axe-core for the tests only; pinned in web/package-lock.json)"
# Peer dependencies (React & co.) are only for building redoc from source; its standalone
# bundle needs none of them.
npm ci --omit=peer --ignore-scripts --no-audit --no-fund --loglevel=error

rm -rf "$vendor"
mkdir -p "$vendor"
ort=node_modules/onnxruntime-web/dist
swagger=node_modules/swagger-ui-dist
cp "$ort/ort.wasm.min.mjs" "$ort/ort-wasm-simd-threaded.mjs" "$ort/ort-wasm-simd-threaded.wasm" \
  "$swagger/swagger-ui-bundle.js" "$swagger/swagger-ui.css" "$swagger/favicon-32x32.png" \
  node_modules/redoc/bundles/redoc.standalone.js "$vendor/"
touch "$stamp"
