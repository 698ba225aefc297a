#!/usr/bin/env bash
# Checks the served OpenAPI document against the real server: starts `switchboard serve` on a
# free port with a temporary data dir (SQLite), seeds an account, a sandbox connection, a
# schedule of business hours, a succeeded run, a failed run and a test run so the list routes
# answer real rows, then runs schemathesis (`st`) against `/openapi.json` with a bounded budget.
# Exits non-zero on any finding; the server is stopped on exit.
#
#   scripts/schemathesis.sh                  # builds target/debug/switchboard first
#   SWITCHBOARD_BIN=path/to/switchboard scripts/schemathesis.sh
#
# Budget (environment): ST_MAX_EXAMPLES (default 10 an operation and phase), ST_TIMEOUT
# (default 150 s for each schemathesis pass), ST_SEED (default 1: the same cases each run).
# Needs python3 and schemathesis 4 (`pip install schemathesis`).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v st >/dev/null || { echo "schemathesis is missing: pip install schemathesis" >&2; exit 2; }

BIN=${SWITCHBOARD_BIN:-}
if [ -z "$BIN" ]; then
  cargo build --quiet -p switchboard-api
  BIN="${CARGO_TARGET_DIR:-target}/debug/switchboard"
fi

DATA=$(mktemp -d)
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BASE="http://127.0.0.1:$PORT"
ADMIN="schemathesis-admin"
SERVER=""
cleanup() {
  if [ -n "$SERVER" ]; then kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; fi
  rm -rf "$DATA"
}
trap cleanup EXIT

SWITCHBOARD_DATA_DIR="$DATA" SWITCHBOARD_LISTEN="127.0.0.1:$PORT" SWITCHBOARD_ADMIN_TOKEN="$ADMIN" RUST_LOG=warn \
  "$BIN" serve >"$DATA/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  curl -sf "$BASE/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER" 2>/dev/null || { cat "$DATA/server.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "$BASE/healthz" >/dev/null || { echo "switchboard did not start" >&2; cat "$DATA/server.log" >&2; exit 1; }

# A request that must succeed; prints the answer.
call() { # METHOD PATH TOKEN [JSON]
  curl -sS --fail-with-body -X "$1" "$BASE$2" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' ${4:+-d "$4"}
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

KEY=$(call POST /v1/accounts "$ADMIN" '{"name": "schemathesis", "plan": "starter", "timezone": "Europe/Berlin"}' | field '["api_key"]')
call POST /v1/connections "$KEY" '{"provider": "twilio", "name": "trial", "sandbox": true}' >/dev/null
# A schedule of business hours under the name the document's examples use.
call POST /v1/schedules "$KEY" '{"name": "Main line", "timezone": "America/New_York", "weekly": {"mon": ["09:00-17:00"]},
  "holidays": [{"date": "2026-12-25", "name": "Christmas"}], "overrides": [{"date": "2026-12-24", "hours": ["10:00-14:00"]}]}' >/dev/null
# Succeeds: a log line and an SMS to the outbox (usage rows, an outbox message).
HOOK=$(call POST /v1/workflows "$KEY" '{"name": "welcome", "trigger": {"webhook": {}}, "steps": [
  {"id": "note", "action": "log", "input": {"message": "lead {{ event.name }}"}},
  {"id": "text", "action": "sms.send", "input": {"to": "+15557654321", "from": "+15550001111", "body": "Hi {{ event.name }}"}}]}' | field '["webhook_url"]')
OK=$(curl -sS --fail-with-body -X POST "$HOOK" -H 'Content-Type: application/json' -d '{"name": "Ada"}' | field '["run_id"]')
# Fails for good: private addresses are refused, so the run and its step carry an error.
FAILING=$(call POST /v1/workflows "$KEY" '{"name": "failing", "trigger": {"manual": {}}, "steps": [
  {"id": "call", "action": "http.request", "input": {"method": "GET", "url": "http://127.0.0.1:9/"}}]}' | field '["id"]')
FAILED=$(call POST "/v1/workflows/$FAILING/runs" "$KEY" '{}' | field '["run_id"]')
call POST "/v1/workflows/$FAILING/test" "$KEY" '{"event": {}}' >/dev/null
for run in "$OK" "$FAILED"; do
  for _ in $(seq 1 100); do
    status=$(call GET "/v1/runs/$run" "$KEY" | field '["status"]')
    case "$status" in succeeded | failed) break ;; esac
    sleep 0.1
  done
done
[ "$(call GET "/v1/runs/$FAILED" "$KEY" | field '["status"]')" = failed ] || { echo "the seeded run did not fail" >&2; exit 1; }

# The live streams never end, so they are left out (tests/tests/e2e/live.rs covers them).
# Operations taking the admin token get it in a second pass.
st_run() { # TOKEN [filters…]
  local token=$1
  shift
  # From the data dir: schemathesis keeps `.schemathesis/` and `.hypothesis/` in the working directory.
  (cd "$DATA" && timeout --foreground "${ST_TIMEOUT:-150}" st run "$BASE/openapi.json" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "${ST_MAX_EXAMPLES:-10}" \
    --seed "${ST_SEED:-1}" \
    --generation-database none \
    --request-timeout 15 \
    --workers 2 \
    --no-color \
    --exclude-path /v1/events/stream --exclude-path '/v1/runs/{id}/events' \
    "$@")
}
status=0
ADMIN_PATHS='^/v1/(accounts|admin/.*)$'
st_run "$KEY" --exclude-path-regex "$ADMIN_PATHS" || status=1
st_run "$ADMIN" --include-path-regex "$ADMIN_PATHS" || status=1
if [ "$status" -ne 0 ]; then
  echo "--- server log ---" >&2
  tail -n 50 "$DATA/server.log" >&2
fi
exit "$status"
