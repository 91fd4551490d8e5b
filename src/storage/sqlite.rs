//! The embedded backend: one SQLite file, so the service runs with nothing else installed.

use std::{
    cell::Cell,
    collections::HashSet,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    rc::Rc,
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use rusqlite::{
    Connection, ErrorCode, OptionalExtension, Row, ToSql, Transaction, TransactionBehavior,
    backup::Backup,
    functions::{Aggregate, Context, FunctionFlags},
    params,
    types::Value,
    vtab::array::{self, Array},
};
use time::OffsetDateTime;

use super::{
    Claim, Imported, LoginAttempts, OneTimeTokenRecord, RefreshTokenRecord, RefreshTokenUse,
    Repository, StorageError, StorageResult, StoredAnswer, StoredAttempts, TotpState, UniqueField,
    VerificationTokenRecord, role_from_stored, stored_role,
};
use crate::{
    domain::{
        AuditEvent, AuditFilter, AuditQuery, DisplayName, Email, EventDetails, EventId, EventKind,
        ListQuery, Origin, Page, Role, Secret, Session, SessionId, SortField, SortKey, SortOrder,
        User, UserField, UserFilter, UserId, UserPatch, Username, unix_millis,
    },
    telemetry::spawn_blocking_with_tracing,
};

/// Schema migrations, applied in order; `PRAGMA user_version` records how many have run.
/// Fills the (empty) search index from `users`: in its migration, and when it is rebuilt.
macro_rules! fill_search_index {
    () => {
        "INSERT INTO users_search (rowid, name, email, username) \
         SELECT rowid, unicode_lower(name), email, unicode_lower(username) FROM users;"
    };
}

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
    // Sessions (refresh-token families with where and when), TOTP and the audit log.
    r#"
CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    ip           TEXT,
    user_agent   TEXT,
    ended_at     INTEGER
) STRICT;
CREATE INDEX sessions_user ON sessions (user_id, created_at DESC);
CREATE INDEX sessions_expires ON sessions (expires_at);
INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ended_at)
    SELECT f.family_id, f.user_id, coalesce(min(t.created_at), 0),
        coalesce(max(t.created_at), 0), f.expires_at,
        CASE WHEN f.ended = 1 THEN coalesce(max(t.created_at), 0) END
    FROM refresh_families f LEFT JOIN refresh_tokens t USING (family_id)
    GROUP BY f.family_id;
DROP TABLE refresh_families;
DROP INDEX refresh_tokens_family;
ALTER TABLE refresh_tokens RENAME COLUMN family_id TO session_id;
CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

ALTER TABLE users ADD COLUMN mfa_enabled INTEGER NOT NULL DEFAULT 0 CHECK (mfa_enabled IN (0, 1));
ALTER TABLE users ADD COLUMN totp_secret TEXT;
ALTER TABLE users ADD COLUMN totp_pending TEXT;
ALTER TABLE users ADD COLUMN totp_last_step INTEGER;
CREATE TABLE recovery_codes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    PRIMARY KEY (user_id, code_hash)
) STRICT, WITHOUT ROWID;
CREATE TABLE mfa_challenges (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    used_at    INTEGER
) STRICT;
CREATE INDEX mfa_challenges_user ON mfa_challenges (user_id);
CREATE INDEX mfa_challenges_expires ON mfa_challenges (expires_at);

-- No foreign keys: the history outlives the users it names.
CREATE TABLE audit_events (
    id         TEXT PRIMARY KEY,
    at         INTEGER NOT NULL,
    type       TEXT NOT NULL,
    actor_id   TEXT,
    subject_id TEXT,
    ip         TEXT,
    user_agent TEXT,
    details    TEXT NOT NULL
) STRICT;
CREATE INDEX audit_events_at ON audit_events (at DESC, id DESC);
CREATE INDEX audit_events_actor ON audit_events (actor_id, at DESC, id DESC);
CREATE INDEX audit_events_subject ON audit_events (subject_id, at DESC, id DESC);
CREATE INDEX audit_events_type ON audit_events (type, at DESC, id DESC);
"#,
    // Listing at scale: an index per sort (also under the role and active filters), user
    // counts kept by triggers so that `total` costs no scan, and a trigram index for `q`.
    r#"
CREATE INDEX users_name ON users (name, id);
CREATE INDEX users_email ON users (email, id);
CREATE INDEX users_role_active_created_at ON users (role, active, created_at, id);
CREATE INDEX users_role_active_name ON users (role, active, name, id);
CREATE INDEX users_role_active_email ON users (role, active, email, id);
CREATE INDEX users_active_created_at ON users (active, created_at, id);
CREATE INDEX users_active_name ON users (active, name, id);
CREATE INDEX users_active_email ON users (active, email, id);
CREATE TABLE user_counts (
    role   TEXT NOT NULL,
    active INTEGER NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (role, active)
) STRICT, WITHOUT ROWID;
INSERT INTO user_counts (role, active, n)
    SELECT r.role, a.active, (SELECT count(*) FROM users u WHERE u.role = r.role AND u.active = a.active)
    FROM (SELECT 'user' AS role UNION ALL SELECT 'admin') r,
         (SELECT 0 AS active UNION ALL SELECT 1) a;
CREATE TRIGGER users_counted AFTER INSERT ON users BEGIN
    UPDATE user_counts SET n = n + 1 WHERE role = new.role AND active = new.active;
END;
CREATE TRIGGER users_uncounted AFTER DELETE ON users BEGIN
    UPDATE user_counts SET n = n - 1 WHERE role = old.role AND active = old.active;
END;
CREATE TRIGGER users_recounted AFTER UPDATE OF role, active ON users
    WHEN old.role IS NOT new.role OR old.active IS NOT new.active BEGIN
    UPDATE user_counts SET n = n - 1 WHERE role = old.role AND active = old.active;
    UPDATE user_counts SET n = n + 1 WHERE role = new.role AND active = new.active;
END;
-- External content: the index reads name, email and username from `users` by rowid.
CREATE VIRTUAL TABLE users_search USING fts5 (
    name, email, username, content = 'users', content_rowid = 'rowid', tokenize = 'trigram'
);
INSERT INTO users_search (users_search) VALUES ('rebuild');
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, name, email, username)
        VALUES (new.rowid, new.name, new.email, new.username);
END;
CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    INSERT INTO users_search (users_search, rowid, name, email, username)
        VALUES ('delete', old.rowid, old.name, old.email, old.username);
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF name, email, username ON users BEGIN
    INSERT INTO users_search (users_search, rowid, name, email, username)
        VALUES ('delete', old.rowid, old.name, old.email, old.username);
    INSERT INTO users_search (rowid, name, email, username)
        VALUES (new.rowid, new.name, new.email, new.username);
END;
"#,
    // Idempotency keys of POST /api/auth/register and POST /api/users: a claim in flight
    // (`status` NULL) or the answer to replay. Expired rows are swept at each claim.
    r#"
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    status      INTEGER,
    body        TEXT,
    location    TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX idempotency_keys_expires_at ON idempotency_keys (expires_at);
"#,
    // The search index holds each user's text lower-cased by `unicode_lower`, the rule `q`
    // is judged by, and folds nothing itself: a phrase match is then exactly "contains q in
    // any case", with no row to fetch and check. Contentless (the text is in `users`), with
    // deletes by rowid.
    concat!(
        r#"
DROP TRIGGER users_search_insert;
DROP TRIGGER users_search_delete;
DROP TRIGGER users_search_update;
DROP TABLE users_search;
CREATE VIRTUAL TABLE users_search USING fts5 (
    name, email, username, content = '', contentless_delete = 1,
    tokenize = 'trigram case_sensitive 1'
);
"#,
        fill_search_index!(),
        r#"
CREATE TRIGGER users_search_insert AFTER INSERT ON users BEGIN
    INSERT INTO users_search (rowid, name, email, username)
        VALUES (new.rowid, unicode_lower(new.name), new.email, unicode_lower(new.username));
END;
CREATE TRIGGER users_search_delete AFTER DELETE ON users BEGIN
    DELETE FROM users_search WHERE rowid = old.rowid;
END;
CREATE TRIGGER users_search_update AFTER UPDATE OF name, email, username ON users BEGIN
    DELETE FROM users_search WHERE rowid = old.rowid;
    INSERT INTO users_search (rowid, name, email, username)
        VALUES (new.rowid, unicode_lower(new.name), new.email, unicode_lower(new.username));
END;
"#
    ),
    // A filter on active alone merges the (role, active, key) indexes of each role: the
    // (active, key) ones cost a fifth of the speed of every import and create.
    r#"
DROP INDEX users_active_created_at;
DROP INDEX users_active_name;
DROP INDEX users_active_email;
"#,
    // A replayed answer carries its user's version too.
    "ALTER TABLE idempotency_keys ADD COLUMN etag TEXT;",
    // Expired reset tokens are swept at each login, as sessions are.
    "CREATE INDEX reset_tokens_expires ON reset_tokens (expires_at);",
];

const USER_COLUMNS: &str = "id, name, username, email, role, active, password_hash, \
     created_at, updated_at, last_login_at, password_changed_at, locked_until, email_verified, \
     mfa_enabled";

/// How often a call that met `SQLITE_BUSY` (another process held the write lock for longer
/// than the busy timeout) is tried again before the database counts as unavailable.
const BUSY_RETRIES: u32 = 3;

/// One writing connection behind a mutex (SQLite serialises writers anyway), and a few
/// reading ones: in WAL mode readers do not wait for each other or for the writer, so the
/// hot reads (the user behind a token, lists) never queue behind one lock. Several processes
/// may share the file: every write transaction starts with `BEGIN IMMEDIATE`, so that it
/// waits for the write lock (up to the busy timeout) instead of failing when it would
/// upgrade a read lock. Writes run on the blocking pool, reads on threads of their own.
#[derive(Clone)]
pub struct SqliteRepository {
    writer: Arc<Mutex<Connection>>,
    readers: Arc<Readers>,
}

/// A read for whichever reader thread is free first.
type ReadJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// The reader threads and the queue they take reads from.
struct Readers {
    /// `None` once dropped, which ends the threads.
    queue: Option<crossbeam_channel::Sender<ReadJob>>,
    /// Each gives its connection back when it ends, to be closed by [`Readers::drop`].
    threads: Vec<std::thread::JoinHandle<Connection>>,
}

/// Starts one thread per reading connection. Each takes reads from one queue shared by all:
/// a lock-free channel whose idle receivers spin briefly before they sleep, so under load a
/// read reaches a reader without waking a thread, and no lock is taken on the way.
fn start_readers(connections: Vec<Connection>) -> anyhow::Result<Readers> {
    let (sender, receiver) = crossbeam_channel::unbounded::<ReadJob>();
    let threads = connections
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("sqlite-reader-{i}"))
                .spawn(move || {
                    for job in receiver {
                        // A panicking read loses its own answer (its caller sees an internal
                        // error), not the thread; rusqlite has rolled back whatever it began.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn)));
                    }
                    conn
                })
        })
        .collect::<std::io::Result<_>>()?;
    Ok(Readers {
        queue: Some(sender),
        threads,
    })
}

/// With the last clone of the repository, the readers finish the reads they have, and their
/// connections are closed before this returns, so that every connection is closed before
/// the process exits, and the last to close copies the write-ahead log into the file and
/// removes it. A command that ends (an import) used to exit with them open, and leave its
/// log beside the file, hundreds of MB after an import, for the next process to copy on its
/// first write. They are closed here one after another: closed at once on their own
/// threads, each could still see another open, and none would remove the log.
impl Drop for Readers {
    fn drop(&mut self) {
        self.queue = None;
        for thread in self.threads.drain(..) {
            drop(thread.join());
        }
    }
}

/// A panic while holding a connection cannot leave a half-done transaction behind (rusqlite
/// rolls back on drop), so a poisoned lock is still safe to use.
fn lock(connection: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    connection
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
}

impl SqliteRepository {
    /// Opens (creating the file and its directory if needed) and migrates the database.
    pub async fn open(path: impl AsRef<Path>) -> anyhow::Result<Self> {
        let path = path.as_ref().to_owned();
        let (writer, readers) = spawn_blocking_with_tracing(
            move || -> anyhow::Result<(Connection, Vec<Connection>)> {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
                }
                let open = || {
                    let conn = Connection::open(&path)
                        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
                    configure(&conn)?;
                    anyhow::Ok(conn)
                };
                let mut writer = open()?;
                migrate(&mut writer)?;
                // Fresh statistics where they are missing or stale, so that the planner picks
                // the right index for filtered lists; the analysis limit keeps this to moments
                // on a large database that has no statistics yet (after an import).
                writer.execute_batch("PRAGMA analysis_limit = 1000; PRAGMA optimize = 0x10002")?;
                let readers = (0..reader_count())
                    .map(|_| {
                        let reader = open()?;
                        reader.pragma_update(None, "query_only", true)?;
                        reader.pragma_update(None, "mmap_size", READER_MMAP_BYTES)?;
                        Ok(reader)
                    })
                    .collect::<anyhow::Result<_>>()?;
                Ok((writer, readers))
            },
        )
        .await??;
        Ok(Self {
            writer: Arc::new(Mutex::new(writer)),
            readers: Arc::new(start_readers(readers)?),
        })
    }

    /// Builds the search index anew from `users`, which a manual `VACUUM` calls for: the
    /// index follows users by rowid, and `VACUUM` may renumber rowids. How many users it holds.
    ///
    /// The index ends as one segment: written in many (a large fill, or an import's batches),
    /// every search merges them as it reads (`q=mario` over a million users took about a
    /// tenth more time in the twelve an import left).
    pub async fn rebuild_search_index(&self) -> StorageResult<u64> {
        self.call(|conn| {
            let tx = write_transaction(conn)?;
            tx.execute("DELETE FROM users_search", [])?;
            let indexed = tx.execute(fill_search_index!(), [])?;
            tx.execute(
                "INSERT INTO users_search (users_search) VALUES ('optimize')",
                [],
            )?;
            tx.commit()?;
            Ok(indexed as u64)
        })
        .await
    }

    /// Copies the whole database into a new file at `to`, as it is at one moment, while
    /// others go on reading and writing: SQLite's online backup, in one step (so under one
    /// read transaction, which in WAL mode holds up no writer), page for page (so the search
    /// index's rowids stay as they are). Refuses a `to` that exists.
    pub async fn back_up(&self, to: PathBuf) -> StorageResult<()> {
        self.read(move |conn| {
            if to.exists() {
                return Err(StorageError::internal(anyhow::anyhow!(
                    "{} exists already; a backup goes to a new file",
                    to.display()
                )));
            }
            let copied = Connection::open(&to).and_then(|mut copy| {
                Backup::new(conn, &mut copy)?.run_to_completion(
                    std::ffi::c_int::MAX,
                    std::time::Duration::from_millis(50),
                    None,
                )
            });
            if copied.is_err() {
                // No half copy left to be taken for a backup.
                let _ = std::fs::remove_file(&to);
            }
            Ok(copied?)
        })
        .await
    }

    /// Runs `f` with the writing connection on the blocking pool.
    async fn call<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let writer = Arc::clone(&self.writer);
        spawn_blocking_with_tracing(move || with_retries(&mut lock(&writer), f))
            .await
            .map_err(StorageError::internal)?
    }

    /// Runs one conditional write: whether it changed a row, i.e. whether its condition held.
    async fn changed(&self, sql: &'static str, values: Vec<Value>) -> StorageResult<bool> {
        self.call(move |conn| {
            Ok(conn
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(values.iter()))?
                > 0)
        })
        .await
    }

    /// Runs `f`, which only reads, on a reader thread, in the caller's span.
    async fn read<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnMut(&mut Connection) -> Result<T, StorageError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let span = tracing::Span::current();
        self.readers
            .queue
            .as_ref()
            .expect("the queue lives as long as the repository")
            .send(Box::new(move |conn| {
                // A caller gone (its request dropped, as at shutdown) needs no answer.
                if answer.is_closed() {
                    return;
                }
                let _ = answer.send(span.in_scope(|| with_retries(conn, f)));
            }))
            .map_err(|_| StorageError::internal(anyhow::anyhow!("the reader threads are gone")))?;
        answered
            .await
            .map_err(|_| StorageError::internal(anyhow::anyhow!("a read panicked")))?
    }
}

/// How much of the database file a reader maps into memory. Pages read through the map
/// are the kernel's page cache itself: no copy into a cache of the connection's own, no
/// allocation (whose global lock would serialise parallel readers), no system call.
const READER_MMAP_BYTES: i64 = 1 << 32;

/// What the write-ahead log keeps of its size once copied into the file.
const WAL_SIZE_LIMIT_BYTES: i64 = 64 << 20;

/// Enough readers that one waiting for the disk does not hold up the rest.
fn reader_count() -> usize {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 16)
        * 2
}

/// Runs `f`, again after a short random pause when another process kept the database busy.
fn with_retries<T>(
    conn: &mut Connection,
    mut f: impl FnMut(&mut Connection) -> Result<T, StorageError>,
) -> Result<T, StorageError> {
    let mut attempt = 0;
    loop {
        match f(conn) {
            Err(e) if is_busy(&e) && attempt < BUSY_RETRIES => {
                attempt += 1;
                let pause = rand::random_range(10..50 * u64::from(attempt));
                std::thread::sleep(std::time::Duration::from_millis(pause));
            }
            result => return result,
        }
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // `rarray(?)`: a list of rowids bound as one parameter (a search's matches).
    array::load_module(conn)?;
    // SQLite's own lower() folds ASCII only; the `q` filter must ignore case in any script,
    // as MongoDB's case-insensitive regex does.
    conn.create_scalar_function(
        "unicode_lower",
        1,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| Ok(ctx.get::<Option<String>>(0)?.map(|s| s.to_lowercase())),
    )?;
    // `matched(rowid, ?bits, ?first)`: whether a row is among a search's matches, given as
    // their bitmap. A count of them along an index then runs inside SQLite, in three fifths
    // of the time of stepping through every row it passes from Rust.
    conn.create_scalar_function(
        "matched",
        3,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let bits = ctx
                .get_raw(1)
                .as_blob()
                .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))?;
            Ok(in_bitmap(bits, ctx.get(2)?, ctx.get(0)?))
        },
    )?;
    conn.create_aggregate_function(
        "gather_matches",
        1,
        FunctionFlags::SQLITE_UTF8,
        GatherMatches,
    )?;
    use_wal(conn)?;
    // A log that grew large (an import beside a running service lets it reach 400 MiB
    // before copying it) is cut back to this once copied, instead of keeping its largest
    // size on disk until every connection to the file has closed.
    conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT_BYTES)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
}

/// Turns the file to WAL, so that readers never wait for the writer; once set it stays with
/// the file. Turning a new file needs it alone for a moment, and SQLite answers that with
/// SQLITE_BUSY at once, without its busy handler, while another process opens the same new
/// file (a server and `create-admin` beside it): asked again for up to five seconds.
fn use_wal(conn: &Connection) -> rusqlite::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let mode = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        let again = started.elapsed() < std::time::Duration::from_secs(5);
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == ErrorCode::DatabaseBusy && again => {}
            // Refused without an error: the file kept its old mode.
            Ok(_) if again => {}
            Ok(mode) => {
                return Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                    Some(format!("the file stayed in journal mode {mode}, not WAL")),
                ));
            }
            Err(e) => return Err(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(rand::random_range(10..50)));
    }
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

/// What a refresh token is now, read without changing it: [`RefreshTokenUse::Live`] for one
/// that may be used.
fn refresh_token_state(conn: &Connection, token_hash: &str) -> StorageResult<RefreshTokenUse> {
    let found = conn
        .query_row(
            "SELECT t.session_id, t.user_id, t.created_at, t.expires_at, \
             t.spent_at IS NOT NULL, s.id IS NULL OR s.ended_at IS NOT NULL \
             FROM refresh_tokens t LEFT JOIN sessions s ON s.id = t.session_id \
             WHERE t.token_hash = ?1",
            [token_hash],
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
    let Some((session_id, user_id, created_at, expires_at, spent, ended)) = found else {
        return Ok(RefreshTokenUse::Unknown);
    };
    let session_id = SessionId::parse(&session_id).map_err(StorageError::internal)?;
    let user_id = UserId::parse(&user_id).map_err(StorageError::internal)?;
    Ok(if ended {
        RefreshTokenUse::Revoked
    } else if spent {
        RefreshTokenUse::Replayed {
            session_id,
            user_id,
        }
    } else {
        RefreshTokenUse::Live(RefreshTokenRecord {
            token_hash: token_hash.to_owned(),
            session_id,
            user_id,
            created_at: from_millis(created_at)?,
            expires_at: from_millis(expires_at)?,
        })
    })
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
                // Every foreign key names a user.
                ErrorCode::ConstraintViolation
                    if failure.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY =>
                {
                    return StorageError::UserGone;
                }
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
        mfa_enabled: row.get(13)?,
        password_changed_at: from_millis(row.get(10)?)?,
    })
}

/// The user a unique key names, by its indexed expression: `?1` is the value looked up.
const BY_ID: &str = "id = lower(?1)";
const BY_EMAIL: &str = "lower(email) = lower(?1)";
/// The index of usernames is partial (users without one are not in it), and SQLite uses a
/// partial index only for a query that implies its condition: it cannot infer it from
/// `lower(username) = …`, and would read every user.
const BY_USERNAME: &str = "lower(username) = lower(?1) AND username IS NOT NULL";

fn select_user(conn: &Connection, key: &str, value: &str) -> StorageResult<Option<User>> {
    let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {key}");
    Ok(conn
        .prepare_cached(&sql)?
        .query_row([value], user_from_row)
        .optional()?)
}

fn insert_user(conn: &Connection, user: &User) -> StorageResult<()> {
    conn.prepare_cached(&format!(
        "INSERT INTO users ({USER_COLUMNS}) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
    ))?
    .execute(rusqlite::params_from_iter(user_params(user)))?;
    Ok(())
}

/// What became of each user of an import batch, as if they had been inserted one by one:
/// created; already there (by id or email, before the batch or from an earlier line of it);
/// or refused for a username someone else has.
fn import_outcomes(users: &[User], existed: &[bool], created: &HashSet<usize>) -> Vec<Imported> {
    let mut ids = HashSet::new();
    let mut emails = HashSet::new();
    users
        .iter()
        .zip(existed)
        .enumerate()
        .map(|(line, (user, &existed))| {
            if created.contains(&line) {
                ids.insert(user.id);
                emails.insert(user.email.as_str());
                Imported::Created
            } else if existed || ids.contains(&user.id) || emails.contains(user.email.as_str()) {
                Imported::Exists
            } else {
                Imported::UsernameTaken
            }
        })
        .collect()
}

/// The values of [`USER_COLUMNS`], in order.
fn user_params(user: &User) -> [Value; 14] {
    let millis = |t| Value::Integer(unix_millis(t));
    let text = |s: &str| Value::Text(s.to_owned());
    [
        text(&user.id.to_hex()),
        text(user.name.as_str()),
        user.username
            .as_ref()
            .map_or(Value::Null, |u| text(u.as_str())),
        text(user.email.as_str()),
        text(stored_role(user.role)),
        Value::Integer(i64::from(user.active)),
        text(&user.password_hash),
        millis(user.created_at),
        millis(user.updated_at),
        user.last_login_at.map_or(Value::Null, millis),
        millis(user.password_changed_at),
        user.locked_until.map_or(Value::Null, millis),
        Value::Integer(i64::from(user.email_verified)),
        Value::Integer(i64::from(user.mfa_enabled)),
    ]
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

/// The page cache of a connection that imports, in KiB.
const IMPORT_CACHE_KIB: i64 = 256 * 1024;

/// Pages the write-ahead log of an importing connection grows to before it is copied into
/// the database (400 MiB; the default is 1,000 pages). Each batch rewrites the same index
/// pages: copied once per many batches rather than after every one, that costs a fifth
/// less time. The last connection to close copies the rest and removes the log.
const IMPORT_CHECKPOINT_PAGES: i64 = 100_000;

/// Trigrams: the search index finds only terms of three characters or more.
const MIN_INDEXED_SEARCH: usize = 3;

/// The search index's query for `q` (lower-cased already), when the index can answer it:
/// the whole of `q` as one phrase, so that its trigrams must follow each other in one
/// field. Shorter searches have no trigram and scan.
fn search_phrase(q: &str) -> Option<String> {
    (q.chars().count() >= MIN_INDEXED_SEARCH).then(|| format!("\"{}\"", q.replace('"', "\"\"")))
}

/// The WHERE clause and its parameters for a filter whose `q`, if it has one, is too short
/// for the search index (searches the index answers are listed from their matches): such a
/// `q` is looked for in every row.
fn where_clause(filter: &UserFilter) -> (String, Vec<Value>) {
    debug_assert!(
        indexed_search(filter).is_none(),
        "an indexed search scanned"
    );
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
    conditions.extend(role_and_state(filter, &mut values));
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), values)
    }
}

/// The conditions a filter puts on role and state, their values pushed onto `values`.
fn role_and_state(filter: &UserFilter, values: &mut Vec<Value>) -> Vec<String> {
    let mut conditions = Vec::new();
    if let Some(role) = filter.role {
        values.push(Value::Text(stored_role(role).to_owned()));
        conditions.push(format!("role = ?{}", values.len()));
    }
    if let Some(active) = filter.active {
        values.push(Value::Integer(i64::from(active)));
        conditions.push(format!("active = ?{}", values.len()));
    }
    conditions
}

/// How many users match: from the counts the triggers keep, unless `q` is given.
fn count(conn: &Connection, filter: &UserFilter) -> StorageResult<u64> {
    let (clause, values) = where_clause(filter);
    // Without `q` the clause names only role and active, which `user_counts` has too.
    let sql = if filter.q.is_some() {
        format!("SELECT count(*) FROM users {clause}")
    } else {
        format!("SELECT coalesce(sum(n), 0) FROM user_counts {clause}")
    };
    let n: i64 = conn
        .prepare_cached(&sql)?
        .query_row(rusqlite::params_from_iter(values), |r| r.get(0))?;
    Ok(n as u64)
}

/// The index's phrase for the filter's `q`, when the index can answer it.
fn indexed_search(filter: &UserFilter) -> Option<String> {
    filter
        .q
        .as_deref()
        .and_then(|q| search_phrase(&q.to_lowercase()))
}

/// The rows a phrase matches, straight from the index: gathered inside SQLite by
/// [`GatherMatches`], which at a million matches takes a sixth less time than stepping each
/// rowid out to Rust. Its finalizer runs on every query that succeeds, matches or none, so
/// what is taken after it is this query's.
fn matching_rowids(conn: &Connection, phrase: &str) -> StorageResult<Matches> {
    conn.prepare_cached(
        "SELECT gather_matches(rowid) FROM users_search WHERE users_search MATCH ?1",
    )?
    .query_row([phrase], |row| row.get::<_, i64>(0))?;
    GATHERED
        .take()
        .ok_or_else(|| StorageError::Internal(anyhow::anyhow!("a search gathered no matches")))
}

thread_local! {
    /// What `gather_matches` gathered last on this thread, for [`matching_rowids`] to take:
    /// an aggregate can only hand SQL values back, and it runs on the thread that steps its
    /// statement.
    static GATHERED: Cell<Option<Matches>> = const { Cell::new(None) };
}

/// `gather_matches(rowid)`: the rowids of a query on the search index, as [`Matches`], left
/// in [`GATHERED`]; the query's value is how many. The index yields its rows in ascending
/// rowid order (it walks its lists of rowids merged), which `Matches` needs: a row out of
/// that order fails the query rather than be counted wrong.
struct GatherMatches;

impl Aggregate<Matches, i64> for GatherMatches {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<Matches> {
        Ok(Matches::default())
    }

    fn step(&self, ctx: &mut Context<'_>, matches: &mut Matches) -> rusqlite::Result<()> {
        matches
            .push(ctx.get(0)?)
            .map_err(|e| rusqlite::Error::UserFunctionError(e.into()))
    }

    fn finalize(&self, _: &mut Context<'_>, matches: Option<Matches>) -> rusqlite::Result<i64> {
        let mut matches = matches.unwrap_or_default();
        matches.finish();
        let len = matches.len() as i64;
        GATHERED.set(Some(matches));
        Ok(len)
    }
}

/// The rowids a search matched: as a list while that is smaller than a bitmap of their span,
/// and as a bitmap for the walks that test every row they pass (tens of thousands of tests
/// for one page or total, where a binary search each took a sixth of the time). A search
/// most users match keeps the bitmap alone: a million rowids are 8 MiB, their bitmap
/// 125 KiB.
#[derive(Default)]
struct Matches {
    /// In ascending order; `None` once the bitmap holds them in less room.
    list: Option<Vec<i64>>,
    /// Bit `r - first` is set for each matched rowid `r` (see [`in_bitmap`]); `None` while
    /// the list is smaller, or when the rowids are too sparse for a bitmap to pay (a few
    /// matches far apart): then a binary search of the list. Bytes rather than words, so
    /// that SQL can be given it as it is (`matched`).
    bits: Option<Vec<u8>>,
    first: i64,
    last: i64,
    len: usize,
}

impl Matches {
    /// Words of bitmap (8 bytes) allowed per match beyond a fixed allowance: one million
    /// users with one match in a hundred need about 1.6 per match.
    const WORDS_PER_MATCH: usize = 4;
    const WORDS_ALWAYS: usize = 1024;

    /// `rowids` in ascending order.
    #[cfg(test)]
    fn new(rowids: Vec<i64>) -> Self {
        let mut matches = Self::default();
        for rowid in rowids {
            matches.push(rowid).expect("rowids in ascending order");
        }
        matches.finish();
        matches
    }

    /// The words of a bitmap from the first rowid to `last`.
    fn words_to(&self, last: i64) -> usize {
        usize::try_from(i128::from(last) - i128::from(self.first) + 1)
            .map_or(usize::MAX, |span| span.div_ceil(64))
    }

    /// The bitmap and the rowid of its first bit, where there is one.
    fn bitmap(&self) -> Option<(&[u8], i64)> {
        self.bits.as_deref().map(|bits| (bits, self.first))
    }

    /// Whether a bitmap of `words` pays for the matches so far.
    fn bitmap_pays(&self, words: usize) -> bool {
        words <= Self::WORDS_ALWAYS + self.len * Self::WORDS_PER_MATCH
    }

    /// Adds the next rowid, which must be greater than every one before.
    fn push(&mut self, rowid: i64) -> Result<(), &'static str> {
        if self.len == 0 {
            self.first = rowid;
        } else if rowid <= self.last {
            return Err("search matches out of rowid order");
        }
        self.last = rowid;
        self.len += 1;
        let words = self.words_to(rowid);
        if self.list.is_none() && self.bits.is_some() {
            if self.bitmap_pays(words) {
                let first = self.first;
                let bits = self.bits.as_mut().expect("a bitmap");
                bits.resize(words * 8, 0);
                set_bit(bits, first, rowid);
                return Ok(());
            }
            // A far match after a dense run: back to a list.
            self.list = Some(self.rowids().collect());
            self.bits = None;
        }
        let list = self.list.get_or_insert_with(Vec::new);
        list.push(rowid);
        // A bitmap smaller than the list takes its place.
        if words < list.len() {
            self.bits = Some(bitmap(list, self.first, words));
            self.list = None;
        }
        Ok(())
    }

    /// After the last rowid: a bitmap beside the list too, where one pays.
    fn finish(&mut self) {
        if self.bits.is_some() {
            return;
        }
        let list = self.list.take().unwrap_or_default();
        let words = list.last().map_or(0, |&last| self.words_to(last));
        if self.bitmap_pays(words) {
            self.bits = Some(bitmap(&list, self.first, words));
        }
        self.list = Some(list);
    }

    fn contains(&self, rowid: i64) -> bool {
        match (self.bitmap(), &self.list) {
            (Some((bits, first)), _) => in_bitmap(bits, first, rowid),
            (None, Some(list)) => list.binary_search(&rowid).is_ok(),
            (None, None) => false,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The rowids in ascending order.
    fn rowids(&self) -> Box<dyn Iterator<Item = i64> + '_> {
        match (&self.list, &self.bits) {
            (Some(list), _) => Box::new(list.iter().copied()),
            (None, Some(bits)) => Box::new(bits.iter().enumerate().flat_map(move |(at, &byte)| {
                let base = self.first.wrapping_add((at * 8) as i64);
                let mut rest = byte;
                std::iter::from_fn(move || {
                    (rest != 0).then(|| {
                        let bit = rest.trailing_zeros();
                        rest &= rest - 1;
                        base.wrapping_add(i64::from(bit))
                    })
                })
            })),
            (None, None) => Box::new(std::iter::empty()),
        }
    }

    /// The rowids as one parameter, for `rarray`.
    fn array(&self) -> Array {
        Rc::new(self.rowids().map(Value::Integer).collect())
    }
}

/// Sets the bit of `rowid` in a bitmap that starts at `first`.
fn set_bit(bits: &mut [u8], first: i64, rowid: i64) {
    let bit = (rowid - first) as usize;
    bits[bit / 8] |= 1 << (bit % 8);
}

/// Whether the bit of `rowid` is set in a bitmap that starts at `first`: the one test of a
/// search's matches, in Rust and in SQL (`matched`).
fn in_bitmap(bits: &[u8], first: i64, rowid: i64) -> bool {
    usize::try_from(rowid.wrapping_sub(first))
        .ok()
        .and_then(|bit| bits.get(bit / 8).map(|byte| (byte >> (bit % 8)) & 1 == 1))
        .unwrap_or(false)
}

/// A bitmap of `words` from `first` with the bits of `rowids` set.
fn bitmap(rowids: &[i64], first: i64, words: usize) -> Vec<u8> {
    let mut bits = vec![0u8; words * 8];
    for &rowid in rowids {
        set_bit(&mut bits, first, rowid);
    }
    bits
}

/// The column a sort orders by, after which `id` breaks ties.
fn sort_column(sort: SortField) -> &'static str {
    match sort {
        SortField::CreatedAt => "created_at",
        SortField::Name => "name",
        SortField::Email => "email",
    }
}

/// The sort column and direction of a list, and the condition that starts it after its
/// cursor, if it has one (its two values pushed onto `values`).
fn order_and_keyset(
    query: &ListQuery,
    values: &mut Vec<Value>,
) -> (&'static str, &'static str, Option<String>) {
    let column = sort_column(query.sort);
    let (direction, beyond) = match query.order {
        SortOrder::Ascending => ("ASC", ">"),
        SortOrder::Descending => ("DESC", "<"),
    };
    let keyset = query.after.as_ref().map(|after| {
        values.push(match &after.key {
            SortKey::CreatedAt(at) => Value::Integer(unix_millis(*at)),
            SortKey::Text(text) => Value::Text(text.clone()),
        });
        values.push(Value::Text(after.id.to_hex()));
        let n = values.len();
        // A row value comparison, which SQLite walks the (key, id) index for.
        format!("({column}, id) {beyond} (?{}, ?{n})", n - 1)
    });
    (column, direction, keyset)
}

/// The statement that reads `columns` of the users `filter` keeps, in the order of `query`
/// from its cursor, and its parameters. `filter` has no search the index answers: no `q`,
/// or one too short for it.
fn walk_statement(query: &ListQuery, filter: &UserFilter, columns: &str) -> (String, Vec<Value>) {
    let (clause, mut values) = where_clause(filter);
    let (column, direction, keyset) = order_and_keyset(query, &mut values);
    let conditions = match keyset {
        None => clause,
        Some(keyset) if clause.is_empty() => format!("WHERE {keyset}"),
        Some(keyset) => format!("{clause} AND {keyset}"),
    };
    // The (role, active, key) indexes hold each pair of the two in order: a filter on one of
    // them (so `conditions` is not empty) is a merge of one walk per value of the other,
    // rather than all its users sorted.
    let arms: Vec<String> = match (filter.role, filter.active) {
        (Some(_), None) => vec![" AND active = 0".to_owned(), " AND active = 1".to_owned()],
        (None, Some(_)) => Role::ALL
            .iter()
            .map(|role| format!(" AND role = '{}'", stored_role(*role)))
            .collect(),
        _ => vec![String::new()],
    };
    let rows = arms
        .iter()
        .map(|arm| format!("SELECT {columns} FROM users {conditions}{arm}"))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let sql = format!("{rows} ORDER BY {column} {direction}, id {direction}");
    (sql, values)
}

/// The statement for a page of a list without a search the index answers, and its
/// parameters.
fn page_statement(query: &ListQuery) -> (String, Vec<Value>) {
    let (walk, mut values) = walk_statement(query, &query.filter, USER_COLUMNS);
    values.push(Value::Integer(i64::from(query.limit)));
    values.push(Value::Integer(query.offset as i64));
    let n = values.len();
    (format!("{walk} LIMIT ?{} OFFSET ?{n}", n - 1), values)
}

/// The page of a search the index answers, from its matches (in rowid order).
fn search_page(
    conn: &Connection,
    query: &ListQuery,
    matches: &Matches,
) -> StorageResult<Page<User>> {
    let total = search_total(conn, &query.filter, matches)?;
    let items = match walked_search_items(conn, query, matches)? {
        Some(items) => items,
        None => sorted_search_items(conn, query, matches)?,
    };
    Ok(Page { items, total })
}

/// About how many steps along an index cost what one lookup of a row by rowid does, below
/// their ratio (so leaning to lookups). At 1 M users, a step of the count of matches along
/// one role and state takes about 0.035 µs with its test, and a lookup of a match 0.4 to
/// 0.75 µs.
const WALK_STEPS_PER_LOOKUP: u64 = 8;

/// How a search's total under a role or state is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    /// Matches among the users the filter keeps.
    Kept,
    /// All matches but those among the users the filter leaves out.
    LeftOut,
    /// Each match looked up.
    Lookups,
}

/// The users of each role in each state, from the counts the triggers keep: those `filter`
/// keeps, then those it leaves out.
type Cells = Vec<(Role, bool, u64)>;

fn cells(conn: &Connection, filter: &UserFilter) -> StorageResult<(Cells, Cells)> {
    let counted: Vec<(String, bool, i64)> = conn
        .prepare_cached("SELECT role, active, n FROM user_counts")?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut kept = Vec::new();
    let mut left = Vec::new();
    for role in Role::ALL {
        for active in [false, true] {
            let n = counted
                .iter()
                .find(|(r, a, _)| r == stored_role(role) && *a == active)
                .map_or(0, |&(_, _, n)| u64::try_from(n).unwrap_or(0));
            if filter.keeps(role, active) {
                kept.push((role, active, n));
            } else {
                left.push((role, active, n));
            }
        }
    }
    Ok((kept, left))
}

/// The fewest steps of three for a total: walking the users the filter keeps, or those it
/// leaves out, when the shorter walk takes at most [`WALK_STEPS_PER_LOOKUP`] steps a match;
/// otherwise looking each match up.
fn tally(kept: &Cells, left: &Cells, matched: usize) -> Tally {
    let size = |cells: &Cells| cells.iter().map(|cell| cell.2).sum::<u64>();
    let (kept, left) = (size(kept), size(left));
    if kept.min(left) > (matched as u64).saturating_mul(WALK_STEPS_PER_LOOKUP) {
        Tally::Lookups
    } else if kept <= left {
        Tally::Kept
    } else {
        Tally::LeftOut
    }
}

/// How many of `matches` the filter's role and state keep: all of them without either,
/// otherwise by the [`tally`] of its cells.
fn search_total(conn: &Connection, filter: &UserFilter, matches: &Matches) -> StorageResult<u64> {
    if !filter.by_role_or_state() {
        return Ok(matches.len() as u64);
    }
    let (kept, left) = cells(conn, filter)?;
    Ok(match tally(&kept, &left, matches.len()) {
        Tally::Kept => matches_among(conn, &kept, matches)?,
        Tally::LeftOut => matches.len() as u64 - matches_among(conn, &left, matches)?,
        Tally::Lookups => {
            let mut values = Vec::new();
            let conditions = role_and_state(filter, &mut values).join(" AND ");
            let rowids = matches.array();
            let n: i64 = conn
                .prepare_cached(&format!(
                    "SELECT count(*) FROM users WHERE rowid IN rarray(?{}) AND {conditions}",
                    values.len() + 1
                ))?
                .query_row(
                    rusqlite::params_from_iter(with_matches(&values, &rowids)),
                    |r| r.get(0),
                )?;
            n as u64
        }
    })
}

/// How many of `matches` are users of these cells, from a walk of the role-and-state index
/// that reads no row.
fn matches_among(conn: &Connection, cells: &Cells, matches: &Matches) -> StorageResult<u64> {
    cells
        .iter()
        .map(|(role, active, _)| matches_in_cell(conn, stored_role(*role), *active, matches))
        .sum()
}

/// How many of `matches` are users of one role in one state: counted inside SQLite against
/// the matches' bitmap, or, for matches too sparse for one, each row of the walk looked for
/// in their list.
fn matches_in_cell(
    conn: &Connection,
    role: &str,
    active: bool,
    matches: &Matches,
) -> StorageResult<u64> {
    if let Some((bits, first)) = matches.bitmap() {
        let n: i64 = conn
            .prepare_cached(SEARCH_TOTAL_COUNT)?
            .query_row(params![role, active, bits, first], |r| r.get(0))?;
        return Ok(n as u64);
    }
    let mut walk = conn.prepare_cached(SEARCH_TOTAL_WALK)?;
    let mut rows = walk.query(params![role, active])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        n += u64::from(matches.contains(row.get(0)?));
    }
    Ok(n)
}

/// The matches among the users of one role in one state, for [`matches_in_cell`].
const SEARCH_TOTAL_COUNT: &str =
    "SELECT count(*) FROM users WHERE role = ?1 AND active = ?2 AND matched(rowid, ?3, ?4)";

/// The users of one role in one state, for [`matches_in_cell`].
const SEARCH_TOTAL_WALK: &str = "SELECT rowid FROM users WHERE role = ?1 AND active = ?2";

/// The parameters of a statement whose last one is `rowids`, after `values`.
fn with_matches<'a>(values: &'a [Value], rowids: &'a Array) -> Vec<&'a dyn ToSql> {
    values
        .iter()
        .map(|v| v as &dyn ToSql)
        .chain([rowids as &dyn ToSql])
        .collect()
}

/// The walk by which a search looks for its page: the list's order within the filter's role
/// and state, from the cursor, reading rowids.
fn search_walk_statement(query: &ListQuery) -> (String, Vec<Value>) {
    let role_and_state = UserFilter {
        q: None,
        ..query.filter.clone()
    };
    // The sort's columns too: a merge of walks orders by what it selects. Its index holds
    // them, so the walk reads no row.
    let columns = format!("rowid, {}, id", sort_column(query.sort));
    walk_statement(query, &role_and_state, &columns)
}

/// The users of a search's page, found by walking the list's order within the filter's
/// role and state from the cursor and keeping the rows in `matches`, when that takes at
/// most as many steps as there are matches: a broad search finds its page within a few
/// steps per row kept, and a narrow filter (admins) runs out of rows, where fetching and
/// sorting every match costs a lookup each. `None` when the walk gives up (a narrow search,
/// or matches that sit far along the order, as a name searched in the order of names):
/// then [`sorted_search_items`].
fn walked_search_items(
    conn: &Connection,
    query: &ListQuery,
    matches: &Matches,
) -> StorageResult<Option<Vec<User>>> {
    let wanted = usize::try_from(query.offset)
        .unwrap_or(usize::MAX)
        .saturating_add(query.limit as usize);
    let (sql, values) = search_walk_statement(query);
    let mut walk = conn.prepare_cached(&sql)?;
    let mut rows = walk.query(rusqlite::params_from_iter(values))?;
    let mut kept = Vec::new();
    let mut steps = 0;
    while kept.len() < wanted {
        let Some(row) = rows.next()? else { break };
        steps += 1;
        if steps > matches.len() {
            return Ok(None);
        }
        let rowid: i64 = row.get(0)?;
        if matches.contains(rowid) {
            kept.push(rowid);
        }
    }
    let mut fetch = conn.prepare_cached(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE rowid = ?1"
    ))?;
    let items = kept
        .iter()
        .skip(wanted - query.limit as usize)
        .map(|rowid| fetch.query_row([rowid], user_from_row))
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(items))
}

/// The users of a search's page, from fetching and sorting every row in `matches` that the
/// role and state of the filter keep.
fn sorted_search_items(
    conn: &Connection,
    query: &ListQuery,
    matches: &Matches,
) -> StorageResult<Vec<User>> {
    let rowids = matches.array();
    let mut values = Vec::new();
    let kept: String = role_and_state(&query.filter, &mut values)
        .iter()
        .map(|condition| format!(" AND {condition}"))
        .collect();
    let (column, direction, keyset) = order_and_keyset(query, &mut values);
    let keyset = keyset.map(|k| format!(" AND {k}")).unwrap_or_default();
    values.push(Value::Integer(i64::from(query.limit)));
    values.push(Value::Integer(query.offset as i64));
    let n = values.len();
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE rowid IN rarray(?{}){kept}{keyset} \
             ORDER BY {column} {direction}, id {direction} LIMIT ?{} OFFSET ?{n}",
            n + 1,
            n - 1
        ))?
        .query_map(
            rusqlite::params_from_iter(with_matches(&values, &rowids)),
            user_from_row,
        )?
        .collect::<rusqlite::Result<_>>()?)
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<Session> {
    let ip = row
        .get::<_, Option<String>>(5)?
        .map(|ip| ip.parse().map_err(conversion_error))
        .transpose()?;
    Ok(Session {
        id: SessionId::parse(&row.get::<_, String>(0)?).map_err(conversion_error)?,
        user_id: UserId::parse(&row.get::<_, String>(1)?).map_err(conversion_error)?,
        created_at: from_millis(row.get(2)?)?,
        last_used_at: from_millis(row.get(3)?)?,
        expires_at: from_millis(row.get(4)?)?,
        origin: Origin {
            ip,
            user_agent: row.get(6)?,
        },
    })
}

/// A TOTP time step as SQLite's signed integers hold it.
fn stored_step(step: u64) -> StorageResult<i64> {
    i64::try_from(step).map_err(StorageError::internal)
}

/// Stores a one-time token in `table` (`mfa_challenges` or `reset_tokens`, whose first four
/// columns are the same).
fn insert_one_time_token(
    conn: &Connection,
    table: &'static str,
    record: &OneTimeTokenRecord,
) -> StorageResult<()> {
    conn.execute(
        &format!(
            "INSERT INTO {table} (token_hash, user_id, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4)"
        ),
        params![
            record.token_hash,
            record.user_id.to_hex(),
            unix_millis(record.created_at),
            unix_millis(record.expires_at),
        ],
    )?;
    Ok(())
}

/// The attempts counted against `key`, if any.
fn stored_attempts(conn: &Connection, key: &str) -> StorageResult<Option<StoredAttempts>> {
    Ok(conn
        .prepare_cached("SELECT count, last_at, locked_until FROM login_attempts WHERE key = ?1")?
        .query_row([key], |row| {
            Ok(StoredAttempts {
                count: row.get(0)?,
                last_at: from_millis(row.get(1)?)?,
                locked_until: row.get::<_, Option<i64>>(2)?.map(from_millis).transpose()?,
            })
        })
        .optional()?)
}

/// Marks the user's unused reset tokens used at `at`; how many.
fn void_reset_tokens(conn: &Connection, user_id: &str, at: OffsetDateTime) -> StorageResult<usize> {
    Ok(conn.execute(
        "UPDATE reset_tokens SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
        params![user_id, unix_millis(at)],
    )?)
}

fn replace_codes(conn: &Connection, user_id: &str, hashes: &[String]) -> StorageResult<()> {
    conn.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [user_id])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO recovery_codes (user_id, code_hash) VALUES (?1, ?2)")?;
    for hash in hashes {
        insert.execute(params![user_id, hash])?;
    }
    Ok(())
}

/// The WHERE clause of an audit listing, and of its keyset position when given.
fn audit_where(
    filter: &AuditFilter,
    after: Option<(OffsetDateTime, EventId)>,
) -> (String, Vec<Value>) {
    let mut conditions = Vec::new();
    let mut values = Vec::new();
    let mut add = |condition: &str, value: Value| {
        values.push(value);
        conditions.push(condition.replace('?', &format!("?{}", values.len())));
    };
    if let Some(id) = filter.user_id {
        add("(actor_id = ? OR subject_id = ?)", Value::Text(id.to_hex()));
    }
    if let Some(id) = filter.subject_id {
        add("subject_id = ?", Value::Text(id.to_hex()));
    }
    if let Some(kind) = filter.kind {
        add("type = ?", Value::Text(kind.as_str().to_owned()));
    }
    if let Some(since) = filter.since {
        add("at >= ?", Value::Integer(unix_millis(since)));
    }
    if let Some(until) = filter.until {
        add("at < ?", Value::Integer(unix_millis(until)));
    }
    if let Some((at, id)) = after {
        values.push(Value::Integer(unix_millis(at)));
        values.push(Value::Text(id.to_string()));
        let n = values.len();
        conditions.push(format!("(at, id) < (?{}, ?{n})", n - 1));
    }
    if conditions.is_empty() {
        (String::new(), values)
    } else {
        (format!("WHERE {}", conditions.join(" AND ")), values)
    }
}

fn event_from_row(row: &Row<'_>) -> rusqlite::Result<AuditEvent> {
    let user = |i: usize| {
        row.get::<_, Option<String>>(i)?
            .map(|id| UserId::parse(&id).map_err(conversion_error))
            .transpose()
    };
    let details: String = row.get(7)?;
    let details = match serde_json::from_str(&details).map_err(conversion_error)? {
        serde_json::Value::Object(map) => map,
        _ => EventDetails::new(),
    };
    Ok(AuditEvent {
        id: EventId::parse(&row.get::<_, String>(0)?).map_err(conversion_error)?,
        at: from_millis(row.get(1)?)?,
        kind: EventKind::parse(&row.get::<_, String>(2)?).map_err(conversion_error)?,
        actor_id: user(3)?,
        subject_id: user(4)?,
        origin: Origin {
            ip: row
                .get::<_, Option<String>>(5)?
                .map(|ip| ip.parse().map_err(conversion_error))
                .transpose()?,
            user_agent: row.get(6)?,
        },
        details,
    })
}

/// The writes of a user, guarded by the user as last read or not: the check and the write
/// share one transaction that holds the write lock.
impl SqliteRepository {
    async fn update_guarded(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: Option<User>,
    ) -> StorageResult<Option<User>> {
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
            if values.is_empty() && expected.is_none() {
                return select_user(conn, BY_ID, &id);
            }
            let tx = write_transaction(conn)?;
            if let Some(expected) = &expected {
                // Under the write lock, taken at BEGIN IMMEDIATE: no write comes in between.
                match select_user(&tx, BY_ID, &id)? {
                    None => return Ok(None),
                    Some(user) if user != *expected => return Err(StorageError::Changed),
                    Some(user) if values.is_empty() => return Ok(Some(user)),
                    Some(_) => {}
                }
            }
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

    async fn delete_guarded(&self, id: &UserId, expected: Option<User>) -> StorageResult<bool> {
        let id = id.to_hex();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            if let Some(expected) = &expected {
                match select_user(&tx, BY_ID, &id)? {
                    None => return Ok(false),
                    Some(user) if user != *expected => return Err(StorageError::Changed),
                    Some(_) => {}
                }
            }
            let was_active_admin = is_active_admin(&tx, &id)?;
            let deleted = tx.execute("DELETE FROM users WHERE id = ?1", [&id])? > 0;
            tx.execute("DELETE FROM refresh_tokens WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM sessions WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM mfa_challenges WHERE user_id = ?1", [&id])?;
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
}

#[async_trait]
impl Repository for SqliteRepository {
    async fn ping(&self) -> StorageResult<()> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn create_user(&self, user: &User) -> StorageResult<()> {
        let user = user.clone();
        self.call(move |conn| insert_user(conn, &user)).await
    }

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        let id = id.to_hex();
        self.read(move |conn| select_user(conn, BY_ID, &id)).await
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        let email = email.as_str().to_owned();
        self.read(move |conn| select_user(conn, BY_EMAIL, &email))
            .await
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        let key = username.key();
        self.read(move |conn| select_user(conn, BY_USERNAME, &key))
            .await
    }

    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>> {
        self.update_guarded(id, patch, None).await
    }

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        self.delete_guarded(id, None).await
    }

    async fn update_user_if(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: &User,
    ) -> StorageResult<Option<User>> {
        self.update_guarded(id, patch, Some(expected.clone())).await
    }

    async fn delete_user_if(&self, id: &UserId, expected: &User) -> StorageResult<bool> {
        self.delete_guarded(id, Some(expected.clone())).await
    }

    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>> {
        let query = query.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            // A search is listed from the index once; alone, its length is the total.
            if let Some(phrase) = indexed_search(&query.filter) {
                let matches = matching_rowids(&tx, &phrase)?;
                return search_page(&tx, &query, &matches);
            }
            let total = count(&tx, &query.filter)?;
            let (sql, values) = page_statement(&query);
            let items = tx
                .prepare_cached(&sql)?
                .query_map(rusqlite::params_from_iter(values), user_from_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Page { items, total })
        })
        .await
    }

    async fn import_users(&self, users: &[User]) -> StorageResult<Vec<Imported>> {
        let users = users.to_vec();
        self.call(move |conn| {
            // A thousand users touch thousands of index pages: with the default 2 MB cache
            // they spill to the WAL mid-transaction, many times over. Only the import
            // command's connection grows this large.
            conn.pragma_update(None, "cache_size", -IMPORT_CACHE_KIB)?;
            conn.pragma_update(None, "wal_autocheckpoint", IMPORT_CHECKPOINT_PAGES)?;
            // Nor cut back after each copy, only to grow again to that size.
            conn.pragma_update(None, "journal_size_limit", -1)?;
            conn.execute_batch(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS import_batch \
                 (line INTEGER PRIMARY KEY, {USER_COLUMNS})"
            ))?;
            let tx = write_transaction(conn)?;
            {
                let mut stage = tx.prepare_cached(&format!(
                    "INSERT INTO temp.import_batch (line, {USER_COLUMNS}) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
                ))?;
                for (line, user) in users.iter().enumerate() {
                    let line = Value::Integer(line as i64);
                    stage.execute(rusqlite::params_from_iter(
                        std::iter::once(line).chain(user_params(user)),
                    ))?;
                }
            }
            // One statement for the batch, in line order: the search index writes its pending
            // terms out at the start of every statement its triggers reach, so a statement per
            // user wrote (and then merged) an index segment per user, at a tenth of the speed.
            let last_rowid: i64 =
                tx.query_row("SELECT coalesce(max(rowid), 0) FROM users", [], |r| {
                    r.get(0)
                })?;
            tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) SELECT {USER_COLUMNS} \
                     FROM temp.import_batch WHERE true ORDER BY line ON CONFLICT DO NOTHING"
                ),
                [],
            )?;
            // Each new row is the first line with its exact values (a later identical line
            // found it there).
            let created: HashSet<usize> = tx
                .prepare(
                    "SELECT min(b.line) FROM users u JOIN temp.import_batch b \
                     ON b.id = u.id AND b.email = u.email AND b.username IS u.username \
                     WHERE u.rowid > ?1 GROUP BY u.rowid",
                )?
                .query_map([last_rowid], |row| row.get::<_, i64>(0))?
                .map(|line| usize::try_from(line?).map_err(StorageError::internal))
                .collect::<StorageResult<_>>()?;
            // Whether a line that was not created met a user from before the batch: asked
            // only of those lines, which a first import of a file has none of.
            let mut existed = vec![false; users.len()];
            {
                let mut before = tx.prepare_cached(
                    "SELECT 1 FROM users WHERE (id = ?1 OR lower(email) = ?2) AND rowid <= ?3",
                )?;
                for (line, user) in users.iter().enumerate() {
                    if !created.contains(&line) {
                        existed[line] = before.exists(params![
                            user.id.to_hex(),
                            user.email.as_str(),
                            last_rowid
                        ])?;
                    }
                }
            }
            tx.execute("DELETE FROM temp.import_batch", [])?;
            tx.commit()?;
            Ok(import_outcomes(&users, &existed, &created))
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
            let previous = stored_attempts(&tx, &key)?;
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

    async fn forgive_login_attempt(&self, key: &str, threshold: u32) -> StorageResult<()> {
        let key = key.to_owned();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            if let Some(attempts) = stored_attempts(&tx, &key)? {
                let forgiven = attempts.forgiven(threshold);
                tx.execute(
                    "UPDATE login_attempts SET count = ?2, locked_until = ?3 WHERE key = ?1",
                    params![key, forgiven.count, forgiven.locked_until.map(unix_millis)],
                )?;
            }
            tx.commit()?;
            Ok(())
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

    async fn login_lock(&self, key: &str) -> StorageResult<Option<OffsetDateTime>> {
        let key = key.to_owned();
        self.read(move |conn| {
            Ok(stored_attempts(conn, &key)?.and_then(|attempts| attempts.locked_until))
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> StorageResult<()> {
        let session = session.clone();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let now = unix_millis(session.created_at);
            // Expired sessions and tokens can never be used again; sweep them while writing.
            tx.execute("DELETE FROM refresh_tokens WHERE expires_at < ?1", [now])?;
            tx.execute("DELETE FROM sessions WHERE expires_at < ?1", [now])?;
            tx.execute("DELETE FROM mfa_challenges WHERE expires_at < ?1", [now])?;
            tx.execute("DELETE FROM reset_tokens WHERE expires_at < ?1", [now])?;
            tx.execute(
                "INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, ip, \
                 user_agent) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    session.id.as_str(),
                    session.user_id.to_hex(),
                    now,
                    unix_millis(session.last_used_at),
                    unix_millis(session.expires_at),
                    session.origin.ip.map(|ip| ip.to_string()),
                    session.origin.user_agent,
                ],
            )?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn user_with_session(
        &self,
        id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(User, bool)>> {
        let (id, session) = (id.to_hex(), session.as_str().to_owned());
        let at = unix_millis(at);
        let sql = format!(
            "SELECT {USER_COLUMNS}, EXISTS (SELECT 1 FROM sessions s WHERE s.id = ?2 \
             AND s.user_id = users.id AND s.ended_at IS NULL AND s.expires_at > ?3) \
             FROM users WHERE id = ?1"
        );
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(&sql)?
                .query_row(params![id, session, at], |row| {
                    Ok((user_from_row(row)?, row.get::<_, bool>(14)?))
                })
                .optional()?)
        })
        .await
    }

    async fn live_sessions(
        &self,
        user_id: &UserId,
        at: OffsetDateTime,
    ) -> StorageResult<Vec<Session>> {
        let user_id = user_id.to_hex();
        let at = unix_millis(at);
        self.read(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, user_id, created_at, last_used_at, expires_at, ip, user_agent \
                 FROM sessions WHERE user_id = ?1 AND ended_at IS NULL AND expires_at > ?2 \
                 ORDER BY created_at DESC, id DESC",
            )?;
            let rows = statement.query_map(params![user_id, at], session_from_row)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }

    async fn end_session(
        &self,
        user_id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let (user_id, session) = (user_id.to_hex(), session.as_str().to_owned());
        let at = unix_millis(at);
        self.changed(
            "UPDATE sessions SET ended_at = ?3 WHERE id = ?1 AND user_id = ?2 \
                 AND ended_at IS NULL AND expires_at > ?3",
            vec![session.into(), user_id.into(), at.into()],
        )
        .await
    }

    async fn end_user_sessions(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64> {
        let user_id = user_id.to_hex();
        let at = unix_millis(at);
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let ended = tx.execute(
                "UPDATE sessions SET ended_at = ?2 WHERE user_id = ?1 AND ended_at IS NULL \
                 AND expires_at > ?2",
                params![user_id, at],
            )?;
            tx.execute("DELETE FROM mfa_challenges WHERE user_id = ?1", [&user_id])?;
            tx.commit()?;
            Ok(ended as u64)
        })
        .await
    }

    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()> {
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let created_at = unix_millis(record.created_at);
            tx.execute(
                "UPDATE sessions SET last_used_at = ?2, expires_at = max(expires_at, ?3) \
                 WHERE id = ?1 AND ended_at IS NULL",
                params![
                    record.session_id.as_str(),
                    created_at,
                    unix_millis(record.expires_at)
                ],
            )?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, session_id, user_id, created_at, \
                 expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    record.token_hash,
                    record.session_id.as_str(),
                    record.user_id.to_hex(),
                    created_at,
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
            match refresh_token_state(&tx, &token_hash)? {
                RefreshTokenUse::Live(record) => {
                    tx.execute(
                        "UPDATE refresh_tokens SET spent_at = ?2 WHERE token_hash = ?1",
                        params![token_hash, unix_millis(at)],
                    )?;
                    tx.commit()?;
                    Ok(RefreshTokenUse::Spent(record))
                }
                other => Ok(other),
            }
        })
        .await
    }

    async fn peek_refresh_token(&self, token_hash: &str) -> StorageResult<RefreshTokenUse> {
        let token_hash = token_hash.to_owned();
        self.read(move |conn| refresh_token_state(conn, &token_hash))
            .await
    }

    async fn end_session_of_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, SessionId)>> {
        let token_hash = token_hash.to_owned();
        let at = unix_millis(at);
        self.call(move |conn| {
            let ended = conn
                .prepare_cached(
                    "UPDATE sessions SET ended_at = ?2 WHERE ended_at IS NULL AND expires_at > ?2 \
                     AND id = (SELECT session_id FROM refresh_tokens WHERE token_hash = ?1) \
                     RETURNING user_id, id",
                )?
                .query_row(params![token_hash, at], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                })
                .optional()?;
            ended
                .map(|(user, session)| {
                    Ok((
                        UserId::parse(&user).map_err(StorageError::internal)?,
                        SessionId::parse(&session).map_err(StorageError::internal)?,
                    ))
                })
                .transpose()
        })
        .await
    }

    async fn totp_state(&self, user_id: &UserId) -> StorageResult<Option<TotpState>> {
        let user_id = user_id.to_hex();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT totp_secret, totp_pending, totp_last_step FROM users WHERE id = ?1",
                )?
                .query_row([&user_id], |row| {
                    Ok(TotpState {
                        secret: row.get::<_, Option<String>>(0)?.map(Secret::new),
                        pending: row.get::<_, Option<String>>(1)?.map(Secret::new),
                        last_step: row
                            .get::<_, Option<i64>>(2)?
                            .map(|step| u64::try_from(step).unwrap_or_default()),
                    })
                })
                .optional()?)
        })
        .await
    }

    async fn set_pending_totp(&self, user_id: &UserId, secret: &Secret) -> StorageResult<bool> {
        let (user_id, secret) = (user_id.to_hex(), secret.expose().to_owned());
        self.changed(
            "UPDATE users SET totp_pending = ?2 WHERE id = ?1 AND mfa_enabled = 0",
            vec![user_id.into(), secret.into()],
        )
        .await
    }

    async fn enable_totp(
        &self,
        user_id: &UserId,
        secret: &Secret,
        step: u64,
        recovery_hashes: &[String],
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let (user_id, secret) = (user_id.to_hex(), secret.expose().to_owned());
        let hashes = recovery_hashes.to_vec();
        let (step, at) = (stored_step(step)?, unix_millis(at));
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let enabled = tx.execute(
                "UPDATE users SET mfa_enabled = 1, totp_secret = totp_pending, \
                 totp_pending = NULL, totp_last_step = ?3, updated_at = ?4 \
                 WHERE id = ?1 AND mfa_enabled = 0 AND totp_pending = ?2",
                params![user_id, secret, step, at],
            )? > 0;
            if enabled {
                replace_codes(&tx, &user_id, &hashes)?;
            }
            tx.commit()?;
            Ok(enabled)
        })
        .await
    }

    async fn claim_totp_step(&self, user_id: &UserId, step: u64) -> StorageResult<bool> {
        let user_id = user_id.to_hex();
        let step = stored_step(step)?;
        self.changed(
            "UPDATE users SET totp_last_step = ?2 WHERE id = ?1 AND mfa_enabled = 1 \
                 AND (totp_last_step IS NULL OR totp_last_step < ?2)",
            vec![user_id.into(), step.into()],
        )
        .await
    }

    async fn use_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        let (user_id, code_hash) = (user_id.to_hex(), code_hash.to_owned());
        self.changed(
            "DELETE FROM recovery_codes WHERE user_id = ?1 AND code_hash = ?2",
            vec![user_id.into(), code_hash.into()],
        )
        .await
    }

    async fn holds_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        let (user_id, code_hash) = (user_id.to_hex(), code_hash.to_owned());
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT 1 FROM recovery_codes r JOIN users u ON u.id = r.user_id \
                     WHERE r.user_id = ?1 AND r.code_hash = ?2 AND u.mfa_enabled = 1",
                )?
                .exists(params![user_id, code_hash])?)
        })
        .await
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        recovery_hashes: &[String],
    ) -> StorageResult<bool> {
        let user_id = user_id.to_hex();
        let hashes = recovery_hashes.to_vec();
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let on = tx
                .prepare_cached("SELECT 1 FROM users WHERE id = ?1 AND mfa_enabled = 1")?
                .exists([&user_id])?;
            if on {
                replace_codes(&tx, &user_id, &hashes)?;
            }
            tx.commit()?;
            Ok(on)
        })
        .await
    }

    async fn disable_totp(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<bool> {
        let user_id = user_id.to_hex();
        let at = unix_millis(at);
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            let disabled = tx.execute(
                "UPDATE users SET mfa_enabled = 0, totp_secret = NULL, totp_pending = NULL, \
                 updated_at = ?2 WHERE id = ?1 AND mfa_enabled = 1",
                params![user_id, at],
            )? > 0;
            tx.execute("DELETE FROM recovery_codes WHERE user_id = ?1", [&user_id])?;
            tx.commit()?;
            Ok(disabled)
        })
        .await
    }

    async fn insert_mfa_challenge(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        self.call(move |conn| insert_one_time_token(conn, "mfa_challenges", &record))
            .await
    }

    async fn attempt_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
        max_attempts: u32,
    ) -> StorageResult<Option<UserId>> {
        let token_hash = token_hash.to_owned();
        let at = unix_millis(at);
        self.call(move |conn| {
            let owner = conn
                .prepare_cached(
                    "UPDATE mfa_challenges SET attempts = attempts + 1 WHERE token_hash = ?1 \
                     AND used_at IS NULL AND expires_at > ?2 AND attempts < ?3 \
                     RETURNING user_id",
                )?
                .query_row(params![token_hash, at, max_attempts], |row| {
                    row.get::<_, String>(0)
                })
                .optional()?;
            owner
                .map(|id| UserId::parse(&id).map_err(StorageError::internal))
                .transpose()
        })
        .await
    }

    async fn consume_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let token_hash = token_hash.to_owned();
        let at = unix_millis(at);
        self.changed(
            "UPDATE mfa_challenges SET used_at = ?2 WHERE token_hash = ?1 \
                 AND used_at IS NULL AND expires_at > ?2",
            vec![token_hash.into(), at.into()],
        )
        .await
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> StorageResult<()> {
        let event = event.clone();
        self.call(move |conn| {
            conn.prepare_cached(
                "INSERT INTO audit_events (id, at, type, actor_id, subject_id, ip, user_agent, \
                 details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                event.id.to_string(),
                unix_millis(event.at),
                event.kind.as_str(),
                event.actor_id.map(|id| id.to_hex()),
                event.subject_id.map(|id| id.to_hex()),
                event.origin.ip.map(|ip| ip.to_string()),
                event.origin.user_agent,
                serde_json::Value::Object(event.details.clone()).to_string(),
            ])?;
            Ok(())
        })
        .await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> StorageResult<Page<AuditEvent>> {
        let query = query.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let (clause, values) = audit_where(&query.filter, None);
            let total: i64 = tx.query_row(
                &format!("SELECT count(*) FROM audit_events {clause}"),
                rusqlite::params_from_iter(values),
                |row| row.get(0),
            )?;
            let (clause, mut values) = audit_where(&query.filter, query.after);
            values.push(Value::Integer(i64::from(query.limit)));
            values.push(Value::Integer(
                i64::try_from(query.offset).map_err(StorageError::internal)?,
            ));
            let n = values.len();
            let sql = format!(
                "SELECT id, at, type, actor_id, subject_id, ip, user_agent, details \
                 FROM audit_events {clause} ORDER BY at DESC, id DESC LIMIT ?{} OFFSET ?{n}",
                n - 1
            );
            let items = tx
                .prepare(&sql)?
                .query_map(rusqlite::params_from_iter(values), event_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Page {
                items,
                total: total as u64,
            })
        })
        .await
    }

    async fn delete_audit_events_before(&self, before: OffsetDateTime) -> StorageResult<u64> {
        let before = unix_millis(before);
        self.call(move |conn| {
            Ok(conn.execute("DELETE FROM audit_events WHERE at < ?1", [before])? as u64)
        })
        .await
    }

    async fn insert_reset_token(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        self.call(move |conn| insert_one_time_token(conn, "reset_tokens", &record))
            .await
    }

    async fn reset_token_owner(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let token_hash = token_hash.to_owned();
        let at = unix_millis(at);
        self.read(move |conn| {
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
            void_reset_tokens(&tx, &user_id, at)?;
            tx.commit()?;
            Ok(Some(
                UserId::parse(&user_id).map_err(StorageError::internal)?,
            ))
        })
        .await
    }

    async fn void_reset_tokens(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64> {
        let user_id = user_id.to_hex();
        self.call(move |conn| Ok(void_reset_tokens(conn, &user_id, at)? as u64))
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

    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        at: OffsetDateTime,
        ttl: std::time::Duration,
        stale_after: std::time::Duration,
    ) -> StorageResult<Claim> {
        let (scope, key, fingerprint) = (scope.to_owned(), key.to_owned(), fingerprint.to_owned());
        let (now, stale, expires) = (
            unix_millis(at),
            unix_millis(at - stale_after),
            unix_millis(at + ttl),
        );
        self.call(move |conn| {
            let tx = write_transaction(conn)?;
            // Expired entries, and this key's abandoned claim, count as absent.
            tx.prepare_cached("DELETE FROM idempotency_keys WHERE expires_at <= ?1")?
                .execute([now])?;
            tx.prepare_cached(
                "DELETE FROM idempotency_keys \
                 WHERE scope = ?1 AND key = ?2 AND status IS NULL AND created_at <= ?3",
            )?
            .execute(params![scope, key, stale])?;
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO idempotency_keys \
                     (scope, key, fingerprint, created_at, expires_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (scope, key) DO NOTHING",
                )?
                .execute(params![scope, key, fingerprint, now, expires])?
                == 1;
            let claim = if inserted {
                Claim::New
            } else {
                let (stored, status, body, location, etag) = tx
                    .prepare_cached(
                        "SELECT fingerprint, status, body, location, etag FROM idempotency_keys \
                         WHERE scope = ?1 AND key = ?2",
                    )?
                    .query_row(params![scope, key], |row| {
                        Ok((
                            row.get::<_, String>(0)?,
                            row.get::<_, Option<u16>>(1)?,
                            row.get::<_, Option<String>>(2)?,
                            row.get::<_, Option<String>>(3)?,
                            row.get::<_, Option<String>>(4)?,
                        ))
                    })?;
                match status {
                    _ if stored != fingerprint => Claim::Mismatch,
                    Some(status) => Claim::Replay(StoredAnswer {
                        status,
                        body: body.unwrap_or_default(),
                        location,
                        etag,
                    }),
                    None => Claim::InFlight,
                }
            };
            tx.commit()?;
            Ok(claim)
        })
        .await
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> StorageResult<()> {
        let (scope, key, answer) = (scope.to_owned(), key.to_owned(), answer.clone());
        self.call(move |conn| {
            conn.prepare_cached(
                "UPDATE idempotency_keys SET status = ?3, body = ?4, location = ?5, etag = ?6 \
                 WHERE scope = ?1 AND key = ?2 AND status IS NULL",
            )?
            .execute(params![
                scope,
                key,
                answer.status,
                answer.body,
                answer.location,
                answer.etag
            ])?;
            Ok(())
        })
        .await
    }

    async fn release_idempotency_key(&self, scope: &str, key: &str) -> StorageResult<()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        self.call(move |conn| {
            conn.prepare_cached(
                "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND status IS NULL",
            )?
            .execute(params![scope, key])?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::UserCursor;

    /// A repository on a new file, and the directory that holds it.
    async fn fresh() -> (tempfile::TempDir, SqliteRepository) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let repo = SqliteRepository::open(dir.path().join("users.db"))
            .await
            .expect("open");
        (dir, repo)
    }

    #[tokio::test]
    async fn reads_that_panic_fail_alone_and_the_readers_go_on() {
        let (_dir, repo) = fresh().await;
        // As many panics as there are reader threads: were a panic to end the thread it ran
        // on, none would be left for the read after them.
        for _ in 0..reader_count() {
            let failed = repo
                .read(|_| -> StorageResult<()> { panic!("a bug in a read") })
                .await;
            assert!(
                matches!(failed, Err(StorageError::Internal(_))),
                "{failed:?}"
            );
        }
        let one: i64 = repo
            .read(|conn| Ok(conn.query_row("SELECT 1", [], |row| row.get(0))?))
            .await
            .expect("a reader is left");
        assert_eq!(one, 1);
    }

    /// Matches that fill most of their span keep the bitmap alone, however many; a far
    /// match after them goes back to a list, and they still list in order.
    #[test]
    fn dense_matches_keep_no_list() {
        let dense = Matches::new((1..=1_000_000).filter(|r| r % 25 != 0).collect());
        assert!(dense.list.is_none());
        assert_eq!(dense.bits.as_ref().map(Vec::len), Some(125_000));
        assert_eq!(dense.len(), 960_000);
        assert!(dense.contains(24) && !dense.contains(25) && !dense.contains(1_000_001));
        let far = Matches::new((1..=1000).chain([1 << 40]).collect());
        assert!(far.bits.is_none(), "a bitmap of 2^40 bits does not pay");
        assert_eq!(
            far.rowids().collect::<Vec<_>>(),
            (1..=1000).chain([1 << 40]).collect::<Vec<_>>()
        );
        assert!(far.contains(1 << 40) && far.contains(1000) && !far.contains(1001));
    }

    /// Matches counted among a role and state come to the same with a bitmap (inside SQLite)
    /// and without one (a far match leaves only the list).
    #[tokio::test]
    async fn matches_among_users_count_alike_with_and_without_a_bitmap() {
        let (_dir, repo) = fresh().await;
        for i in 0..10 {
            let user = User {
                email: Email::parse(&format!("user{i}@example.com")).expect("an email"),
                role: if i % 3 == 0 { Role::Admin } else { Role::User },
                ..User::sample()
            };
            repo.create_user(&user).await.expect("create");
        }
        let counts = repo
            .read(|conn| {
                let (kept, _) = cells(
                    conn,
                    &UserFilter {
                        role: Some(Role::Admin),
                        ..UserFilter::default()
                    },
                )?;
                let rowids: Vec<i64> = conn
                    .prepare("SELECT rowid FROM users ORDER BY rowid")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let every_other: Vec<i64> = rowids.iter().copied().step_by(2).collect();
                let dense = Matches::new(every_other.clone());
                let sparse = Matches::new(every_other.into_iter().chain([1 << 40]).collect());
                assert!(dense.bitmap().is_some() && sparse.bitmap().is_none());
                Ok([
                    matches_among(conn, &kept, &dense)?,
                    matches_among(conn, &kept, &sparse)?,
                ])
            })
            .await
            .expect("counts");
        // Admins are users 0, 3, 6 and 9 in rowid order; every other user is 0, 2, 4, 6, 8.
        assert_eq!(counts, [2, 2]);
    }

    /// Dense matches get a bitmap, sparse ones a binary search; both answer alike, at the
    /// edges of the span too.
    #[test]
    fn matches_answer_membership_with_or_without_a_bitmap() {
        let dense: Vec<i64> = (1..=5000).filter(|r| r % 7 == 0 || r % 11 == 3).collect();
        let sparse = vec![-3, 5, 70_000, 9_000_000_000];
        let cases = [
            (dense, true),
            ((0..=63).collect(), true),
            (vec![-70, -6], true),
            (vec![i64::MAX - 5, i64::MAX], true),
            (sparse, false),
            (vec![i64::MIN, i64::MAX], false),
            (Vec::new(), true),
        ];
        for (rowids, bitmap) in cases {
            let matches = Matches::new(rowids.clone());
            assert_eq!(matches.bits.is_some(), bitmap, "{rowids:?}");
            assert_eq!(matches.len(), rowids.len());
            assert_eq!(matches.rowids().collect::<Vec<_>>(), rowids);
            let probes = rowids
                .iter()
                .flat_map(|&r| [r.saturating_sub(1), r, r.saturating_add(1)])
                .chain([i64::MIN, -1, 0, 64, 5001, i64::MAX]);
            for probe in probes {
                assert_eq!(
                    matches.contains(probe),
                    rowids.contains(&probe),
                    "{probe} in {rowids:?}"
                );
            }
        }
    }

    #[test]
    fn matches_refuse_a_rowid_out_of_order() {
        let mut matches = Matches::default();
        assert_eq!(matches.push(5), Ok(()));
        assert!(matches.push(5).is_err() && matches.push(4).is_err());
        assert_eq!(matches.push(6), Ok(()));
        assert_eq!(matches.rowids().collect::<Vec<_>>(), [5, 6]);
    }

    /// `gather_matches` needs the index's rows in ascending rowid order: they come so even
    /// when the index holds them out of that order (its entries rewritten from the last
    /// user to the first, each in a segment of its own), and a search with no match
    /// gathers an empty set.
    #[tokio::test]
    async fn a_search_gathers_its_matches_in_rowid_order() {
        let (_dir, repo) = fresh().await;
        let mut ids = Vec::new();
        for i in 0..40 {
            let user = User {
                name: DisplayName::parse(&format!("Mario {i}")).expect("a name"),
                email: Email::parse(&format!("user{i}@example.com")).expect("an email"),
                ..User::sample()
            };
            repo.create_user(&user).await.expect("create");
            ids.push(user.id);
        }
        for (i, id) in ids.iter().enumerate().rev() {
            let name = DisplayName::parse(&format!("Mario Rossi {i}")).expect("a name");
            let patch = UserPatch::new().set(UserField::Name(name));
            repo.update_user(id, &patch).await.expect("update");
        }
        let (gathered, listed, none) = repo
            .read(|conn| {
                let gathered = matching_rowids(conn, "\"mario rossi\"")?;
                let listed: Vec<i64> = conn
                    .prepare(
                        "SELECT rowid FROM users_search WHERE users_search MATCH '\"mario\"' \
                         ORDER BY rowid",
                    )?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                let none = matching_rowids(conn, "\"luigi\"")?;
                Ok((gathered.rowids().collect::<Vec<_>>(), listed, none.len()))
            })
            .await
            .expect("searches");
        assert_eq!(gathered.len(), 40);
        assert_eq!(gathered, listed);
        assert_eq!(none, 0);
    }

    #[tokio::test]
    async fn a_broad_search_walks_the_sort_and_a_narrow_one_sorts_its_matches() {
        let (_dir, repo) = fresh().await;
        // "mario" is in the names of the last two in the order of names, and nobody else's;
        // "example" is in every email.
        let names = [
            "Anna",
            "Bruno",
            "Carla",
            "Dario",
            "Elena",
            "Fabio",
            "Gina",
            "Ivo",
            "Mario Rossi",
            "Mario Verdi",
        ];
        for (i, name) in names.iter().enumerate() {
            let user = User {
                name: DisplayName::parse(name).expect("a name"),
                email: Email::parse(&format!("user{i}@example.com")).expect("an email"),
                ..User::sample()
            };
            repo.create_user(&user).await.expect("create");
        }
        let search = |q: &str, after: Option<UserCursor>| ListQuery {
            filter: UserFilter {
                q: Some(q.to_owned()),
                ..UserFilter::default()
            },
            sort: SortField::Name,
            order: SortOrder::Ascending,
            after,
            limit: 3,
            ..ListQuery::default()
        };
        let walks = |query: ListQuery| {
            repo.read(move |conn| {
                let phrase = indexed_search(&query.filter).expect("an indexed search");
                let matches = matching_rowids(conn, &phrase)?;
                Ok(walked_search_items(conn, &query, &matches)?.is_some())
            })
        };
        assert!(walks(search("example", None)).await.expect("walk"));
        assert!(!walks(search("mario", None)).await.expect("walk"));

        let names_of = |page: &Page<User>| -> Vec<String> {
            page.items
                .iter()
                .map(|u| u.name.as_str().to_owned())
                .collect()
        };
        let first = repo
            .list_users(&search("example", None))
            .await
            .expect("list");
        assert_eq!(
            (names_of(&first), first.total),
            (vec!["Anna".into(), "Bruno".into(), "Carla".into()], 10)
        );
        let last = first.items.last().expect("a user");
        let after = UserCursor {
            key: SortKey::Text(last.name.as_str().to_owned()),
            id: last.id,
        };
        let second = repo
            .list_users(&search("example", Some(after)))
            .await
            .expect("list");
        assert_eq!(names_of(&second), ["Dario", "Elena", "Fabio"]);
        let narrow = repo.list_users(&search("mario", None)).await.expect("list");
        assert_eq!(
            (names_of(&narrow), narrow.total),
            (vec!["Mario Rossi".into(), "Mario Verdi".into()], 2)
        );
    }

    #[tokio::test]
    async fn a_rebuilt_search_index_finds_every_user_again() {
        let (_dir, repo) = fresh().await;
        for (name, email) in [
            ("Mario Rossi", "mario@example.com"),
            ("Anna", "anna@example.com"),
        ] {
            let user = User {
                name: crate::domain::DisplayName::parse(name).expect("a name"),
                email: crate::domain::Email::parse(email).expect("an email"),
                ..User::sample()
            };
            repo.create_user(&user).await.expect("create");
        }
        let search = |q: &str| ListQuery {
            filter: UserFilter {
                q: Some(q.to_owned()),
                ..UserFilter::default()
            },
            ..ListQuery::default()
        };
        // An index that lost track of the rows (as after a VACUUM renumbered them) finds
        // nobody until it is rebuilt.
        repo.call(|conn| Ok(conn.execute("DELETE FROM users_search", [])?))
            .await
            .expect("empty the index");
        assert_eq!(
            repo.list_users(&search("rossi")).await.expect("list").total,
            0
        );
        assert_eq!(repo.rebuild_search_index().await.expect("rebuild"), 2);
        // In one segment (FTS5 keeps a row per segment and leaf page in its `_idx` table).
        let segments: i64 = repo
            .read(|conn| {
                Ok(conn.query_row(
                    "SELECT count(DISTINCT segid) FROM users_search_idx",
                    [],
                    |row| row.get(0),
                )?)
            })
            .await
            .expect("segments");
        assert_eq!(segments, 1);
        for (q, total) in [("ROSSI", 1), ("example", 2), ("nobody", 0)] {
            let page = repo.list_users(&search(q)).await.expect("list");
            assert_eq!(page.total, total, "{q}");
            assert_eq!(page.items.len() as u64, total, "{q}");
        }
        // And it goes on following writes.
        let user = User {
            name: crate::domain::DisplayName::parse("Mario Bianchi").expect("a name"),
            email: crate::domain::Email::parse("bianchi@example.com").expect("an email"),
            ..User::sample()
        };
        repo.create_user(&user).await.expect("create");
        assert_eq!(
            repo.list_users(&search("mario")).await.expect("list").total,
            2
        );
    }

    /// A filter on state alone merges one walk per role in `Role::ALL`: those must be every
    /// role the schema counts, or some users would be left out of the pages but not the total.
    #[tokio::test]
    async fn the_roles_a_list_merges_are_the_roles_the_schema_counts() {
        let (dir, _repo) = fresh().await;
        let conn = Connection::open(dir.path().join("users.db")).expect("open");
        let counted: Vec<String> = conn
            .prepare("SELECT DISTINCT role FROM user_counts ORDER BY role")
            .expect("a statement")
            .query_map([], |row| row.get(0))
            .expect("roles")
            .collect::<rusqlite::Result<_>>()
            .expect("roles");
        let mut merged: Vec<String> = Role::ALL
            .iter()
            .map(|role| stored_role(*role).to_owned())
            .collect();
        merged.sort();
        assert_eq!(merged, counted);
    }

    /// A search's total under a role or state, counted by each of its three ways: walking
    /// the users the filter keeps, walking those it leaves out, looking up each match. 60
    /// users: 3 admins, 20 deactivated; "zed" matches 4 of them (walks of up to 32 steps),
    /// "quark" 2, one of them deactivated (up to 16).
    #[tokio::test]
    async fn a_filtered_search_counts_the_same_whichever_way_it_is_counted() {
        let (_dir, repo) = fresh().await;
        let mut everyone = Vec::new();
        for i in 0..60 {
            let name = match i {
                1 | 20 | 33 | 45 => format!("Zed {i}"),
                7 | 9 => format!("Quark {i}"),
                _ => format!("Other {i}"),
            };
            let user = User {
                name: DisplayName::parse(&name).expect("a name"),
                email: Email::parse(&format!("user{i}@example.com")).expect("an email"),
                role: if i % 20 == 0 { Role::Admin } else { Role::User },
                active: i % 3 != 0,
                ..User::sample()
            };
            repo.create_user(&user).await.expect("create");
            everyone.push(user);
        }
        let cases = [
            // The 3 admins.
            ("zed", Some(Role::Admin), None, Tally::Kept),
            // The 3 admins left out.
            ("zed", Some(Role::User), None, Tally::LeftOut),
            // The 22 admins or deactivated left out.
            ("zed", Some(Role::User), Some(true), Tally::LeftOut),
            // The 20 deactivated.
            ("zed", None, Some(false), Tally::Kept),
            // 40 users kept, 20 left out: each match looked up.
            ("quark", None, Some(true), Tally::Lookups),
            // 38 kept, 22 left out: the same.
            ("quark", Some(Role::User), Some(true), Tally::Lookups),
            ("quark", Some(Role::Admin), None, Tally::Kept),
        ];
        for (q, role, active, counted) in cases {
            let filter = UserFilter {
                q: Some(q.to_owned()),
                role,
                active,
            };
            let how = {
                let filter = filter.clone();
                repo.read(move |conn| {
                    let phrase = indexed_search(&filter).expect("an indexed search");
                    let matches = matching_rowids(conn, &phrase)?;
                    let (kept, left) = cells(conn, &filter)?;
                    Ok(tally(&kept, &left, matches.len()))
                })
                .await
                .expect("a tally")
            };
            assert_eq!(how, counted, "{filter:?}");
            let mut expected: Vec<&User> = everyone
                .iter()
                .filter(|u| {
                    u.name.as_str().to_lowercase().contains(q)
                        && role.is_none_or(|r| u.role == r)
                        && active.is_none_or(|a| u.active == a)
                })
                .collect();
            expected.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
            let page = repo
                .list_users(&ListQuery {
                    filter: filter.clone(),
                    sort: SortField::Name,
                    order: SortOrder::Ascending,
                    limit: 2,
                    ..ListQuery::default()
                })
                .await
                .expect("list");
            let listed: Vec<UserId> = page.items.iter().map(|u| u.id).collect();
            let wanted: Vec<UserId> = expected.iter().take(2).map(|u| u.id).collect();
            assert_eq!(
                (page.total, listed),
                (expected.len() as u64, wanted),
                "{filter:?}"
            );
        }
    }

    /// What `EXPLAIN QUERY PLAN` says of a statement, a step a line.
    fn plan_of(conn: &Connection, sql: &str, values: Vec<Value>) -> Vec<String> {
        conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("a statement")
            .query_map(rusqlite::params_from_iter(values), |row| row.get(3))
            .expect("a plan")
            .collect::<rusqlite::Result<_>>()
            .expect("a plan")
    }

    /// A search's total walks a (role, active) pair's users in an index, reading no row.
    #[tokio::test]
    async fn a_search_total_walks_one_role_and_state_in_an_index() {
        let (dir, _repo) = fresh().await;
        let conn = Connection::open(dir.path().join("users.db")).expect("open");
        configure(&conn).expect("configure");
        let cell = vec![Value::Text("user".into()), Value::Integer(1)];
        let bitmap = [Value::Blob(vec![0b101]), Value::Integer(1)];
        for (sql, values) in [
            (SEARCH_TOTAL_WALK, cell.clone()),
            (SEARCH_TOTAL_COUNT, [cell, bitmap.to_vec()].concat()),
        ] {
            let plan = plan_of(&conn, sql, values);
            assert!(
                plan.len() == 1 && plan[0].contains("USING COVERING INDEX users_role_active_"),
                "{sql}: {plan:#?}"
            );
        }
    }

    /// Processes opening one new file at once (a server and `create-admin` beside it, two
    /// instances) all open it. Turning a new file to WAL answers SQLITE_BUSY at once to all
    /// but one, without the busy handler: with two bare processes, in about one round in
    /// fifteen before `use_wal` asked again. The test runs itself as those processes.
    #[test]
    fn processes_opening_a_new_file_at_once_all_open_it() {
        const CHILD: &str = "USER_SERVICE_TEST_OPEN";
        if let Some(path) = std::env::var_os(CHILD) {
            configure(&Connection::open(path).expect("open")).expect("configure");
            return;
        }
        let test = "storage::sqlite::tests::processes_opening_a_new_file_at_once_all_open_it";
        let me = std::env::current_exe().expect("the test binary");
        for round in 0..100 {
            let dir = tempfile::tempdir().expect("tempdir");
            let children: Vec<_> = (0..2)
                .map(|_| {
                    std::process::Command::new(&me)
                        .args(["--exact", test, "--test-threads=1"])
                        .env(CHILD, dir.path().join("users.db"))
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::piped())
                        .spawn()
                        .expect("spawn")
                })
                .collect();
            for child in children {
                let output = child.wait_with_output().expect("wait");
                assert!(
                    output.status.success(),
                    "round {round}: {}{}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
        }
    }

    /// Expired reset tokens go at the next login, as expired sessions do: the table does
    /// not grow with every reset ever asked for.
    #[tokio::test]
    async fn a_login_sweeps_expired_reset_tokens() {
        let (_dir, repo) = fresh().await;
        let user = User::sample();
        repo.create_user(&user).await.expect("create");
        let now = crate::domain::now();
        for (token, expires_at) in [
            ("old", now - time::Duration::hours(1)),
            ("live", now + time::Duration::hours(1)),
        ] {
            repo.insert_reset_token(OneTimeTokenRecord {
                token_hash: token.to_owned(),
                user_id: user.id,
                created_at: now - time::Duration::hours(2),
                expires_at,
            })
            .await
            .expect("insert");
        }
        let session = a_day_long_session(user.id, now);
        repo.create_session(&session).await.expect("session");
        let left: Vec<String> = repo
            .call(|conn| {
                Ok(conn
                    .prepare("SELECT token_hash FROM reset_tokens")?
                    .query_map([], |row| row.get(0))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
            .expect("tokens");
        assert_eq!(left, ["live"]);
    }

    fn a_day_long_session(user_id: UserId, now: OffsetDateTime) -> Session {
        Session {
            id: SessionId::generate(),
            user_id,
            created_at: now,
            last_used_at: now,
            expires_at: now + time::Duration::days(1),
            origin: Origin::default(),
        }
    }

    /// A session or token for a user removed meanwhile is refused as such (the foreign
    /// key), not as a failure of the database.
    #[tokio::test]
    async fn what_is_stored_for_a_user_who_is_gone_is_refused_as_user_gone() {
        let (_dir, repo) = fresh().await;
        let user = User::sample();
        repo.create_user(&user).await.expect("create");
        assert!(repo.delete_user(&user.id).await.expect("delete"));
        let now = crate::domain::now();
        let session = a_day_long_session(user.id, now);
        let stored = repo.create_session(&session).await;
        assert!(matches!(stored, Err(StorageError::UserGone)), "{stored:?}");
        let stored = repo
            .insert_reset_token(OneTimeTokenRecord {
                token_hash: "hash".to_owned(),
                user_id: user.id,
                created_at: now,
                expires_at: now + time::Duration::hours(1),
            })
            .await;
        assert!(matches!(stored, Err(StorageError::UserGone)), "{stored:?}");
    }

    /// A look-up by id, email or username reads one row by its unique index, never the
    /// table (a username login read every user when the partial index's condition was
    /// left unsaid).
    #[tokio::test]
    async fn a_look_up_by_a_unique_key_uses_its_index() {
        let (dir, _repo) = fresh().await;
        let conn = Connection::open(dir.path().join("users.db")).expect("open");
        for (key, index) in [
            (BY_ID, "sqlite_autoindex_users_1"),
            (BY_EMAIL, "users_email_unique"),
            (BY_USERNAME, "users_username_unique"),
        ] {
            let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE {key}");
            let plan = plan_of(&conn, &sql, vec![Value::Text("mario".into())]);
            assert!(
                plan.len() == 1
                    && plan[0].starts_with(&format!("SEARCH users USING INDEX {index}")),
                "{key}: {plan:#?}"
            );
        }
    }

    /// Every list but a search, by every sort in both orders, from the start and from a
    /// cursor, walks its sort's index from where the page starts, within its filter: none
    /// passes over users the filter leaves out, or sorts what it reads. So does the walk by
    /// which a search with those filters looks for its page.
    #[tokio::test]
    async fn every_sort_under_every_filter_walks_an_index() {
        let (dir, _repo) = fresh().await;
        let conn = Connection::open(dir.path().join("users.db")).expect("open");
        let filters = [
            (None, None),
            (Some(Role::Admin), None),
            (None, Some(false)),
            (Some(Role::User), Some(true)),
        ];
        for (role, active) in filters {
            for (sort, column) in [
                (SortField::CreatedAt, "created_at"),
                (SortField::Name, "name"),
                (SortField::Email, "email"),
            ] {
                let key = match sort {
                    SortField::CreatedAt => SortKey::CreatedAt(crate::domain::now()),
                    SortField::Name | SortField::Email => SortKey::Text("m".to_owned()),
                };
                let cursor = UserCursor {
                    key,
                    id: UserId::generate(),
                };
                for order in [SortOrder::Ascending, SortOrder::Descending] {
                    for after in [None, Some(cursor.clone())] {
                        let query = ListQuery {
                            filter: UserFilter {
                                q: None,
                                role,
                                active,
                            },
                            sort,
                            order,
                            after,
                            ..ListQuery::default()
                        };
                        // Filtered lists walk the (role, active, key) index of the sort,
                        // one walk per role or state when only the other is given.
                        let walk = if query.filter.by_role_or_state() {
                            format!("INDEX users_role_active_{column} (role=? AND active=?")
                        } else {
                            format!("INDEX users_{column}")
                        };
                        // The page, and the walk a search takes through the same order.
                        let statements = [page_statement(&query), search_walk_statement(&query)];
                        for (sql, values) in statements {
                            let plan = plan_of(&conn, &sql, values);
                            let reads: Vec<&String> =
                                plan.iter().filter(|step| step.contains(" users")).collect();
                            assert!(
                                !reads.is_empty()
                                    && reads.iter().all(|step| step.contains(&walk))
                                    && !plan.iter().any(|step| step.contains("TEMP B-TREE")),
                                "{query:?}: {plan:#?}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn searches_of_three_characters_or_more_go_to_the_index_as_one_quoted_phrase() {
        assert_eq!(search_phrase("mar").as_deref(), Some("\"mar\""));
        assert_eq!(search_phrase("a\"b").as_deref(), Some("\"a\"\"b\""));
        assert_eq!(search_phrase("i\u{307}s").as_deref(), Some("\"i\u{307}s\""));
        assert_eq!(search_phrase("ma"), None);
        assert_eq!(search_phrase("é"), None);
    }
}
