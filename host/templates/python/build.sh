#!/usr/bin/env bash
# Builds {{name}}.wasm with componentize-py {{py_tool}} (pip install -r requirements.txt).
set -euo pipefail
cd "$(dirname "$0")"
componentize-py -d wit -w {{world}} componentize app -o {{name}}.wasm
echo "built {{name}}.wasm"
