#!/usr/bin/env bash
# Bad input at scale against a real hub: schemathesis generates requests from the hub's own
# /api/v1/openapi.json (valid ones, and ones that break the schema on purpose) and checks
# every answer. The rule it enforces: bad input gets a clear 4xx JSON error, never a 5xx,
# a panic or a hang.
#
# It does everything itself: a venv with schemathesis under ~/.cache/fleethub/venv, a
# release build of `hub`, a hub on a free loopback port with its SQLite data in a temp
# dir (stopped and removed on exit), then the run. Exit status: schemathesis's (0 = clean),
# or 1 when the hub died or logged a panic.
#
#   bash tests/fuzz/schemathesis.sh                  # 100 examples per operation
#   FUZZ_MAX_EXAMPLES=500 FUZZ_SEED=7 bash tests/fuzz/schemathesis.sh
#   HUB_BIN=/path/to/hub bash tests/fuzz/schemathesis.sh   # skip the build
#
# Environment: FUZZ_MAX_EXAMPLES (per operation and phase, default 100), FUZZ_MAX_TIME
# (seconds for the whole run, default 900), FUZZ_SEED (default random), FUZZ_REPORT_DIR
# (junit + ndjson reports, default a temp dir that is kept), SCHEMATHESIS_VERSION.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo"

max_examples="${FUZZ_MAX_EXAMPLES:-100}"
max_time="${FUZZ_MAX_TIME:-900}"
st_version="${SCHEMATHESIS_VERSION:-4.32.5}"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/venv"

# --- schemathesis -------------------------------------------------------------------
if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "version $st_version\$"; then
  echo "schemathesis.sh: installing schemathesis $st_version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$st_version"
fi

# --- hub ------------------------------------------------------------------------------
if [ -z "${HUB_BIN:-}" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/fleethub/target}"
  cargo build --release --bin hub >&2
  HUB_BIN="$CARGO_TARGET_DIR/release/hub"
fi

work="$(mktemp -d -t fleethub-fuzz.XXXXXX)"
report_dir="${FUZZ_REPORT_DIR:-$work/report}"
mkdir -p "$report_dir"
hub_pid=""
cleanup() {
  if [ -n "$hub_pid" ] && kill -0 "$hub_pid" 2>/dev/null; then
    kill "$hub_pid" 2>/dev/null || true
    wait "$hub_pid" 2>/dev/null || true
  fi
  cp "$work/hub.log" "$report_dir/hub.log" 2>/dev/null || true
  rm -rf "$work/data"
}
trap cleanup EXIT

port="$("$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
admin_token="fuzz-$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
HUB_LOG="info,sqlx=warn" "$HUB_BIN" serve \
  --listen "127.0.0.1:$port" \
  --data-dir "$work/data" \
  --admin-token "$admin_token" \
  --log-format json >"$work/hub.log" 2>&1 &
hub_pid=$!

# The client config appears once the hub serves; its caData is the CA to verify against.
for _ in $(seq 1 300); do
  [ -s "$work/data/client.yaml" ] && break
  kill -0 "$hub_pid" 2>/dev/null || { echo "schemathesis.sh: hub exited:" >&2; cat "$work/hub.log" >&2; exit 1; }
  sleep 0.1
done
"$venv/bin/python" - "$work/data/client.yaml" "$work/ca.pem" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    config = yaml.safe_load(f)
with open(sys.argv[2], "w") as f:
    f.write(config["caData"])
PY
base="https://127.0.0.1:$port"
for _ in $(seq 1 100); do
  curl -fsS --cacert "$work/ca.pem" "$base/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "schemathesis.sh: hub $HUB_BIN at $base, data in $work/data, reports in $report_dir" >&2

# A cluster and a work exist, so reads and writes on them reach past the 404s.
curl -fsS --cacert "$work/ca.pem" -H "Authorization: Bearer $admin_token" \
  -X PUT -H 'content-type: application/json' -d '{"metadata":{"labels":{"env":"fuzz"}}}' \
  "$base/api/v1/clusters/c1" >/dev/null
curl -fsS --cacert "$work/ca.pem" -H "Authorization: Bearer $admin_token" \
  -X PUT -H 'content-type: application/json' \
  -d '{"spec":{"workload":{"manifests":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"cm","namespace":"default"}}]}}}' \
  "$base/api/v1/clusters/c1/manifestworks/w1" >/dev/null

# --- the run --------------------------------------------------------------------------
# Checks: not_a_server_error is the rule; negative_data_rejection (a request that breaks
# the schema must be refused with a 4xx), status/content-type/schema conformance (the
# answer is what the document promises, including the JSON error body) and ignored_auth
# (a token the operation needs is really checked). positive_data_acceptance is left out:
# a well-formed request may still be refused for good reasons (no such cluster, a name
# that is not DNS-1123).
checks="not_a_server_error,negative_data_rejection,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth"
seed_args=()
[ -n "${FUZZ_SEED:-}" ] && seed_args=(--seed "$FUZZ_SEED")
set +e
# From the temp dir: schemathesis keeps a cache of failures in ./.schemathesis.
cd "$work"
PYTHONPATH="$repo/tests/fuzz${PYTHONPATH:+:$PYTHONPATH}" SCHEMATHESIS_HOOKS=fleethub_hooks \
  "$venv/bin/schemathesis" run "$base/api/v1/openapi.json" \
  --url "$base" \
  --tls-verify "$work/ca.pem" \
  -H "Authorization: Bearer $admin_token" \
  --checks "$checks" \
  --max-examples "$max_examples" \
  --max-time "$max_time" \
  --request-timeout 10 \
  --workers 2 \
  --continue-on-failure \
  --report junit,ndjson --report-dir "$report_dir" \
  "${seed_args[@]}"
status=$?
set -e

if ! kill -0 "$hub_pid" 2>/dev/null; then
  echo "schemathesis.sh: the hub died during the run" >&2
  status=1
elif grep -q 'panic' "$work/hub.log"; then
  # A caught panic is logged as an internal error with detail "panic: ...".
  echo "schemathesis.sh: the hub logged a panic:" >&2
  grep 'panic' "$work/hub.log" | head -5 >&2
  status=1
fi
echo "schemathesis.sh: exit $status; reports and the hub's log in $report_dir" >&2
exit "$status"
