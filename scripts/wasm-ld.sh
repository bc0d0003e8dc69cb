#!/usr/bin/env bash
# The linker for the app's wasm32 builds (.cargo/config.toml): Rust's own rust-lld, given the
# same arguments minus the exports of wasm-streams' `IntoUnderlying*` classes.
#
# Leptos' server functions depend on wasm-streams, whose #[wasm_bindgen] classes are exported
# from every wasm that links it. This app has no server functions, but an export is a root: the
# linker keeps it and everything it reaches, and the function table then keeps that code even
# when a later tool removes the export (measured: 13 KB of the app's optimised wasm, 5 KB of its
# first load gzipped). Without the exports, the linker never pulls that code in. wasm-bindgen still writes
# JS classes for them, which nothing calls; the release hook (xtask/npm/shrink-bundle.mjs)
# removes them from the glue.
set -euo pipefail

rustc=${RUSTC:-rustc}
sysroot=$("$rustc" --print sysroot)
host=$("$rustc" -vV | sed -n 's/^host: //p')
lld="$sysroot/lib/rustlib/$host/bin/rust-lld"

dropped() {
  [[ $1 == *intounderlying* ]]
}

args=()
while (($#)); do
  case $1 in
    --export)
      if dropped "${2:-}"; then
        shift 2
        continue
      fi
      ;;
    @*)
      # rustc passes a response file when the command line is too long: one argument a line.
      filtered=$(mktemp)
      trap 'rm -f "$filtered"' EXIT
      skip=no
      while IFS= read -r line || [[ -n $line ]]; do
        if [[ $skip == yes ]]; then
          skip=no
          if dropped "$line"; then
            continue
          fi
          printf '%s\n' --export "$line" >>"$filtered"
          continue
        fi
        if [[ $line == --export ]]; then
          skip=yes
          continue
        fi
        printf '%s\n' "$line" >>"$filtered"
      done <"${1#@}"
      args+=("@$filtered")
      shift
      "$lld" "${args[@]}" "$@"
      exit
      ;;
  esac
  args+=("$1")
  shift
done
exec "$lld" "${args[@]}"
