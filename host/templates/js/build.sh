#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-js {{js_tool}} (npm install first).
set -euo pipefail
cd "$(dirname "$0")"
tool=componentize-js
command -v "$tool" >/dev/null || tool=./node_modules/.bin/componentize-js
# --disable http fetch-event: the host lends HTTP through its own interface.
"$tool" --wit wit --world-name {{world}} --disable http fetch-event -o {{name}}.wasm app.js
echo "built {{name}}.wasm"
