#!/usr/bin/env bash
# Starts the release build on the embedded backend with an admin seeded, then
#  0. validates its OpenAPI document (openapi-spec-validator);
#  1. fuzzes every operation of its OpenAPI document with schemathesis and all its checks,
#     as an admin: besides any 5xx and any status, content type, header or body the document
#     does not declare, it fails on a request the document calls invalid that is not refused,
#     and on one the document calls valid that is refused for a reason the document could
#     have stated. Those that remain are refused for the service's state, which no schema can
#     state, with the statuses scripts/schemathesis.toml allows:
#       401  login with an unknown account or a wrong password; a refresh or reset token that
#            is unknown, expired, revoked or used
#       403  changing one's own password with a wrong current_password (or, through
#            /users/{id}, none: whose id it is, is state; /users/me requires it)
#       404  a well-formed id of no user (never was, or since deleted)
#       409  an email or username already taken; deleting, deactivating or demoting the last
#            active admin
#       422  a new password that is one of the 10,000 most common, or the account's own email,
#            name or username (the hooks steer generated ones clear of these)
#       412  an If-Match naming a version of the user that is not the current one
#       429  a login for an account or name that earlier failed logins have locked
#     scripts/schemathesis_hooks.py keeps the fuzzer an admin and its new passwords ASCII
#     (JSON Schema counts characters, the password rule counts UTF-8 bytes);
#  2. runs examples/walkthrough.sh against it;
#  3. for RS256 and EdDSA, makes a key with `openssl genpkey` as the README says, restarts
#     with it, and runs examples/verify-token/check.sh: another service (PyJWT) verifies
#     a token from the JWK set and refuses a tampered one.
# Needs `cargo build --release` done, schemathesis, openapi-spec-validator and PyJWT
# installed (`.ci/run` does all of that).
set -euo pipefail
cd "$(dirname "$0")/.."

port=${API_CHECKS_PORT:-18089}
work=$(mktemp -d)
log="$work/service.log"
binary=${CARGO_TARGET_DIR:-target}/release/user-service
export ADMIN_EMAIL=ci-admin@example.com ADMIN_PASSWORD="ci admin password"
# The service's settings; `create-admin` (see scripts/schemathesis_hooks.py) reads them too.
export HOST=127.0.0.1 PORT=$port BCRYPT_COST=4 RATE_LIMIT_PER_SECOND=0 LOG_FORMAT=json \
  RUST_LOG=info JWT_SECRET=ci-secret-ci-secret-ci-secret-32b

start_service() {
  export DATABASE_URL="sqlite://$work/$1.db"
  "$binary" >"$log" 2>&1 &
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
API_CHECKS_BASE_URL="http://127.0.0.1:$port" API_CHECKS_BINARY="$binary" \
  schemathesis --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/api/openapi.json" \
  --checks all \
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
stop_service

for algorithm in RS256 EdDSA; do
  echo "== examples/verify-token ($algorithm)"
  key="$work/jwt-$algorithm.pem"
  if [ "$algorithm" = RS256 ]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$key" 2>/dev/null
  else
    openssl genpkey -algorithm ed25519 -out "$key"
  fi
  JWT_ALGORITHM=$algorithm JWT_PRIVATE_KEYS=$key start_service "verify-$algorithm"
  BASE_URL="http://127.0.0.1:$port" ALGORITHM=$algorithm bash examples/verify-token/check.sh
  stop_service
done
