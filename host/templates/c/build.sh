#!/usr/bin/env bash
# Builds {{name}}.wasm from app.{{ext}}: wit-bindgen writes the C bindings of the
# `{{world}}` world, clang compiles for wasm32-wasi (a WASI preview1 reactor), and
# wasm-tools makes it a component with the WASI adapter in this directory (the one
# of the wasmtrigger that wrote this project).
#
# Needs clang with wasi-libc{{cpp_needs}} (Debian: apt install {{debian}}),
# wit-bindgen-cli {{wit_bindgen}} and wasm-tools {{wasm_tools}} (cargo install --locked NAME@VERSION;
# found on the PATH or as the pinned copies `scripts/setup --guests` installs in the
# wasmtrigger repository). Elsewhere, point WASI_SYSROOT at a wasi-sysroot and CC/CXX at a clang.
set -euo pipefail
cd "$(dirname "$0")"
tools=${WASMTRIGGER_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/wasmtrigger/tools}
find_tool() {
  local candidate
  for candidate in "$(command -v "$1" || true)" "$tools/c/bin/$1"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return; fi
  done
  echo "$1 not found: cargo install --locked $2 (or scripts/setup --guests in the wasmtrigger repository)" >&2
  exit 1
}
wit_bindgen=$(find_tool wit-bindgen "wit-bindgen-cli@{{wit_bindgen}}")
wasm_tools=$(find_tool wasm-tools "wasm-tools@{{wasm_tools}}")
cc=${CC:-$(command -v clang-19 || command -v clang || echo clang)}
cxx=${CXX:-$(command -v clang++-19 || command -v clang++ || echo clang++)}
sysroot=()
if [ -n "${WASI_SYSROOT:-}" ]; then sysroot=(--sysroot="$WASI_SYSROOT"); fi
gen=$(mktemp -d)
trap 'rm -rf "$gen"' EXIT
generated=$("$wit_bindgen" c wit --world {{world}} --out-dir "$gen" 2>&1) || { echo "$generated" >&2; exit 1; }
flags=(--target=wasm32-wasi -O2 "${sysroot[@]}" -I "$gen")
link=(-mexec-model=reactor -Wl,--strip-debug "$gen/bindings.o" "$gen/{{world}}_component_type.o" -o "$gen/core.wasm")
"$cc" "${flags[@]}" -c "$gen/{{world}}.c" -o "$gen/bindings.o"
{{compile}}
"$wasm_tools" component new "$gen/core.wasm" \
  --adapt wasi_snapshot_preview1=wasi_snapshot_preview1.reactor.wasm -o {{name}}.wasm
echo "built {{name}}.wasm"
