#!/usr/bin/env bash
# WebSocket conformance of the relay with Autobahn|Testsuite (fuzzing client against /echo).
#
#   scripts/autobahn.sh            # runs every case outside sections 9, 12 and 13
#
# autobahntestsuite 25.10.1 runs only on Python 2.7: this uses the pyenv one (2.7.18) and
# installs the suite into it when missing. Without Python 2.7 it says so and exits 0 (skipped).
# wstest always exits 0; the verdicts are in reports/index.json, which this parses: any FAILED
# case makes it exit 1. Sections 9 (performance), 12 and 13 (compression, which the relay does
# not offer) are not run. Prints "autobahn: N passed, N failed" (OK/NON-STRICT/INFORMATIONAL
# count as passed, FAILED as failed) and the counts per verdict.
set -euo pipefail
cd "$(dirname "$0")/.."

python2=""
for candidate in "${PYENV_ROOT:-$HOME/.pyenv}/versions/2.7.18/bin/python" "$(command -v python2.7 || true)"; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then python2="$candidate"; break; fi
done
if [ -z "$python2" ]; then
  echo "autobahn: skipped: Python 2.7 is not installed (pyenv 2.7.18), which autobahntestsuite needs"
  exit 0
fi
if ! "$python2" -c "import autobahntestsuite" 2>/dev/null; then
  "$python2" -m pip install --quiet autobahntestsuite==25.10.1
fi
wstest="$(dirname "$python2")/wstest"

cargo build --quiet --release --package wschat-relay
port=$("$python2" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
RUST_LOG=wschat_relay=error target/release/wschat-relay --listen "127.0.0.1:$port" --autobahn-echo &
relay=$!
trap 'kill $relay 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done

cat >"$work/spec.json" <<SPEC
{
  "outdir": "$work/reports",
  "servers": [{"agent": "wschat-relay", "url": "ws://127.0.0.1:$port/echo"}],
  "cases": ["*"],
  "exclude-cases": ["9.*", "12.*", "13.*"],
  "exclude-agent-cases": {}
}
SPEC
(cd "$work" && timeout 1200 "$wstest" -m fuzzingclient -s spec.json >"$work/wstest.log" 2>&1) || {
  echo "autobahn: wstest did not finish:"; tail -20 "$work/wstest.log"; exit 1; }

python3 - "$work/reports/index.json" <<'PY'
import collections, json, sys
results = json.load(open(sys.argv[1]))["wschat-relay"]
verdicts = collections.Counter(result["behavior"] for result in results.values())
failed = sorted((case for case, result in results.items() if result["behavior"] == "FAILED"),
                key=lambda case: [int(part) for part in case.split(".")])
print("autobahn: %d cases: %s" % (len(results), ", ".join(
    "%s %d" % (verdict, count) for verdict, count in sorted(verdicts.items()))))
for case in failed:
    print("autobahn: FAILED case %s" % case)
passed = len(results) - len(failed)
print("autobahn: %d passed, %d failed" % (passed, len(failed)))
sys.exit(1 if failed else 0)
PY
