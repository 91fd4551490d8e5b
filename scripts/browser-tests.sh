#!/usr/bin/env bash
# The web pages in headless Chromium: starts an SMTP sink and the release build on a fresh
# SQLite file (and a second one that requires confirmed addresses), then runs tests/browser
# with node's test runner (Playwright drives Debian's Chromium, or the Chromium-based
# browser CHROMIUM names; axe-core checks every page at 375 and 1280 px; screenshots of every
# page go to target/screenshots/). Builds the release binary only when it is missing. Every
# process it starts is stopped when it ends, however it ends.
#
#   bash scripts/browser-tests.sh                     # every test file
#   bash scripts/browser-tests.sh admin.test.mjs      # some of them (names in tests/browser)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
files=("$@")
target=${CARGO_TARGET_DIR:-$root/target}
binary=$target/release/user-service

if [ ! -x "$binary" ]; then
  cargo build --release
fi
# CHROMIUM names another Chromium-based browser (as GitHub's runners have Google Chrome).
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
(cd tests/browser && npm ci --no-audit --no-fund --loglevel=error)

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Waits up to 30 s for a TCP port to accept connections.
wait_for_port() {
  for _ in $(seq 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

mkdir -p "$work/mail"
smtp_port=$(free_port)
node tests/browser/smtp-sink.mjs "$smtp_port" "$work/mail" &
pids+=($!)
wait_for_port "$smtp_port"

export ADMIN_EMAIL=admin@example.com
export ADMIN_PASSWORD='browser tests admin password'
# start NAME [VAR=VALUE...]: the service on a fresh file and a free port, mailing to the
# sink; sets `started` to its address once it listens.
start() {
  local name=$1 port
  shift
  port=$(free_port)
  started="http://127.0.0.1:$port"
  env \
    HOST=127.0.0.1 PORT="$port" \
    DATABASE_URL="sqlite://$work/$name.db" \
    APP_ENV=development \
    JWT_SECRET=browser-tests-secret-0123456789abcdef \
    RATE_LIMIT_PER_SECOND=0 \
    BCRYPT_COST=4 \
    MAIL_THROTTLE_SECS=0 \
    LOCKOUT_THRESHOLD=3 \
    SMTP_URL="smtp://127.0.0.1:$smtp_port" \
    PASSWORD_RESET_URL="$started/reset-password" \
    EMAIL_VERIFICATION_URL="$started/verify-email" \
    RUST_LOG=warn \
    "$@" \
    "$binary" >"$work/$name.log" 2>&1 &
  pids+=($!)
  if ! wait_for_port "$port"; then
    cat "$work/$name.log" >&2
    exit 1
  fi
}
start service
base=$started
# A second one that lets no one sign in before confirming their address.
start strict REQUIRE_VERIFIED_EMAIL=true
strict=$started

mkdir -p "$target/screenshots"
status=0
(
  cd tests/browser
  [ ${#files[@]} -gt 0 ] || files=(./*.test.mjs)
  BASE_URL=$base STRICT_BASE_URL=$strict MAIL_DIR=$work/mail SCREENSHOT_DIR=$target/screenshots \
    timeout 600 node --test --test-concurrency=1 --test-reporter=spec "${files[@]}"
) || status=$?
if [ "$status" -ne 0 ]; then
  for name in service strict; do
    echo "== $name log (last 50 lines)" >&2
    tail -n 50 "$work/$name.log" >&2
  done
fi
exit "$status"
