#!/usr/bin/env bash
# Starts the release build on the embedded backend with an admin seeded, then
#  0. validates its OpenAPI document (openapi-spec-validator);
#  1. fuzzes every operation of its OpenAPI document with schemathesis, authenticated,
#     failing on any 5xx or any status, content type or body the document does not declare;
#  2. runs examples/walkthrough.sh against it.
# Needs `cargo build --release` done, schemathesis and openapi-spec-validator installed
# (`.ci/run` does both).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${API_CHECKS_PORT:-18089}
work=$(mktemp -d)
log="$work/service.log"
export ADMIN_EMAIL=ci-admin@example.com ADMIN_PASSWORD="ci admin password"

start_service() {
  DATABASE_URL="sqlite://$work/$1.db" HOST=127.0.0.1 PORT=$port BCRYPT_COST=4 \
    RATE_LIMIT_PER_SECOND=0 LOG_FORMAT=json RUST_LOG=info JWT_SECRET=ci-secret-ci-secret-ci-secret-32b \
    ./target/release/user-service >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    curl -fsS "http://127.0.0.1:$port/ready" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$log"; echo "the service died at start" >&2; return 1; }
    sleep 0.1
  done
  echo "the service did not become ready" >&2
  return 1
}
stop_service() { kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true; }
trap 'stop_service; rm -rf "$work"' EXIT

start_service fuzz
echo "== the OpenAPI document validates"
curl -fsS "http://127.0.0.1:$port/api/openapi.json" >"$work/openapi.json"
openapi-spec-validator "$work/openapi.json"

echo "== schemathesis"
token=$(curl -fsS -X POST "http://127.0.0.1:$port/api/auth/login" -H 'Content-Type: application/json' \
  --data "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
schemathesis run "http://127.0.0.1:$port/api/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
  --generation-deterministic
# The service's own errors (a 500's cause, a failed database call). actix-http's complaints
# about requests it could not even parse are the fuzzer's doing, not the service's.
if grep '"level":"ERROR"' "$log" | grep -q '"target":"user_service'; then
  echo "the service logged errors during fuzzing:" >&2
  grep '"level":"ERROR"' "$log" | grep '"target":"user_service' >&2
  exit 1
fi
stop_service

echo "== examples/walkthrough.sh"
start_service examples
BASE_URL="http://127.0.0.1:$port" SERVICE_LOG="$log" bash examples/walkthrough.sh
