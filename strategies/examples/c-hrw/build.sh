#!/bin/sh
# Builds c-hrw.wasm from strategy.c with three pinned tools (see the README,
# "Write your own strategy"; .ci/run installs the same versions):
#   wit-bindgen-cli 0.63.0  cargo install --debug --locked --no-default-features --features c wit-bindgen-cli@0.63.0
#   wasm-tools 1.262.0      cargo install --debug --locked --no-default-features --features component,print wasm-tools@1.262.0
#   zig 0.15.2              pip install ziglang==0.15.2  (then ZIG="python3 -m ziglang")
# Override the commands with WIT_BINDGEN, WASM_TOOLS and ZIG, the contract's
# directory with WIT_DIR (default: wit).
set -eu
cd "$(dirname "$0")"
WIT_BINDGEN=${WIT_BINDGEN:-wit-bindgen}
WASM_TOOLS=${WASM_TOOLS:-wasm-tools}
ZIG=${ZIG:-zig}
WIT_DIR=${WIT_DIR:-wit}

# 1. C bindings for the contract: bindings/strategy.{h,c} and the component
#    type (an object file the linker keeps as a custom section).
rm -rf bindings build
"$WIT_BINDGEN" c "$WIT_DIR" --world strategy --out-dir bindings
mkdir -p build

# 2. A core wasm module. wasm32-wasi for wasi-libc's malloc and libm; as a
#    reactor (no main); -s drops the debug info (87 KB -> 19 KB) and keeps
#    the component type. $ZIG is split on purpose: it may be
#    "python3 -m ziglang".
# shellcheck disable=SC2086
$ZIG cc -target wasm32-wasi -mexec-model=reactor -O2 -s -Wall -Werror -Ibindings \
  strategy.c bindings/strategy.c bindings/strategy_component_type.o -o build/core.wasm

# 3. The module must import nothing: then no WASI adapter is needed, and
#    routing cannot reach a clock, randomness or files. stdio would import.
if "$WASM_TOOLS" print build/core.wasm | grep -q '(import '; then
  echo "build/core.wasm imports functions; a strategy must import nothing:" >&2
  "$WASM_TOOLS" print build/core.wasm | grep '(import ' >&2
  exit 1
fi

# 4. Wrap it as a component.
"$WASM_TOOLS" component new build/core.wasm -o c-hrw.wasm
echo "built c-hrw.wasm ($(wc -c < c-hrw.wasm) bytes)"
