"""Schemathesis hooks for scripts/api-checks.sh (loaded through scripts/schemathesis.toml).

Three things the OpenAPI document cannot do for the fuzzer:

1. Keep it an admin. It may demote, deactivate or delete its own account: once it has made
   another admin, the business rules allow that. So before each request the token is checked
   (GET /api/users/me); when it is no longer an active admin's, a new admin is made with the
   binary's own `create-admin` command, and the fuzzing goes on as that admin.

2. Count passwords in bytes. New passwords are 8 to 72 bytes of UTF-8 (bcrypt reads 72 bytes
   and no more), but JSON Schema counts characters and has no keyword that counts bytes, nor
   can a pattern of reasonable size. The document gives the rule in prose and as
   `minLength: 8, maxLength: 72`, which is exact for ASCII. So that what the document says of
   each generated password is what the service does, the fuzzer's new passwords are made ASCII:
   every other character becomes "x", which keeps the length in characters and with it whether
   (and how) the value breaks the schema.

3. Avoid the passwords the service refuses for what they are: one of the 10,000 most common
   (src/domain/common-passwords.txt), or equal to the account's email, the part of it before
   `@`, its username or its name. No schema can list those; a generated new password of valid
   length that is one of them has its last character changed (its length stays).

4. Name a session that exists, every other time, in DELETE /api/users/me/sessions/{sid}:
   which sessions exist is state, and a made-up id only ever reaches the 404. The session is
   a second one of the fuzzer's admin, started for the case, so the token it fuzzes with
   stays good.

Environment: API_CHECKS_BASE_URL, ADMIN_EMAIL, ADMIN_PASSWORD, and for `create-admin` the
service's binary in API_CHECKS_BINARY and its settings (DATABASE_URL, ...).
"""

import itertools
import os
import subprocess
import sys
import threading

import jwt
import requests
import schemathesis
from schemathesis.generation import GenerationMode

BASE_URL = os.environ["API_CHECKS_BASE_URL"]


@schemathesis.auth(refresh_interval=None)
class ActiveAdmin:
    # The one instance schemathesis makes, for map_case.
    current = None

    def __init__(self):
        type(self).current = self
        self.lock = threading.Lock()
        self.email = os.environ["ADMIN_EMAIL"]
        self.password = os.environ["ADMIN_PASSWORD"]
        self.token = None
        self.serial = itertools.count(1)

    def get(self, case, context):
        with self.lock:
            if self.token is None or not self.is_active_admin(self.token):
                self.token = self.log_in()
                if self.token is None or not self.is_active_admin(self.token):
                    self.make_admin()
                    self.token = self.log_in()
            return self.token

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}

    @staticmethod
    def is_active_admin(token):
        me = requests.get(
            f"{BASE_URL}/api/users/me", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        return me.status_code == 200 and me.json()["role"] == "admin" and me.json()["active"]

    def log_in(self):
        answer = requests.post(
            f"{BASE_URL}/api/auth/login",
            json={"email": self.email, "password": self.password},
            timeout=10,
        )
        return answer.json()["access_token"] if answer.status_code == 200 else None

    def make_admin(self):
        self.email = f"fuzz-admin-{next(self.serial)}@example.com"
        subprocess.run(
            [os.environ["API_CHECKS_BINARY"], "create-admin", "--email", self.email],
            input=f"{self.password}\n",
            text=True,
            capture_output=True,
            check=True,
        )
        print(f"api-checks: the fuzzer's admin lost its rights; now {self.email}", file=sys.stderr)


# The operations that check new passwords with `Password::parse`, and those fields. The login
# `password` and `current_password` are only compared, never length-checked past `minLength: 1`.
NEW_PASSWORD_FIELDS = {
    "register": ("password",),
    "create_user": ("password",),
    "put_me": ("password",),
    "patch_me": ("password",),
    "put_user": ("password",),
    "patch_user": ("password",),
    "reset_password": ("new_password",),
}


with open(os.path.join(os.path.dirname(__file__), "..", "src", "domain", "common-passwords.txt")) as f:
    COMMON_PASSWORDS = set(f.read().split())


def refused(password, body):
    """Whether the service refuses this new password for what it is (not for its length)."""
    low = password.lower()
    words = [body.get("email"), body.get("username"), body.get("name")]
    email = body.get("email")
    if isinstance(email, str):
        words.append(email.split("@")[0])
    return low in COMMON_PASSWORDS or any(
        isinstance(w, str) and w.strip().lower() == low for w in words
    )


LIVE_SESSION_TURNS = itertools.count()


def live_session():
    """The id of a new session of the fuzzer's admin, or None when it cannot sign in."""
    admin = ActiveAdmin.current
    if admin is None:
        return None
    with admin.lock:
        token = admin.log_in()
    if token is None:
        return None
    return jwt.decode(token, options={"verify_signature": False})["sid"]


@schemathesis.hook
def map_case(context, case):
    operation = case.operation.definition.raw.get("operationId")
    positive = case.meta is None or case.meta.generation.mode == GenerationMode.POSITIVE
    if operation == "end_my_session" and positive and next(LIVE_SESSION_TURNS) % 2 == 0:
        sid = live_session()
        if sid is not None:
            case.path_parameters = {**(case.path_parameters or {}), "sid": sid}
    fields = NEW_PASSWORD_FIELDS.get(operation, ())
    body = case.body
    if not isinstance(body, dict):
        return case
    for field in fields:
        value = body.get(field)
        if isinstance(value, str) and not value.isascii():
            value = "".join(c if c.isascii() else "x" for c in value)
        if isinstance(value, str) and 8 <= len(value) <= 72 and refused(value, body):
            value = next(
                (v for v in (value[:-1] + c for c in "#%~^*!$&") if not refused(v, body)), value
            )
        if value is not body.get(field):
            body = {**body, field: value}
    case.body = body
    return case
