#!/usr/bin/env python3
"""Replays the concurrency faults of the "faults under concurrency" review against a
user-service binary on loopback, and prints how many rounds failed out of how many ran.

    python3 scripts/faults.py [--binary target/release/user-service] [--rounds 60]

Scenarios (each bounded in rounds and time; standard library only):
  last-admin     two service processes on one SQLite file, two admins, each process removing
                 the other admin (or itself) at the same moment: demote, deactivate, delete,
                 PATCH active=false, self-demotion, self-deletion. A round fails when no
                 active admin is left, or a request answers 5xx.
  refresh-reuse  two clients present one refresh token at once; a round fails when the
                 winner's new refresh token still works afterwards (the reuse must end the
                 session), or a request answers 5xx.
  duplicates     50 concurrent registrations with one email; a round fails unless exactly
                 one answers 201 and every other 409.
  json-keys      a body with a duplicate key; fails unless 400.
  login-burst    two service processes on one SQLite file, LOCKOUT_THRESHOLD=10, and 50
                 simultaneous wrong logins for one account split between them; a round fails
                 when more than 10 were checked against the password (answered 401 rather
                 than 429).
"""

import argparse
import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

PASSWORD = "faults password 1"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, token=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {}
    if body is not None or raw is not None:
        headers["Content-Type"] = "application/json"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body) if body is not None else None)
    conn.request(method, path, body=data, headers=headers)
    response = conn.getresponse()
    text = response.read()
    conn.close()
    try:
        payload = json.loads(text) if text else None
    except ValueError:
        payload = None
    return response.status, payload


class Service:
    def __init__(self, binary, db, admin_email=None, extra=None):
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            DATABASE_URL=f"sqlite://{db}",
            HOST="127.0.0.1",
            PORT=str(self.port),
            BCRYPT_COST="4",
            RATE_LIMIT_PER_SECOND="0",
            JWT_SECRET="faults-secret-faults-secret-32-bytes",
            RUST_LOG="warn",
        )
        if admin_email:
            env.update(ADMIN_EMAIL=admin_email, ADMIN_PASSWORD=PASSWORD, ADMIN_NAME="Admin")
        env.update(extra or {})
        self.process = subprocess.Popen(
            [binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                if request(self.port, "GET", "/ready")[0] == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError("the service died at start")
            time.sleep(0.05)
        raise RuntimeError("the service did not become ready")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def login(port, email):
    status, body = request(port, "POST", "/api/auth/login", {"email": email, "password": PASSWORD})
    if status != 200:
        raise RuntimeError(f"login of {email} answered {status}: {body}")
    return body


def user_id(port, token):
    return request(port, "GET", "/api/users/me", token=token)[1]["id"]


def at_once(*calls):
    """Runs the calls on threads released together; returns their (status, body)."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i, call):
        barrier.wait()
        try:
            results[i] = call()
        except OSError as e:
            results[i] = (0, str(e))

    threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


REMOVALS = [
    ("demote", lambda port, token, own, other: request(port, "PATCH", f"/api/users/{other}", {"role": "user"}, token)),
    ("deactivate", lambda port, token, own, other: request(port, "PUT", f"/api/users/{other}/deactivate", token=token)),
    ("delete", lambda port, token, own, other: request(port, "DELETE", f"/api/users/{other}", token=token)),
    ("patch-inactive", lambda port, token, own, other: request(port, "PATCH", f"/api/users/{other}", {"active": False}, token)),
    ("self-demote", lambda port, token, own, other: request(port, "PATCH", "/api/users/me", {"role": "user"}, token)),
    ("self-delete", lambda port, token, own, other: request(port, "DELETE", "/api/users/me", token=token)),
]


def last_admin(binary, rounds, work):
    failed = 0
    errors = 0
    for round_ in range(rounds):
        db = os.path.join(work, f"last-admin-{round_}.db")
        first = Service(binary, db, "a@example.com")
        second = Service(binary, db, "b@example.com")
        try:
            a = login(first.port, "a@example.com")["access_token"]
            b = login(second.port, "b@example.com")["access_token"]
            a_id, b_id = user_id(first.port, a), user_id(second.port, b)
            _, remove = REMOVALS[round_ % len(REMOVALS)]
            results = at_once(
                lambda: remove(first.port, a, a_id, b_id),
                lambda: remove(second.port, b, b_id, a_id),
            )
        finally:
            first.stop()
            second.stop()
        with sqlite3.connect(db) as conn:
            (left,) = conn.execute(
                "SELECT count(*) FROM users WHERE role = 'admin' AND active = 1"
            ).fetchone()
        server_errors = sum(1 for status, _ in results if status >= 500 or status == 0)
        errors += server_errors
        if left == 0 or server_errors:
            failed += 1
    return failed, f"{errors} requests answered 5xx"


def refresh_reuse(binary, rounds, work):
    failed = 0
    service = Service(binary, os.path.join(work, "refresh.db"))
    try:
        request(service.port, "POST", "/api/auth/register",
                {"name": "Reuse", "email": "reuse@example.com", "password": PASSWORD})
        for _ in range(rounds):
            token = login(service.port, "reuse@example.com")["refresh_token"]
            results = at_once(
                lambda: request(service.port, "POST", "/api/auth/refresh", {"refresh_token": token}),
                lambda: request(service.port, "POST", "/api/auth/refresh", {"refresh_token": token}),
            )
            winners = [body for status, body in results if status == 200]
            if any(status >= 500 or status == 0 for status, _ in results):
                failed += 1
                continue
            survived = any(
                request(service.port, "POST", "/api/auth/refresh",
                        {"refresh_token": w["refresh_token"]})[0] == 200
                for w in winners
            )
            if survived:
                failed += 1
    finally:
        service.stop()
    return failed, ""


def duplicates(binary, rounds, work):
    failed = 0
    statuses = {}
    service = Service(binary, os.path.join(work, "duplicates.db"))
    try:
        for round_ in range(rounds):
            body = {"name": "Dup", "email": f"dup{round_}@example.com", "password": PASSWORD}
            results = at_once(*[
                (lambda: request(service.port, "POST", "/api/auth/register", body))
                for _ in range(50)
            ])
            codes = [status for status, _ in results]
            for code in codes:
                statuses[code] = statuses.get(code, 0) + 1
            if codes.count(201) != 1 or codes.count(409) != 49:
                failed += 1
    finally:
        service.stop()
    return failed, f"statuses {dict(sorted(statuses.items()))}"


def json_keys(binary, rounds, work):
    service = Service(binary, os.path.join(work, "json.db"))
    try:
        raw = '{"email": "a@example.com", "email": "b@example.com", "password": "x"}'
        status, _ = request(service.port, "POST", "/api/auth/login", raw=raw)
    finally:
        service.stop()
    return (0 if status == 400 else 1), f"answered {status}"


def login_burst(binary, rounds, work):
    failed = 0
    checked_counts = []
    for round_ in range(rounds):
        db = os.path.join(work, f"burst-{round_}.db")
        lockout = {"LOCKOUT_THRESHOLD": "10", "LOCKOUT_SECS": "600"}
        first = Service(binary, db, "burst@example.com", lockout)
        second = Service(binary, db, None, lockout)
        try:
            body = {"email": "burst@example.com", "password": "a wrong password"}
            results = at_once(*[
                (lambda port=(first.port if i % 2 == 0 else second.port):
                    request(port, "POST", "/api/auth/login", body))
                for i in range(50)
            ])
        finally:
            first.stop()
            second.stop()
        checked = sum(1 for status, _ in results if status == 401)
        checked_counts.append(checked)
        if checked > 10 or any(status not in (401, 429) for status, _ in results):
            failed += 1
    return failed, f"checked per round (threshold 10): {checked_counts}"


SCENARIOS = {
    "last-admin": last_admin,
    "refresh-reuse": refresh_reuse,
    "duplicates": duplicates,
    "json-keys": json_keys,
    "login-burst": login_burst,
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", default="target/release/user-service")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    args = parser.parse_args()
    total_failed = 0
    with tempfile.TemporaryDirectory() as work:
        for name in args.scenarios:
            rounds = 1 if name == "json-keys" else args.rounds
            if name in ("duplicates", "login-burst"):
                rounds = max(1, rounds // 6)
            started = time.time()
            failed, note = SCENARIOS[name](args.binary, rounds, work)
            total_failed += failed
            print(f"{name:14} {failed:3} of {rounds:3} rounds failed  ({time.time() - started:.1f} s) {note}")
    sys.exit(1 if total_failed else 0)


if __name__ == "__main__":
    main()
