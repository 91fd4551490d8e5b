#!/usr/bin/env bash
# Runs verify.py against a running user-service signing with JWT_ALGORITHM=$ALGORITHM:
# a fresh access token of $ADMIN_EMAIL is accepted with its claims, and the same token with
# one byte of its signature changed, or checked for another algorithm, is refused.
#   BASE_URL=http://localhost:8080 ALGORITHM=EdDSA ADMIN_EMAIL=… ADMIN_PASSWORD=… bash check.sh
set -euo pipefail
here=$(dirname "$0")
: "${BASE_URL:=http://localhost:8080}" "${ALGORITHM:?RS256 or EdDSA}"
: "${ADMIN_EMAIL:?}" "${ADMIN_PASSWORD:?}"

# field NAME: the member NAME of the JSON object on standard input.
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

login=$(python3 -c 'import json, sys; print(json.dumps({"email": sys.argv[1], "password": sys.argv[2]}))' \
  "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
token=$(curl -fsS -H 'Content-Type: application/json' -d "$login" "$BASE_URL/api/auth/login" |
  field access_token)
verify() { python3 "$here/verify.py" --base-url "$BASE_URL" "$@"; }

claims=$(verify --algorithm "$ALGORITHM" "$token")
[ "$(field iss <<<"$claims")" = user-service ] || { echo "unexpected claims: $claims" >&2; exit 1; }
[ "$(field role <<<"$claims")" = admin ] || { echo "unexpected claims: $claims" >&2; exit 1; }
echo "accepted ($ALGORITHM): sub $(field sub <<<"$claims")"

refused() {
  local what=$1; shift
  if verify "$@" 2>/dev/null >/dev/null; then
    echo "a token with $what was accepted" >&2
    exit 1
  fi
  echo "refused ($ALGORITHM): $what"
}
# The signature's first character changed: another valid base64url character.
signature=${token##*.}
first=${signature:0:1}
[ "$first" = A ] && other=B || other=A
refused "a changed signature" --algorithm "$ALGORITHM" "${token%.*}.$other${signature:1}"
[ "$ALGORITHM" = RS256 ] && wrong=EdDSA || wrong=RS256
refused "another algorithm expected" --algorithm "$wrong" "$token"
refused "another issuer expected" --algorithm "$ALGORITHM" --issuer someone-else "$token"
refused "an audience expected" --algorithm "$ALGORITHM" --audience orders "$token"
