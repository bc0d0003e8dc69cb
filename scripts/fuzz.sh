#!/usr/bin/env bash
# Fuzzes the wire decoders of wschat-protocol with cargo-fuzz (libFuzzer) for a bounded time.
# Not run by CI: a failure here is a finding to look into, not a red build.
#
# Usage: scripts/fuzz.sh [SECONDS]
#   SECONDS  how long to fuzz, default 60. The targets run side by side (one per core) for that
#            long, after a build that takes about 40 s the first time and a few seconds after.
#
# The targets live in protocol/fuzz/fuzz_targets/, the properties they check in
# protocol/fuzz/src/lib.rs:
#   decode_text  any bytes, as text, through every decoder: no panic; only JSON objects accepted;
#                an accepted frame re-encodes to the same frame; a refusal says invalid_json exactly
#                when the text is not JSON, otherwise invalid_message, with a message.
#   round_trip   arbitrary valid frames of both protocols decode back to themselves.
#
# Prints how many inputs each target ran and whether it failed, then "fuzz: N passed, N failed".
# Exits 1 when a target failed: the input is saved under protocol/fuzz/artifacts/TARGET/ and can
# be replayed with `cd protocol && cargo +nightly fuzz run TARGET FILE`. Full logs go to
# protocol/fuzz/logs/. Inputs that reach new code are kept in protocol/fuzz/corpus/ (not committed),
# so each run starts where the last one stopped.
#
# Environment: WSCHAT_FUZZ_SANITIZER=address builds with AddressSanitizer, about 6x slower. The
# default is none: the protocol crate and the fuzz targets have no unsafe code of their own.
#
# Needs cargo-fuzz, installed from crates.io when missing, and a nightly rustc: rustup's nightly
# toolchain when there is one, else the stable one with RUSTC_BOOTSTRAP=1, which lets it take the
# same unstable flags.
set -euo pipefail

seconds="${1:-60}"
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [SECONDS]   (a whole number of seconds, default 60)" >&2
    exit 2
fi
sanitizer="${WSCHAT_FUZZ_SANITIZER:-none}"
targets=(decode_text round_trip)

cd "$(dirname "$0")/../protocol"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

if command -v rustup >/dev/null && rustup run nightly rustc --version >/dev/null 2>&1; then
    cargo=(cargo +nightly)
else
    cargo=(cargo)
    export RUSTC_BOOTSTRAP=1
    echo "fuzz: no nightly toolchain, using $(rustc --version) with RUSTC_BOOTSTRAP=1"
fi
if ! "${cargo[@]}" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --version 0.13.2 --locked
fi

echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
"${cargo[@]}" fuzz build --sanitizer "$sanitizer"

mkdir -p fuzz/logs
echo "fuzz: running ${targets[*]} for $seconds s"
started=$SECONDS
pids=()
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target"
    # New inputs go to the first corpus directory; the committed seeds are only read.
    corpora=("fuzz/corpus/$target")
    [[ -d fuzz/seeds/$target ]] && corpora+=("fuzz/seeds/$target")
    # A single input taking 10 s is a hang, and reported as a failure.
    options=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1)
    [[ -f fuzz/$target.dict ]] && options+=(-dict="fuzz/$target.dict")
    # libFuzzer stops itself after max_total_time; the outer timeout only guards against a stuck
    # cargo (a lock held by another build, say), with room for checking that the build is fresh.
    timeout --kill-after=10 $((seconds + 300)) \
        "${cargo[@]}" fuzz run --sanitizer "$sanitizer" "$target" "${corpora[@]}" -- "${options[@]}" \
        >"fuzz/logs/$target.log" 2>&1 &
    pids+=("$!")
done

passed=0
failed=0
for i in "${!targets[@]}"; do
    target="${targets[$i]}"
    log="fuzz/logs/$target.log"
    status=0
    wait "${pids[$i]}" || status=$?
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    corpus="$(find "fuzz/corpus/$target" -type f | wc -l)"
    if ((status == 0)); then
        passed=$((passed + 1))
        echo "fuzz: $target: ok, ${runs:-?} inputs run, corpus $corpus inputs"
    else
        failed=$((failed + 1))
        echo "fuzz: $target: FAILED (exit $status) after ${runs:-?} inputs; log: protocol/$log"
        # What went wrong: the panic, or libFuzzer's own report (a timeout, running out of memory).
        awk '/panicked at|ERROR: libFuzzer|ERROR: AddressSanitizer/ { found = 1 }
             found && (/^stack backtrace:|^note: / || ++shown > 20) { exit }
             found { print "    " $0 }' "$log"
        sed -n 's/.*Test unit written to /    input: /p' "$log"
        # round_trip's input is bytes that mean a frame: cargo-fuzz prints the frame they make.
        sed -n '/^Output of .std::fmt::Debug.:/,/^Reproduce with:/{/^Reproduce with:/d; /^\s*$/d; s/^\t*/    /; p}' "$log"
    fi
done
echo "fuzz: $((SECONDS - started)) s of fuzzing"
echo "fuzz: $passed passed, $failed failed"
((failed == 0))
