#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py {{py_tool}}: from .venv, the PATH, or the
# pinned copy `scripts/setup --guests` installs in the wasmtrigger repository.
set -euo pipefail
cd "$(dirname "$0")"
tools=${WASMTRIGGER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmtrigger/tools}
tool=""
for candidate in .venv/bin/componentize-py "$(command -v componentize-py || true)" "$tools/python/bin/componentize-py"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then tool=$candidate; break; fi
done
if [ -z "$tool" ]; then
  echo "componentize-py not found: run \`python3 -m venv .venv && .venv/bin/pip install -r requirements.txt\` here (or scripts/setup --guests in the wasmtrigger repository)" >&2
  exit 1
fi
"$tool" -d wit -w {{world}} componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
