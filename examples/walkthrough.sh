#!/usr/bin/env bash
# A walk through the API with curl: register, log in, read yourself, list users as the
# admin, update, switch on two-factor sign-in and log in with it, see your sessions and
# security events, reset the password, delete. Every step checks its status code, so the
# script fails at the first step that does not behave as documented.
#
# Needs curl, python3 and oathtool (TOTP codes; Debian/Ubuntu: apt-get install oathtool).
#
#   BASE_URL      where the service listens (default http://localhost:8080)
#   ADMIN_EMAIL / ADMIN_PASSWORD   an existing admin (as seeded by the service's variables)
#   SERVICE_LOG   optional: the service's log file. Without SMTP_URL, in development, the
#                 service logs the reset link; given the log, the script completes the reset.
set -euo pipefail

BASE_URL=${BASE_URL:-http://localhost:8080}
ADMIN_EMAIL=${ADMIN_EMAIL:?set ADMIN_EMAIL to an existing admin}
ADMIN_PASSWORD=${ADMIN_PASSWORD:?set ADMIN_PASSWORD}
suffix=$RANDOM$RANDOM
EMAIL="walker$suffix@example.com"
PASSWORD="first password $suffix"
if [ -n "${SERVICE_LOG:-}" ] && [ ! -r "$SERVICE_LOG" ]; then
  echo "FAILED: cannot read SERVICE_LOG=$SERVICE_LOG" >&2
  exit 1
fi

body=$(mktemp)
trap 'rm -f "$body"' EXIT

# call EXPECTED_STATUS METHOD PATH [JSON] [TOKEN]: prints the response body.
call() {
  local expected=$1 method=$2 path=$3 data=${4:-} token=${5:-}
  local args=(-sS -o "$body" -w '%{http_code}' -X "$method" "$BASE_URL$path")
  [ -n "$data" ] && args+=(-H 'Content-Type: application/json' --data "$data")
  [ -n "$token" ] && args+=(-H "Authorization: Bearer $token")
  local status
  status=$(curl "${args[@]}")
  if [ "$status" != "$expected" ]; then
    echo "FAILED: $method $path answered $status, expected $expected" >&2
    cat "$body" >&2; echo >&2
    exit 1
  fi
  echo "ok: $method $path -> $status" >&2
  cat "$body"
}

# json FIELD: reads one top-level field of the JSON on standard input.
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

command -v oathtool >/dev/null || { echo "needs oathtool (apt-get install oathtool)" >&2; exit 1; }
# totp SECRET [SECONDS_AHEAD]: the authenticator's code, now or that many seconds ahead.
totp() {
  oathtool --totp --base32 --now "$(date -u -d "@$(($(date +%s) + ${2:-0}))" '+%Y-%m-%d %H:%M:%S UTC')" "$1"
}

echo "== register"
user_id=$(call 201 POST /api/auth/register \
  "{\"name\":\"Walker\",\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\",\"username\":\"walker$suffix\"}" | json id)

echo "== log in (by email, then by username)"
token=$(call 200 POST /api/auth/login "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | json access_token)
call 200 POST /api/auth/login "{\"username\":\"walker$suffix\",\"password\":\"$PASSWORD\"}" >/dev/null

echo "== me"
call 200 GET /api/users/me "" "$token" | json email

echo "== the admin lists users"
admin=$(call 200 POST /api/auth/login "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" | json access_token)
call 200 GET "/api/users?q=walker$suffix&per_page=5&sort=name" "" "$admin" | json total

echo "== update (PATCH: fields left out stay)"
call 200 PATCH "/api/users/$user_id" '{"name":"Walker Renamed"}' "$token" | json name

echo "== switch on two-factor sign-in (TOTP)"
secret=$(call 200 POST /api/users/me/mfa/totp "{\"current_password\":\"$PASSWORD\"}" "$token" | json secret)
recovery=$(call 200 POST /api/users/me/mfa/totp/confirm "{\"code\":\"$(totp "$secret")\"}" "$token" |
  python3 -c "import json,sys; print(json.load(sys.stdin)['recovery_codes'][0])")
call 200 GET /api/users/me "" "$token" | json mfa_enabled

echo "== log in with two steps: password, then a code"
mfa_token=$(call 200 POST /api/auth/login "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | json mfa_token)
# The code that confirmed is used up; the next step's code is accepted (one step either way).
token=$(call 200 POST /api/auth/login/mfa "{\"mfa_token\":\"$mfa_token\",\"code\":\"$(totp "$secret" 30)\"}" | json access_token)
echo "   (a recovery code works once instead of a code)"
mfa_token=$(call 200 POST /api/auth/login "{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}" | json mfa_token)
call 200 POST /api/auth/login/mfa "{\"mfa_token\":\"$mfa_token\",\"code\":\"$recovery\"}" >/dev/null

echo "== sessions and security events"
call 200 GET /api/users/me/sessions "" "$token" | python3 -c "import json,sys; print(len(json.load(sys.stdin)['items']), 'live sessions')"
call 200 GET "/api/users/me/audit-events?per_page=5" "" "$token" | json total
call 200 GET "/api/audit-events?user_id=$user_id&type=login.succeeded" "" "$admin" | json total

echo "== switch two-factor sign-in off"
call 204 POST /api/users/me/mfa/disable "{\"current_password\":\"$PASSWORD\"}" "$token" >/dev/null

echo "== forgot and reset the password"
# The link is logged after the answer (the mail goes out in the background), and the log
# already holds other links (the verification mail at registration): wait for a new reset one.
# A link counts once its closing quote is written (the log is written in blocks).
reset_links() {
  grep 'password_reset' "$SERVICE_LOG" | grep -o 'token=[A-Za-z0-9_-]*"' | tr -d '"' || true
}
links_before=0
if [ -n "${SERVICE_LOG:-}" ]; then links_before=$(reset_links | wc -l); fi
call 202 POST /api/auth/forgot-password "{\"email\":\"$EMAIL\"}" >/dev/null
if [ -n "${SERVICE_LOG:-}" ]; then
  reset=""
  for _ in $(seq 50); do
    if [ "$(reset_links | wc -l)" -gt "$links_before" ]; then
      reset=$(reset_links | tail -n 1 | cut -d= -f2)
      break
    fi
    sleep 0.1
  done
  [ -n "$reset" ] || { echo "FAILED: no reset link in $SERVICE_LOG" >&2; exit 1; }
  NEW_PASSWORD="second password $suffix"
  call 204 POST /api/auth/reset-password "{\"token\":\"$reset\",\"new_password\":\"$NEW_PASSWORD\"}" >/dev/null
  call 401 GET /api/users/me "" "$token" >/dev/null
  token=$(call 200 POST /api/auth/login "{\"email\":\"$EMAIL\",\"password\":\"$NEW_PASSWORD\"}" | json access_token)
else
  echo "(SERVICE_LOG not set: open the link from the mail to finish the reset)"
fi

echo "== delete"
call 204 DELETE "/api/users/$user_id" "" "$token" >/dev/null
call 404 GET "/api/users/$user_id" "" "$admin" >/dev/null
echo "walkthrough passed"
