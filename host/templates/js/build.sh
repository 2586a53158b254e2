#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-js {{js_tool}}: from node_modules (npm install),
# the PATH, or the pinned copy `scripts/setup --guests` installs in the wasmtrigger repository.
set -euo pipefail
cd "$(dirname "$0")"
tools=${WASMTRIGGER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmtrigger/tools}
tool=""
for candidate in ./node_modules/.bin/componentize-js "$(command -v componentize-js || true)" "$tools/js/node_modules/.bin/componentize-js"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then tool=$candidate; break; fi
done
if [ -z "$tool" ]; then
  echo "componentize-js not found: run \`npm install\` here (or scripts/setup --guests in the wasmtrigger repository)" >&2
  exit 1
fi
# --disable http fetch-event: the host lends HTTP through its own interface.
"$tool" --wit wit --world-name {{world}} --disable http fetch-event -o {{name}}.wasm app.js
echo "built {{name}}.wasm"
