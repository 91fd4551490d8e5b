//! The embedded backend: one SQLite file, so the service runs with nothing else installed.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, Transaction, TransactionBehavior,
    functions::FunctionFlags, params, types::Value,
};
use time::OffsetDateTime;

use super::{
    LoginAttempts, RefreshTokenRecord, RefreshTokenUse, Repository, ResetTokenRecord, StorageError,
    StorageResult, StoredAttempts, UniqueField, VerificationTokenRecord, role_from_stored,
    stored_role,
};
use crate::{
    domain::{
        DisplayName, Email, ListQuery, Page, SortField, SortOrder, User, UserField, UserFilter,
        UserId, UserPatch, Username, unix_millis,
    },
    telemetry::spawn_blocking_with_tracing,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    name                TEXT NOT NULL,
    username            TEXT,
    email               TEXT NOT NULL,
    role                TEXT NOT NULL CHECK (role IN ('user', 'admin')),
    active              INTEGER NOT NULL CHECK (active IN (0, 1)),
    password_hash       TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    last_login_at       INTEGER,
    password_changed_at INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX users_email_unique ON users (lower(email));
CREATE UNIQUE INDEX users_username_unique ON users (lower(username)) WHERE username IS NOT NULL;
CREATE INDEX users_created_at ON users (created_at DESC, id DESC);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id  TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    spent_at   INTEGER,
    revoked    INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_expires ON refresh_tokens (expires_at);

CREATE TABLE reset_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX reset_tokens_user ON reset_tokens (user_id);
"#,
    // Refresh-token families (sessions) with an ended state, so that a token issued into a
    // family after it ended (the winner of a refresh race against a reuse) is dead too.
    r#"
CREATE TABLE refresh_families (
    family_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    ended      INTEGER NOT NULL DEFAULT 0 CHECK (ended IN (0, 1))
) STRICT;
CREATE INDEX refresh_families_user ON refresh_families (user_id);
CREATE INDEX refresh_families_expires ON refresh_families (expires_at);
INSERT INTO refresh_families (family_id, user_id, expires_at, ended)
    SELECT family_id, min(user_id), max(expires_at), max(revoked)
    FROM refresh_tokens GROUP BY family_id;
ALTER TABLE refresh_tokens DROP COLUMN revoked;
"#,
    // Login attempts counted per key, for the login lock.
    r#"
CREATE TABLE login_attempts (
    key          TEXT PRIMARY KEY,
    count        INTEGER NOT NULL,
    last_at      INTEGER NOT NULL,
    locked_until INTEGER,
    expires_at   INTEGER NOT NULL
) STRICT;
CREATE INDEX login_attempts_expires ON login_attempts (expires_at);
ALTER TABLE users ADD COLUMN locked_until INTEGER;
"#,
    // Email verification and the mail throttle.
    r#"
ALTER TABLE users ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0
    CHECK (email_verified IN (0, 1));
CREATE TABLE verification_tokens (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) STRICT;
CREATE INDEX verification_tokens_user ON verification_tokens (user_id);
CREATE TABLE mail_log (
    kind    TEXT NOT NULL,
    address TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    PRIMARY KEY (kind, address)
) STRICT;
CREATE INDEX mail_log_sent ON mail_log (sent_at);
"#,
];

const USER_COLUMNS: &str = "id, name, username, email, role, active, password_hash, \
     created_at, updated_at, last_login_at, password_changed_at, locked_until, email_verified";

/// How often a call that met `SQLITE_BUSY` (another process held the write lock for longer
/// than the busy timeout) is tried again before the database counts as unavailable.
const BUSY_RETRIES: u32 = 3;

/// One connection behind a mutex: SQLite serialises writers anyway. Several processes may
/// share the file: every write transaction starts with `BEGIN IMMEDIATE`, so that it waits
/// for the write lock (up to the busy timeout) instead of failing when it would upgrade a
/// read lock. Every call runs on the blocking pool.
#[derive(Clone)]
pub struct SqliteRepository {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteRepository {
    /// Opens (creating the file and its directory if needed) and migrates the database.
    pub async fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_owned();
        let conn = spawn_blocking_with_tracing(move || -> anyhow::Result<Connection> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
            }
            let mut conn = Connection::open(&path)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
            configure(&conn)?;
            migrate(&mut conn)?;
            Ok(conn)
        })
        .await??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool, again after a short random pause
    /// when another process kept the database busy.
    async fn call<T, F>(&self, mut f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        spawn_blocking_with_tracing(move || {
            // A panic while holding the lock cannot leave a half-done transaction behind
            // (rusqlite rolls back on drop), so a poisoned lock is still safe to use.
            let mut guard = conn.lock().unwrap_or_else(|poison| poison.into_inner());
            let mut attempt = 0;
            loop {
                match f(&mut guard) {
                    Err(e) if is_busy(&e) && attempt < BUSY_RETRIES => {
                        attempt += 1;
                        let pause = rand::random_range(10..50 * u64::from(attempt));
                        std::thread::sleep(std::time::Duration::from_millis(pause));
                    }
                    result => return result,
                }
            }
        })
        .await
        .map_err(StorageError::internal)?
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // SQLite's own lower() folds ASCII only; the `q` filter must ignore case in any script,
    // as MongoDB's case-insensitive regex does.
    conn.create_scalar_function(
        "unicode_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_lowercase())),
    )?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
}

/// Applies the missing migrations in one write transaction, so that processes opening the
/// same new file at once migrate it once.
fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = write_transaction(conn)?;
    let applied: i64 = tx.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let applied = usize::try_from(applied)?;
    if applied > MIGRATIONS.len() {
        anyhow::bail!(
            "the database schema (version {applied}) is newer than this build knows ({})",
            MIGRATIONS.len()
        );
    }
    for sql in &MIGRATIONS[applied..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", i64::try_from(MIGRATIONS.len())?)?;
    tx.commit()?;
    Ok(())
}

/// A transaction that holds the write lock from its start (`BEGIN IMMEDIATE`).
fn write_transaction(conn: &mut Connection) -> rusqlite::Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
}

fn is_busy(error: &StorageError) -> bool {
    let StorageError::Unavailable(cause) = error else {
        return false;
    };
    matches!(
        cause.downcast_ref::<rusqlite::Error>(),
        Some(rusqlite::Error::SqliteFailure(failure, _))
            if matches!(failure.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

fn is_active_admin(conn: &Connection, id: &str) -> StorageResult<bool> {
    Ok(conn
        .prepare_cached("SELECT 1 FROM users WHERE id = ?1 AND role = 'admin' AND active = 1")?
        .exists([id])?)
}

/// Fails the write in progress, which is then rolled back, if it leaves no active admin.
fn ensure_an_active_admin(conn: &Connection) -> StorageResult<()> {
    let left = conn
        .prepare_cached("SELECT 1 FROM users WHERE role = 'admin' AND active = 1 LIMIT 1")?
        .exists([])?;
    if left {
        Ok(())
    } else {
        Err(StorageError::LastActiveAdmin)
    }
}

impl From<rusqlite::Error> for StorageError {
    fn from(error: rusqlite::Error) -> Self {
        if let rusqlite::Error::SqliteFailure(failure, message) = &error {
            match failure.code {
                ErrorCode::ConstraintViolation => {
                    let message = message.as_deref().unwrap_or_default();
                    if message.contains("users_email_unique") {
                        return StorageError::Duplicate(UniqueField::Email);
                    }
                    if message.contains("users_username_unique") {
                        return StorageError::Duplicate(UniqueField::Username);
                    }
                }
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::CannotOpen
                | ErrorCode::DiskFull
                | ErrorCode::SystemIoFailure => return StorageError::Unavailable(error.into()),
                _ => {}
            }
        }
        StorageError::Internal(error.into())
    }
}

fn from_millis(ms: i64) -> rusqlite::Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).map_err(conversion_error)
}

fn conversion_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    let text = |i: usize| row.get::<_, String>(i);
    Ok(User {
        id: UserId::parse(&text(0)?).map_err(conversion_error)?,
        name: DisplayName::parse(&text(1)?).map_err(conversion_error)?,
        username: row
            .get::<_, Option<String>>(2)?
            .map(|u| Username::parse(&u))
            .transpose()
            .map_err(conversion_error)?,
        email: Email::parse(&text(3)?).map_err(conversion_error)?,
        role: role_from_stored(&text(4)?).map_err(conversion_error)?,
        active: row.get(5)?,
        password_hash: text(6)?,
        created_at: from_millis(row.get(7)?)?,
        updated_at: from_millis(row.get(8)?)?,
        last_login_at: row.get::<_, Option<i64>>(9)?.map(from_millis).transpose()?,
        locked_until: row
            .get::<_, Option<i64>>(11)?
            .map(from_millis)
            .transpose()?,
        email_verified: row.get(12)?,
        password_changed_at: from_millis(row.get(10)?)?,
    })
}

fn select_user(conn: &Connection, column: &str, value: &str) -> StorageResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {column} = lower(?1)");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], user_from_row)
        .optional()?)
}

fn insert_user(conn: &Connection, user: &User) -> StorageResult<()> {
    conn.prepare_cached(
        "INSERT INTO users (id, name, username, email, role, active, password_hash, created_at, \
         updated_at, last_login_at, password_changed_at, locked_until, email_verified) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        user.id.to_hex(),
        user.name.as_str(),
        user.username.as_ref().map(Username::as_str),
        user.email.as_str(),
        stored_role(user.role),
        user.active,
        user.password_hash,
        unix_millis(user.created_at),
        unix_millis(user.updated_at),
        user.last_login_at.map(unix_millis),
        unix_millis(user.password_changed_at),
        user.locked_until.map(unix_millis),
        user.email_verified,
    ])?;
    Ok(())
}

/// The column and value each field of a patch sets.
fn column(field: &UserField) -> (&'static str, Value) {
    let text = |s: &str| Value::Text(s.to_owned());
    match field {
        UserField::Name(name) => ("name", text(name.as_str())),
        UserField::Username(username) => (
            "username",
            username.as_ref().map_or(Value::Null, |u| text(u.as_str())),
        ),
        UserField::Email(email) => ("email", text(email.as_str())),
        UserField::Role(role) => ("role", text(stored_role(*role))),
        UserField::Active(active) => ("active", Value::Integer(i64::from(*active))),
        UserField::PasswordHash(hash) => ("password_hash", text(hash)),
        UserField::PasswordChangedAt(at) => {
            ("password_changed_at", Value::Integer(unix_millis(*at)))
        }
        UserField::UpdatedAt(at) => ("updated_at", Value::Integer(unix_millis(*at))),
        UserField::LastLoginAt(at) => ("last_login_at", Value::Integer(unix_millis(*at))),
        UserField::EmailVerified(verified) => {
            ("email_verified", Value::Integer(i64::from(*verified)))
        }
        UserField::LockedUntil(until) => (
            "locked_until",
            until.map_or(Value::Null, |until| Value::Integer(unix_millis(until))),
        ),
    }
}

/// The WHERE clause and its parameters for a filter.
fn where_clause(filter: &UserFilter) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    if let Some(q) = &filter.q {
        values.push(Value::Text(q.to_lowercase()));
        let n = values.len();
        conditions.push(format!(
            "(instr(unicode_lower(name), ?{n}) > 0 OR instr(email, ?{n}) > 0 \
             OR instr(unicode_lower(coalesce(username, '')), ?{n}) > 0)"
        ));
    }
    if let Some(role) = filter.role {
        values.push(Value::Text(stored_role(role).to_owned()));
        conditions.push(format!("role = ?{}", values.len()));
    }
    if let Some(active) = filter.active {
        values.push(Value::Integer(i64::from(active)));
        conditions.push(format!("active = ?{}", values.len()));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), values)
    }
}

fn count(conn: &Connection, filter: &UserFilter) -> StorageResult<u64> {
    let (clause, values) = where_clause(filter);
    let sql = format!("SELECT count(*) FROM users {clause}");
    let n: i64 = conn.query_row(&sql, rusqlite::params_from_iter(values), |r| r.get(0))?;
    Ok(n as u64)
}

#[async_trait]
impl Repository for SqliteRepository {
    async fn ping(&self) -> StorageResult<()> {
        self.call(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create_user(&self, user: &User) -> StorageResult<()> {
        let user = user.clone();
        self.call(move |conn| insert_user(conn, &user)).await
    }

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        let id = id.to_hex();
        self.call(move |conn| select_user(conn, "id", &id)).await
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        let email = email.as_str().to_owned();
        self.call(move |conn| select_user(conn, "lower(email)", &email))
            .await
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        let key = username.key();
        self.call(move |conn| select_user(conn, "lower(username)", &key))
            .await
    }

    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>> {
        let id = id.to_hex();
        let guarded = patch.may_remove_an_admin();
        let (columns, values): (Vec<_>, Vec<_>) = patch.fields().iter().map(column).unzip();
        let assignments = columns
            .iter()
            .enumerate()
            .map(|(i, column)| format!("{column} = ?{}", i + 1))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "UPDATE users SET {assignments} WHERE id = ?{} RETURNING {USER_COLUMNS}",
            values.len() + 1
        );
        self.call(move |conn| {
            if values.is_empty() {
                return select_user(conn, "id", &id);
            }
            let tx = write_transaction(conn)?;
            let was_active_admin = guarded && is_active_admin(&tx, &id)?;
            let parameters = values.iter().cloned().chain([Value::Text(id.clone())]);
            let user = tx
                .prepare_cached(&sql)?
                .query_row(rusqlite::params_from_iter(parameters), user_from_row)
                .optional()?;
            if was_active_admin {
                ensure_an_active_admin(&tx)?;
            }
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        let id = id.to_hex();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let was_active_admin = is_active_admin(&tx, &id)?;
            let deleted = tx.execute("DELETE FROM users WHERE id = ?1", [&id])? > 0;
            tx.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM refresh_families WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM reset_tokens WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM verification_tokens WHERE user_id = ?1", [&id])?;
            if was_active_admin {
                ensure_an_active_admin(&tx)?;
            }
            tx.commit()?;
            Ok(deleted)
        })
        .await
    }

    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>> {
        let query = query.clone();
        self.call(move |conn| {
            let tx = conn.transaction()?;
            let total = count(&tx, &query.filter)?;
            let (clause, mut values) = where_clause(&query.filter);
            let column = match query.sort {
                SortField::CreatedAt => "created_at",
                SortField::Name => "name",
                SortField::Email => "email",
            };
            let direction = match query.order {
                SortOrder::Ascending => "ASC",
                SortOrder::Descending => "DESC",
            };
            values.push(Value::Integer(i64::from(query.per_page)));
            values.push(Value::Integer(query.offset() as i64));
            let n = values.len();
            let sql = format!(
                "SELECT {USER_COLUMNS} FROM users {clause} \
                 ORDER BY {column} {direction}, id {direction} LIMIT ?{} OFFSET ?{n}",
                n - 1
            );
            let items = tx
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(values), user_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
        .await
    }

    async fn count_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        threshold: u32,
        lock_for: std::time::Duration,
    ) -> StorageResult<LoginAttempts> {
        let key = key.to_owned();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            tx.execute(
                "DELETE FROM login_attempts WHERE expires_at < ?1",
                [unix_millis(at)],
            )?;
            let previous = tx
                .prepare_cached(
                    "SELECT count, last_at, locked_until FROM login_attempts WHERE key = ?1",
                )?
                .query_row([&key], |row| {
                    Ok(StoredAttempts {
                        count: row.get(0)?,
                        last_at: from_millis(row.get(1)?)?,
                        locked_until: row.get::<_, Option<i64>>(2)?.map(from_millis).transpose()?,
                    })
                })
                .optional()?;
            let next = StoredAttempts::next(previous, at, threshold, lock_for);
            tx.prepare_cached(
                "INSERT INTO login_attempts (key, count, last_at, locked_until, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (key) DO UPDATE SET \
                 count = excluded.count, last_at = excluded.last_at, \
                 locked_until = excluded.locked_until, expires_at = excluded.expires_at",
            )?
            .execute(params![
                key,
                next.count,
                unix_millis(next.last_at),
                next.locked_until.map(unix_millis),
                unix_millis(next.expires_at(lock_for)),
            ])?;
            tx.commit()?;
            Ok(next.public())
        })
        .await
    }

    async fn clear_login_attempts(&self, key: &str) -> StorageResult<()> {
        let key = key.to_owned();
        self.call(move |conn| {
            conn.execute("DELETE FROM login_attempts WHERE key = ?1", [&key])?;
            Ok(())
        })
        .await
    }

    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()> {
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let now = unix_millis(record.created_at);
            // Expired tokens and families can never be used again; sweep them while writing.
            tx.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", [now])?;
            tx.execute("DELETE FROM refresh_families WHERE expires_at < ?1", [now])?;
            tx.execute(
                "INSERT INTO refresh_families (family_id, user_id, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (family_id) DO UPDATE SET expires_at = max(expires_at, excluded.expires_at)",
                params![
                    record.family_id,
                    record.user_id.to_hex(),
                    unix_millis(record.expires_at)
                ],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, user_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    record.token_hash,
                    record.family_id,
                    record.user_id.to_hex(),
                    now,
                    unix_millis(record.expires_at),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let found = tx
                .query_row(
                    "SELECT t.family_id, t.user_id, t.created_at, t.expires_at, \
                     t.spent_at IS NOT NULL, coalesce(f.ended, 0) \
                     FROM refresh_tokens t LEFT JOIN refresh_families f USING (family_id) \
                     WHERE t.token_hash = ?1",
                    [&token_hash],
                    |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, i64>(3)?,
                            row.get::<_, bool>(4)?,
                            row.get::<_, bool>(5)?,
                        ))
                    },
                )
                .optional()?;
            let Some((family_id, user_id, created_at, expires_at, spent, ended)) = found else {
                return Ok(RefreshTokenUse::Unknown);
            };
            if ended {
                return Ok(RefreshTokenUse::Revoked);
            }
            if spent {
                return Ok(RefreshTokenUse::Replayed { family_id });
            }
            tx.execute(
                "UPDATE refresh_tokens SET spent_at = ?2 WHERE token_hash = ?1",
                params![token_hash, unix_millis(at)],
            )?;
            tx.commit()?;
            Ok(RefreshTokenUse::Spent(RefreshTokenRecord {
                token_hash: token_hash.clone(),
                family_id,
                user_id: UserId::parse(&user_id).map_err(StorageError::internal)?,
                created_at: from_millis(created_at)?,
                expires_at: from_millis(expires_at)?,
            }))
        })
        .await
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> StorageResult<()> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE refresh_families SET ended = 1 WHERE family_id = \
                 (SELECT family_id FROM refresh_tokens WHERE token_hash = ?1)",
                [&token_hash],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_refresh_family(&self, family_id: &str) -> StorageResult<()> {
        let family_id = family_id.to_owned();
        self.call(move |conn| {
            conn.execute(
                "UPDATE refresh_families SET ended = 1 WHERE family_id = ?1",
                [&family_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_user_refresh_tokens(&self, user_id: &UserId) -> StorageResult<()> {
        let user_id = user_id.to_hex();
        self.call(move |conn| {
            conn.execute(
                "UPDATE refresh_families SET ended = 1 WHERE user_id = ?1",
                [&user_id],
            )?;
            Ok(())
        })
        .await
    }

    async fn insert_reset_token(&self, record: ResetTokenRecord) -> StorageResult<()> {
        self.call(move |conn| {
            conn.execute(
                "INSERT INTO reset_tokens (token_hash, user_id, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    record.token_hash,
                    record.user_id.to_hex(),
                    unix_millis(record.created_at),
                    unix_millis(record.expires_at),
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn reset_token_owner(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let token_hash = token_hash.to_owned();
        let at = unix_millis(at);
        self.call(move |conn| {
            let owner: Option<String> = conn
                .prepare_cached(
                    "SELECT user_id FROM reset_tokens \
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2",
                )?
                .query_row(params![token_hash, at], |row| row.get(0))
                .optional()?;
            owner
                .map(|id| UserId::parse(&id).map_err(StorageError::internal))
                .transpose()
        })
        .await
    }

    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let user_id: Option<String> = tx
                .query_row(
                    "UPDATE reset_tokens SET used_at = ?2 \
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
                     RETURNING user_id",
                    params![token_hash, unix_millis(at)],
                    |row| row.get(0),
                )
                .optional()?;
            let Some(user_id) = user_id else {
                return Ok(None);
            };
            tx.execute(
                "UPDATE reset_tokens SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
                params![user_id, unix_millis(at)],
            )?;
            tx.commit()?;
            Ok(Some(
                UserId::parse(&user_id).map_err(StorageError::internal)?,
            ))
        })
        .await
    }
    async fn insert_verification_token(
        &self,
        record: VerificationTokenRecord,
    ) -> StorageResult<()> {
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let at = unix_millis(record.created_at);
            tx.execute(
                "UPDATE verification_tokens SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
                params![record.user_id.to_hex(), at],
            )?;
            tx.execute("DELETE FROM verification_tokens WHERE expires_at < ?1", [at])?;
            tx.execute(
                "INSERT INTO verification_tokens (token_hash, user_id, email, created_at, expires_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    record.token_hash,
                    record.user_id.to_hex(),
                    record.email.as_str(),
                    at,
                    unix_millis(record.expires_at),
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn consume_verification_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, Email)>> {
        let token_hash = token_hash.to_owned();
        self.call(move |conn| {
            let spent: Option<(String, String)> = conn
                .prepare_cached(
                    "UPDATE verification_tokens SET used_at = ?2 \
                     WHERE token_hash = ?1 AND used_at IS NULL AND expires_at > ?2 \
                     RETURNING user_id, email",
                )?
                .query_row(params![token_hash, unix_millis(at)], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            spent
                .map(|(user_id, email)| {
                    Ok((
                        UserId::parse(&user_id).map_err(StorageError::internal)?,
                        Email::parse(&email).map_err(StorageError::internal)?,
                    ))
                })
                .transpose()
        })
        .await
    }

    async fn claim_mail(
        &self,
        kind: &str,
        address: &Email,
        at: OffsetDateTime,
        window: std::time::Duration,
    ) -> StorageResult<bool> {
        let (kind, address) = (kind.to_owned(), address.as_str().to_owned());
        let (at, since) = (unix_millis(at), unix_millis(at - window));
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            tx.execute("DELETE FROM mail_log WHERE sent_at <= ?1", [since])?;
            // Inserted, or updated past the window: a row changed, and the claim holds.
            let claimed = tx.execute(
                "INSERT INTO mail_log (kind, address, sent_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (kind, address) DO UPDATE SET sent_at = excluded.sent_at \
                 WHERE sent_at <= ?4",
                params![kind, address, at, since],
            )? == 1;
            tx.commit()?;
            Ok(claimed)
        })
        .await
    }
}
