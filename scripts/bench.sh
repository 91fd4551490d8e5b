#!/usr/bin/env bash
# Throughput and latency of the release build on loopback, next to a bare actix-web server
# checking the same kind of token (benches/baseline). Prints one markdown table.
#
#   bash scripts/bench.sh            10 s per scenario, 1,000,000 users for the list pages
#   bash scripts/bench.sh --quick    2 s per scenario, 100,000 users (what CI runs)
#
# Every service is the release binary started fresh on its own SQLite file in a temporary
# directory, with RATE_LIMIT_PER_SECOND=0 and RUST_LOG=info. Nothing here asserts a speed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

DURATION=10
USERS=1000000
QUICK=0
ROUNDS=3
for arg in "$@"; do
  case "$arg" in
    --quick) DURATION=2 USERS=100000 QUICK=1 ROUNDS=1 ;;
    -h | --help)
      sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "bench.sh: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done
STARTED=$SECONDS

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # The service gives requests in flight up to 10 s after SIGTERM; do not wait longer.
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.2
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "bench: $*" >&2; }

# forget PID: a process that has been waited for is no longer ours to kill.
forget() {
  local kept=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

# ---------------------------------------------------------------- tools and builds
if ! command -v wrk >/dev/null; then
  log "installing wrk"
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
for tool in curl python3; do
  command -v "$tool" >/dev/null || { log "$tool is needed"; exit 1; }
done

log "cargo build --release"
cargo build --release --quiet
SERVICE_BIN=$PWD/target/release/user-service
# The baseline is a binary of this package behind the `bench` feature: it reuses the
# release dependencies just built.
log "cargo build --release --features bench --bin baseline"
cargo build --release --quiet --features bench --bin baseline
BASELINE_BIN=$PWD/target/release/baseline
BUILT=$SECONDS

# ---------------------------------------------------------------- helpers
JWT_SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
ADMIN_EMAIL=admin@bench.example
ADMIN_PASSWORD='bench admin password 4711'
USER_PASSWORD='bench user password 4711'
ROWS=$WORK/rows.tsv
: >"$ROWS"
PEAK_KB=0
PEAK_ANON_KB=0
PEAK_RUN=""

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_up URL PID LOGFILE: until URL answers (at most 60 s), or the process is gone.
wait_up() {
  local deadline=$((SECONDS + 60))
  until curl -s -o /dev/null --max-time 1 "$1"; do
    if ! kill -0 "$2" 2>/dev/null || [ "$SECONDS" -ge "$deadline" ]; then
      log "the process behind $1 did not come up; its log ends:"
      tail -n 20 "$3" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# start_service NAME DB_FILE BCRYPT_COST: the release binary on a clean environment (no .env:
# it runs in $WORK) in the background; sets SERVICE_PID and BASE.
start_service() {
  local name=$1 db=$2 cost=$3 port
  port=$(free_port)
  (cd "$WORK" && exec env -i PATH="$PATH" HOME="$WORK" \
    DATABASE_URL="sqlite://$db" HOST=127.0.0.1 PORT="$port" APP_ENV=development \
    JWT_SECRET="$JWT_SECRET" RATE_LIMIT_PER_SECOND=0 RUST_LOG=info BCRYPT_COST="$cost" \
    ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" "$SERVICE_BIN") \
    >"$WORK/$name.log" 2>&1 &
  SERVICE_PID=$!
  PIDS+=("$SERVICE_PID")
  BASE=http://127.0.0.1:$port
  SERVICE_RUN=$name
  wait_up "$BASE/health" "$SERVICE_PID" "$WORK/$name.log"
}

# stop_service: notes the process's peak RSS (VmHWM) and its private memory at the end
# (RssAnon: RSS less the pages of files it maps, which for SQLite's memory-mapped reads are
# the kernel's page cache of the database file), then stops it.
stop_service() {
  local kb
  kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVICE_PID/status" 2>/dev/null || echo 0)
  LAST_KB=${kb:-0}
  if [ "$LAST_KB" -gt "$PEAK_KB" ]; then PEAK_KB=$LAST_KB PEAK_RUN=$SERVICE_RUN; fi
  kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$SERVICE_PID/status" 2>/dev/null || echo 0)
  LAST_ANON_KB=${kb:-0}
  if [ "$LAST_ANON_KB" -gt "$PEAK_ANON_KB" ]; then
    PEAK_ANON_KB=$LAST_ANON_KB PEAK_ANON_RUN=$SERVICE_RUN
  fi
  kill "$SERVICE_PID" 2>/dev/null || true
  wait "$SERVICE_PID" 2>/dev/null || true
  forget "$SERVICE_PID"
}

# login EMAIL PASSWORD: prints the access token.
login() {
  curl -sS --max-time 30 "$BASE/api/auth/login" -H 'Content-Type: application/json' \
    -d "{\"email\": \"$1\", \"password\": \"$2\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}

# bench OUT CONNECTIONS THREADS [wrk arguments...]: one wrk run of DURATION seconds.
bench() {
  local out=$1 conns=$2 threads=$3
  shift 3
  timeout $((DURATION + 60)) wrk -t"$threads" -c"$conns" -d"${DURATION}s" --timeout 10s \
    --latency "$@" >"$out"
}

# row NAME WRK_OUTPUT [NOTE]: a table row from wrk's report.
row() {
  python3 - "$1" "$2" "${3:-}" >>"$ROWS" <<'EOF'
import re, sys
name, path, note = sys.argv[1:4]
text = open(path).read()
def find(pattern, default="-"):
    m = re.search(pattern, text, re.M)
    return m.group(1) if m else default
rps = find(r"^Requests/sec:\s+([\d.]+)", "0")
p50 = find(r"^\s+50%\s+(\S+)")
p99 = find(r"^\s+99%\s+(\S+)")
non2xx = find(r"Non-2xx or 3xx responses:\s+(\d+)", "0")
errors = find(r"Socket errors:\s+(.*)$", "")
if errors:
    note = "; ".join(x for x in (note, "socket errors: " + errors) if x)
print("\t".join([name, rps, "req/s", p50, p99, non2xx, "yes", note]))
EOF
}

# wrk_rate WRK_OUTPUT...: the requests per second of each report, one per line.
wrk_rate() {
  awk '/^Requests\/sec:/ { print $2 }' "$@"
}

# median_run WRK_OUTPUT...: the path of the report of median rate among them (a report
# without a rate counts as 0).
median_run() {
  local report
  for report in "$@"; do
    printf '%s\t%s\n' "$(wrk_rate "$report" | grep . || echo 0)" "$report"
  done | sort -g | awk -F '\t' -v n=$# 'NR == int(n / 2) + 1 { print $2 }'
}

# rates_note WRK_OUTPUT...: with more than one run, each run's rate, for the notes column.
rates_note() {
  [ $# -gt 1 ] || return 0
  echo "median of $# runs in turns with the other side of the ratio: $(wrk_rate "$@" |
    python3 -c 'import sys; print(", ".join(f"{float(x):,.0f}" for x in sys.stdin.read().split()))') req/s"
}

# plain_row NAME RATE UNIT NOTE: a row that is not an HTTP run.
plain_row() {
  printf '%s\t%s\t%s\t-\t-\t-\tno\t%s\n' "$1" "$2" "$3" "$4" >>"$ROWS"
}

cat >"$WORK/login.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"email": "' .. os.getenv("BENCH_EMAIL") .. '", "password": "' .. os.getenv("BENCH_PASSWORD") .. '"}'
EOF

cat >"$WORK/create.lua" <<'EOF'
-- POST /api/users with an email no other request uses.
-- setup() runs once per thread in the main state and gives each thread its own number.
local counter = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"name": "Created User", "email": "created-%d-%d@bench.example", "password": "%s"}',
    thread_number or 0, counter, os.getenv("BENCH_PASSWORD"))
  return wrk.format("POST", "/api/users", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
  }, body)
end
EOF

cat >"$WORK/patch.lua" <<'EOF'
-- PATCH /api/users/{id}: the same user's name, changed every time.
local counter = 0
function request()
  counter = counter + 1
  return wrk.format("PATCH", "/api/users/" .. os.getenv("BENCH_USER_ID"), {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN"),
  }, string.format('{"name": "Patched Name %d"}', counter % 1000))
end
EOF

# ---------------------------------------------------------------- a, b. the baseline and /me
# The two take turns, ROUNDS runs each, and each row is its run of median rate: a slow
# spell of the machine then falls on both sides of the ratio rather than on one.
log "a. baseline and b. GET /api/users/me, in turns"
BASELINE_PORT=$(free_port)
(cd "$WORK" && exec env PORT="$BASELINE_PORT" JWT_SECRET="$JWT_SECRET" "$BASELINE_BIN") \
  >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
wait_up "http://127.0.0.1:$BASELINE_PORT/api/users/me" "$BASELINE_PID" "$WORK/baseline.log"
BASELINE_TOKEN=$(JWT_SECRET=$JWT_SECRET "$BASELINE_BIN" token)
status=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $BASELINE_TOKEN" \
  "http://127.0.0.1:$BASELINE_PORT/api/users/me")
[ "$status" = 200 ] || { log "the baseline answered $status to its own token"; exit 1; }
start_service me "$WORK/me.db" 12
TOKEN=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
for round in $(seq "$ROUNDS"); do
  bench "$WORK/a$round.txt" 32 2 -H "Authorization: Bearer $BASELINE_TOKEN" \
    "http://127.0.0.1:$BASELINE_PORT/api/users/me"
  bench "$WORK/b$round.txt" 32 2 -H "Authorization: Bearer $TOKEN" "$BASE/api/users/me"
done
stop_service
kill "$BASELINE_PID"
wait "$BASELINE_PID" 2>/dev/null || true
forget "$BASELINE_PID"
row "a. baseline: bare actix-web + HS256, GET /api/users/me, 32 conns" \
  "$(median_run "$WORK"/a[0-9]*.txt)" "$(rates_note "$WORK"/a[0-9]*.txt)"
row "b. GET /api/users/me, HS256, 32 conns" \
  "$(median_run "$WORK"/b[0-9]*.txt)" "$(rates_note "$WORK"/b[0-9]*.txt)"

# ---------------------------------------------------------------- c. /me during a login storm
log "c. GET /api/users/me during a login storm"
start_service storm "$WORK/storm.db" 12
TOKEN=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
STORM_EMAIL=storm@bench.example
curl -sS --max-time 30 -o /dev/null "$BASE/api/auth/register" -H 'Content-Type: application/json' \
  -d "{\"name\": \"Storm User\", \"email\": \"$STORM_EMAIL\", \"password\": \"$USER_PASSWORD\"}"
login "$STORM_EMAIL" "$USER_PASSWORD" >/dev/null
BENCH_EMAIL=$STORM_EMAIL BENCH_PASSWORD=$USER_PASSWORD \
  bench "$WORK/c-logins.txt" 8 1 -s "$WORK/login.lua" "$BASE/api/auth/login" &
STORM_PID=$!
PIDS+=("$STORM_PID")
bench "$WORK/c-me.txt" 32 2 -H "Authorization: Bearer $TOKEN" "$BASE/api/users/me"
wait "$STORM_PID"
forget "$STORM_PID"
row "c. GET /api/users/me, 32 conns, during the login storm" "$WORK/c-me.txt"
row "c. POST /api/auth/login (the storm), cost 12, 8 conns" "$WORK/c-logins.txt" "logins"
stop_service

# ---------------------------------------------------------------- d. logins alone, bcrypt rate
log "d. logins alone, and the bcrypt rate"
start_service logins "$WORK/logins.db" 12
BENCH_EMAIL=$ADMIN_EMAIL BENCH_PASSWORD=$ADMIN_PASSWORD \
  bench "$WORK/d.txt" 8 1 -s "$WORK/login.lua" "$BASE/api/auth/login"
row "d. POST /api/auth/login alone, cost 12, 8 conns" "$WORK/d.txt" "logins"
stop_service
THREADS=$(nproc)
BCRYPT_RATE=$(timeout $((DURATION + 60)) "$BASELINE_BIN" bcrypt-rate "$DURATION" "$THREADS")
plain_row "d. bcrypt at cost 12 on $THREADS threads (this machine's ceiling for logins)" \
  "$BCRYPT_RATE" "hashes/s" "bcrypt crate, no server"

# ---------------------------------------------------------------- e. list pages
USERS_LABEL=$(python3 -c "print(f'{$USERS:,}')")
log "e. list pages: seeding $USERS users"
HASH=$("$BASELINE_BIN" bcrypt-hash 4 "$USER_PASSWORD")
python3 - "$USERS" "$HASH" "$WORK/users.jsonl" <<'EOF'
import random, sys
count, password_hash, path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
# "Mario" is the first name of 1% of the users; no other name contains "mario".
first = ("Giulia Luca Sofia Marco Anna Paolo Elena Andrea Chiara Davide Laura Stefano Sara "
         "Matteo Francesca Simone Valentina Alessandro Martina Federico Alice Giorgio Elisa "
         "Roberto Silvia Antonio Giovanni Beatrice Riccardo Emma Tommaso Camilla Pietro Irene "
         "Nicola Aurora Filippo Ginevra Lorenzo Noemi").split()
last = ("Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Bruno Gallo Conti "
        "DeLuca Costa Giordano Mancini Rizzo Lombardi Moretti Barbieri Fontana Santoro "
        "Caruso Ferrara Galli Martini Leone Longo Gentile Martinelli Vitale Lombardo Serra "
        "Coppola DeSantis Fabbri Marchetti Villa Conte Ferri Parisi").split()
rng = random.Random(42)
with open(path, "w") as out:
    for i in range(count):
        name = ("Mario" if rng.random() < 0.01 else rng.choice(first)) + " " + rng.choice(last)
        # One in a thousand is an admin, one in twenty deactivated, for the filtered lists.
        extra = (', "role": "admin"' if i % 1000 == 0 else "") + \
            (', "active": false' if i % 20 == 1 else "")
        out.write('{"email": "user%07d@bench.example", "name": "%s", "password_hash": "%s"%s}\n'
                  % (i, name, password_hash, extra))
EOF
IMPORT_START=$(date +%s.%N)
if ! (cd "$WORK" && timeout 3600 env -i PATH="$PATH" HOME="$WORK" \
  DATABASE_URL="sqlite://$WORK/list.db" RUST_LOG=warn "$SERVICE_BIN" import "$WORK/users.jsonl") \
  >"$WORK/import.out" 2>&1; then
  log "user-service import failed; its output ends:"
  tail -n 20 "$WORK/import.out" >&2
  exit 1
fi
IMPORT_END=$(date +%s.%N)
IMPORT_RATE=$(python3 -c "print(f'{$USERS / ($IMPORT_END - $IMPORT_START):.0f}')")
plain_row "e. import of $USERS_LABEL users (user-service import)" "$IMPORT_RATE" "users/s" \
  "$(tail -n 1 "$WORK/import.out" | tr '\t' ' ')"
rm -f "$WORK/users.jsonl"

start_service list "$WORK/list.db" 4
TOKEN=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
DEEP_PAGE=$((USERS / 2 / 20))
# cursor_after SORT: the next_cursor of the page halfway down in SORT, for a deep page by
# keyset (fetched once by page number, which is slow at depth: that is the point).
cursor_after() {
  curl -s --max-time 120 -H "Authorization: Bearer $TOKEN" \
    "$BASE/api/users?page=$DEEP_PAGE&sort=$1" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["next_cursor"])'
}
QUERIES=()
for sort in -created_at created_at name -name email -email; do
  QUERIES+=("sort=$sort" "sort=$sort&after=$(cursor_after "$sort")")
done
# "rossi mario", a name in the wrong order, matches no one.
QUERIES+=("page=$DEEP_PAGE" role=admin active=false "role=user&active=true&sort=name" \
  q=mario "q=mario&sort=name" "q=mario&role=admin" "q=mario&active=false" "q=rossi%20mario")
n=0
for query in "${QUERIES[@]}"; do
  n=$((n + 1))
  status=$(curl -s -o /dev/null --max-time 60 -w '%{http_code}' \
    -H "Authorization: Bearer $TOKEN" "$BASE/api/users?$query")
  [ "$status" = 200 ] || { log "GET /api/users?$query answered $status"; exit 1; }
  bench "$WORK/e$n.txt" 32 2 -H "Authorization: Bearer $TOKEN" "$BASE/api/users?$query"
  label=${query%%&after=*}
  [ "$label" = "$query" ] || label="$label&after=(the cursor after page $DEEP_PAGE)"
  note=""
  [ "$query" = "q=rossi%20mario" ] && note="matches no one"
  row "e. GET /api/users?$label (20 per page), 32 conns" "$WORK/e$n.txt" "$note"
done
# A search is heavier than a page: also as people at a search box meet it, two at a time,
# and one that every user matches (each address is at bench.example), whose total counts
# them all.
for query in q=mario "q=mario&sort=name" q=bench; do
  n=$((n + 1))
  bench "$WORK/e$n.txt" 2 1 -H "Authorization: Bearer $TOKEN" "$BASE/api/users?$query"
  note=""
  [ "$query" = q=bench ] && note="every user matches"
  row "e. GET /api/users?$query (20 per page), 2 conns" "$WORK/e$n.txt" "$note"
done
stop_service

# ---------------------------------------------------------------- f. creates and updates
log "f. POST /api/users and PATCH /api/users/{id}"
start_service writes "$WORK/writes.db" 4
TOKEN=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
BENCH_TOKEN=$TOKEN BENCH_PASSWORD=$USER_PASSWORD \
  bench "$WORK/f-create.txt" 32 2 -s "$WORK/create.lua" "$BASE/api/users"
row "f. POST /api/users as admin, cost 4, 32 conns" "$WORK/f-create.txt" "non-2xx are failed creates"
USER_ID=$(curl -sS --max-time 30 "$BASE/api/users" -H 'Content-Type: application/json' \
  -H "Authorization: Bearer $TOKEN" \
  -d "{\"name\": \"Patched Name\", \"email\": \"patched@bench.example\", \"password\": \"$USER_PASSWORD\"}" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
BENCH_TOKEN=$TOKEN BENCH_USER_ID=$USER_ID \
  bench "$WORK/f-patch.txt" 32 2 -s "$WORK/patch.lua" "$BASE/api/users/$USER_ID"
row "f. PATCH /api/users/{id} (one user's name), 32 conns" "$WORK/f-patch.txt"
stop_service

# ---------------------------------------------------------------- g. 64 connections, peak RSS
log "g. GET /api/users/me at 64 connections"
start_service me64 "$WORK/me64.db" 12
TOKEN=$(login "$ADMIN_EMAIL" "$ADMIN_PASSWORD")
bench "$WORK/g.txt" 64 2 -H "Authorization: Bearer $TOKEN" "$BASE/api/users/me"
stop_service
row "g. GET /api/users/me, 64 conns" "$WORK/g.txt" \
  "peak RSS of this run: $((LAST_KB / 1024)) MiB (private: $((LAST_ANON_KB / 1024)) MiB)"
plain_row "g. peak RSS of the service, max over all runs" "$((PEAK_KB / 1024))" "MiB" \
  "VmHWM, highest in run '$PEAK_RUN' (mapped database pages included)"
plain_row "g. private memory (RssAnon) at the end of a run, max over all runs" \
  "$((PEAK_ANON_KB / 1024))" "MiB" "highest in run '$PEAK_ANON_RUN'"

# ---------------------------------------------------------------- the table
if [ "$QUICK" = 1 ]; then
  TITLE="Benchmark, --quick: ${DURATION} s per scenario, list pages at $USERS_LABEL users (not 1,000,000)"
else
  TITLE="Benchmark: ${DURATION} s per scenario, list pages at $USERS_LABEL users"
fi
echo
python3 - "$ROWS" "$TITLE" "$(nproc)" "$BCRYPT_RATE" <<'EOF'
import sys
path, title, cores, bcrypt_rate = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
baseline = float(rows[0][1]) if rows and rows[0][1] != "-" else 0.0
print(f"### {title} ({cores} cores, loopback, wrk)")
print()
print("| scenario | rate | p50 | p99 | non-2xx | vs baseline | notes |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
for name, rate, unit, p50, p99, non2xx, http, note in rows:
    value = float(rate) if rate not in ("-", "") else None
    ratio = "-"
    if http == "yes" and value is not None and baseline:
        r = value / baseline
        ratio = f"{r:.3f}" if r >= 0.001 else f"{r:.1e}"
    if note == "logins" and value is not None:
        note = f"{value / bcrypt_rate:.0%} of the bcrypt rate" if bcrypt_rate else ""
    shown = f"{value:,.1f} {unit}" if value is not None else "-"
    print(f"| {name} | {shown} | {p50} | {p99} | {non2xx} | {ratio} | {note} |")
EOF
echo
log "builds took $((BUILT - STARTED)) s, the scenarios $((SECONDS - BUILT)) s"
