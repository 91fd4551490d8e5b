//! Persistence. The repository speaks domain types only: no HTTP, no rows, no documents.

mod memory;
mod mongo;
mod sqlite;

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    AuditEvent, AuditQuery, Email, ListQuery, Page, Role, Secret, Session, SessionId, User, UserId,
    UserPatch, Username,
};

pub use memory::MemoryRepository;
pub use mongo::MongoRepository;
pub use sqlite::SqliteRepository;

pub type DynRepository = Arc<dyn Repository>;

/// What became of one user of a bulk import.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Imported {
    Created,
    /// A user with this id or email exists already: left as it is, so that importing a file
    /// again creates nothing twice.
    Exists,
    /// Another user has this username.
    UsernameTaken,
}

/// The field whose unique index refused a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UniqueField {
    Email,
    Username,
}

impl UniqueField {
    pub fn as_str(self) -> &'static str {
        match self {
            UniqueField::Email => "email",
            UniqueField::Username => "username",
        }
    }
}

impl fmt::Display for UniqueField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique index refused the write.
    #[error("{0} is already taken")]
    Duplicate(UniqueField),
    /// The write would have left no active admin, so none of it was made.
    #[error("the last active admin cannot be removed, deactivated or demoted")]
    LastActiveAdmin,
    /// A guarded write found the user no longer as expected (another write came first), so
    /// none of it was made.
    #[error("the user changed since it was read")]
    Changed,
    /// A write of something of a user's (a session, a token) found the user gone, removed
    /// since they were read, so it was not made. SQLite tells by its foreign keys; MongoDB
    /// has none and stores it, for nobody to use.
    #[error("the user is gone")]
    UserGone,
    /// The database did not answer; retrying later may succeed.
    #[error("the database is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Anything else: a bug or corrupt data.
    #[error("storage failure")]
    Internal(#[source] anyhow::Error),
}

impl StorageError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }
}

/// How a role is stored, by every backend.
fn stored_role(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Admin => "admin",
    }
}

fn role_from_stored(stored: &str) -> StorageResult<Role> {
    match stored {
        "user" => Ok(Role::User),
        "admin" => Ok(Role::Admin),
        other => Err(StorageError::internal(anyhow::anyhow!(
            "unknown stored role {other:?}"
        ))),
    }
}

pub type StorageResult<T> = Result<T, StorageError>;

/// A refresh token as stored: only the SHA-256 of the secret is kept. Tokens rotated from
/// one login belong to its session.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub session_id: SessionId,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshTokenUse {
    /// The token was live; it is now spent and cannot be used again.
    Spent(RefreshTokenRecord),
    /// The token is live and stays so: what [`Repository::peek_refresh_token`] finds.
    Live(RefreshTokenRecord),
    /// The token had already been spent: a sign it was stolen.
    Replayed {
        session_id: SessionId,
        user_id: UserId,
    },
    /// The token's session has ended (logout, password change, a replay in it) or is gone.
    Revoked,
    Unknown,
}

/// A user's TOTP state as stored. The secrets are base32.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TotpState {
    /// Set while MFA is on.
    pub secret: Option<Secret>,
    /// An enrolment started and not yet confirmed.
    pub pending: Option<Secret>,
    /// The last time step whose code was accepted: no code of it or before is taken again.
    pub last_step: Option<u64>,
}

/// A one-time token as stored: a password-reset token, or the second step of a login
/// (handed out as an `mfa_token`). Only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct OneTimeTokenRecord {
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// The login attempts counted against one key (an account, or a name that is nobody's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginAttempts {
    /// Attempts in the current series, this one included.
    pub count: u32,
    /// Set once, when the series reached the threshold.
    pub locked_until: Option<OffsetDateTime>,
}

/// A key's attempts as SQLite and the memory double keep them; MongoDB keeps the same
/// fields and reaches the same next state with its own atomic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StoredAttempts {
    count: u32,
    last_at: OffsetDateTime,
    locked_until: Option<OffsetDateTime>,
}

impl StoredAttempts {
    /// The state after one more attempt at `at`.
    fn next(
        previous: Option<Self>,
        at: OffsetDateTime,
        threshold: u32,
        lock_for: Duration,
    ) -> Self {
        let ongoing = previous.filter(|p| match p.locked_until {
            Some(until) => until > at,
            None => p.last_at + lock_for > at,
        });
        let count = ongoing.map_or(0, |p| p.count) + 1;
        let locked_until = ongoing
            .and_then(|p| p.locked_until)
            .or((count == threshold).then(|| at + lock_for));
        Self {
            count,
            last_at: at,
            locked_until,
        }
    }

    /// The state once one attempt is taken back: a lock the count no longer reaches ends
    /// (a lock starts when the count reaches `threshold`).
    fn forgiven(self, threshold: u32) -> Self {
        let count = self.count.saturating_sub(1);
        Self {
            count,
            locked_until: self.locked_until.filter(|_| count >= threshold),
            ..self
        }
    }

    /// When the record may be removed: its lock is over and it has been idle for `lock_for`.
    fn expires_at(&self, lock_for: Duration) -> OffsetDateTime {
        let idle = self.last_at + lock_for;
        self.locked_until.map_or(idle, |until| until.max(idle))
    }

    fn public(&self) -> LoginAttempts {
        LoginAttempts {
            count: self.count,
            locked_until: self.locked_until,
        }
    }
}

/// An email-verification token as stored: only the SHA-256 of the secret is kept, with the
/// address it verifies (a later change of address leaves it verifying nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct VerificationTokenRecord {
    pub token_hash: String,
    pub user_id: UserId,
    pub email: Email,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// An answer stored under an idempotency key, to be given again to a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    /// The body as sent (JSON text).
    pub body: String,
    pub location: Option<String>,
    /// The version of the user the answer carries.
    pub etag: Option<String>,
}

/// What claiming an idempotency key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (never used, expired, released, or an abandoned claim): it is now
    /// held in flight by this caller, who must complete or release it.
    New,
    /// The key was used with the same fingerprint and completed: here is its answer.
    Replay(StoredAnswer),
    /// The key was used with another fingerprint (in flight or completed).
    Mismatch,
    /// The key is held by a request with the same fingerprint that has not finished.
    InFlight,
}

#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// A trivial round trip, for readiness.
    async fn ping(&self) -> StorageResult<()>;

    /// Stores a new user exactly as given (the services set its id and timestamps).
    async fn create_user(&self, user: &User) -> StorageResult<()>;
    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>>;
    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>>;
    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>>;
    /// Stores the values of `patch` and returns the user as it is now; `None` when there is
    /// no such user. The backend adds nothing of its own (not even `updated_at`).
    ///
    /// Never leaves the database without an active admin: a patch that would demote or
    /// deactivate the last one fails with [`StorageError::LastActiveAdmin`] and changes
    /// nothing, however many processes write at once.
    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>>;
    /// Deletes the user, then their sessions, tokens and MFA state (their audit events
    /// stay); `false` when there was no such user. Like [`Repository::update_user`], refuses to delete the last active admin.
    async fn delete_user(&self, id: &UserId) -> StorageResult<bool>;
    /// [`Repository::update_user`], made only while the stored user is still `expected`
    /// (every field equal), checked in the same atomic write: otherwise
    /// [`StorageError::Changed`] and nothing changes. Of two guarded writes from one read,
    /// one wins. `None` when there is no such user.
    async fn update_user_if(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: &User,
    ) -> StorageResult<Option<User>>;
    /// [`Repository::delete_user`], made only while the stored user is still `expected`, as
    /// for [`Repository::update_user_if`].
    async fn delete_user_if(&self, id: &UserId, expected: &User) -> StorageResult<bool>;
    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>>;
    /// Stores each user as given (id, hash and times included) unless one with its id or
    /// email exists; one outcome per user, in order. Quicker than one `create_user` each:
    /// a batch is one transaction (SQLite) or one unordered `insertMany` (MongoDB).
    async fn import_users(&self, users: &[User]) -> StorageResult<Vec<Imported>>;

    /// Counts one login attempt against `key`, before its password is checked, in one atomic
    /// step: of any number of simultaneous attempts each gets its own count. When the count
    /// reaches `threshold`, the key is locked until `at + lock_for` (set once per series). A
    /// series starts again once its lock has ended, or after `lock_for` without attempts;
    /// such idle counts are removed in time.
    async fn count_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        threshold: u32,
        lock_for: Duration,
    ) -> StorageResult<LoginAttempts>;
    /// Takes back one attempt counted against `key`: a right password whose login goes on
    /// to a second step is no failure. A lock the count no longer reaches ends with it.
    async fn forgive_login_attempt(&self, key: &str, threshold: u32) -> StorageResult<()>;
    /// Ends the series of `key` (a successful login, a reset, an admin's unlock).
    async fn clear_login_attempts(&self, key: &str) -> StorageResult<()>;
    /// The end of the lock the series of `key` holds, if it holds one (it may have passed);
    /// changes nothing.
    async fn login_lock(&self, key: &str) -> StorageResult<Option<OffsetDateTime>>;

    /// Starts a session (a login). Its `last_used_at` and `expires_at` move with each
    /// refresh token stored into it.
    async fn create_session(&self, session: &Session) -> StorageResult<()>;
    /// The user `id` and whether `session` is one of theirs that is live at `at` (not
    /// ended, not expired), in one round trip: the check every authenticated request makes.
    async fn user_with_session(
        &self,
        id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(User, bool)>>;
    /// The user's sessions live at `at`, newest first.
    async fn live_sessions(
        &self,
        user_id: &UserId,
        at: OffsetDateTime,
    ) -> StorageResult<Vec<Session>>;
    /// Ends one session of the user; `false` when it was not theirs or not live at `at`.
    async fn end_session(
        &self,
        user_id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<bool>;
    /// Ends every session of the user, and every login of theirs waiting for its second
    /// step (its `mfa_token` no longer works); how many sessions were live at `at`.
    async fn end_user_sessions(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64>;

    /// Stores a refresh token of the session `record.session_id`, which becomes the
    /// session's `last_used_at` (its `created_at`) and extends its `expires_at`. A token of a
    /// session that has ended is dead from the start.
    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()>;
    /// Spends a live token atomically: of two concurrent uses, one wins. A token whose
    /// session has ended, or is gone, is `Revoked`, whenever it was issued.
    async fn use_refresh_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse>;
    /// What [`Repository::use_refresh_token`] would find, without spending the token: a
    /// live one comes back as [`RefreshTokenUse::Live`] and can be used again.
    async fn peek_refresh_token(&self, token_hash: &str) -> StorageResult<RefreshTokenUse>;
    /// Ends the session the token belongs to (a logout); whose it was, when it was live.
    async fn end_session_of_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, SessionId)>>;

    /// The user's TOTP state; `None` when there is no such user.
    async fn totp_state(&self, user_id: &UserId) -> StorageResult<Option<TotpState>>;
    /// Replaces a pending enrolment; `false` (and nothing changes) while MFA is on.
    async fn set_pending_totp(&self, user_id: &UserId, secret: &Secret) -> StorageResult<bool>;
    /// Switches MFA on with the pending `secret`, its first accepted `step` (the new last
    /// step: a step of an earlier secret says nothing about this one) and the hashes of the
    /// recovery codes, and sets `updated_at`: atomically, and only if `secret` is still the
    /// one pending and MFA is off. `false` otherwise.
    async fn enable_totp(
        &self,
        user_id: &UserId,
        secret: &Secret,
        step: u64,
        recovery_hashes: &[String],
        at: OffsetDateTime,
    ) -> StorageResult<bool>;
    /// Records `step` as the last one accepted, atomically, only while MFA is on and `step`
    /// is later than the last one: of two uses of one code, one wins.
    async fn claim_totp_step(&self, user_id: &UserId, step: u64) -> StorageResult<bool>;
    /// Spends one recovery code, atomically; `false` if it is not one of the user's.
    async fn use_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool>;
    /// Whether a recovery code is one of the user's, unspent, with MFA on; spends nothing.
    async fn holds_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool>;
    /// A new set of recovery codes, only while MFA is on.
    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        recovery_hashes: &[String],
    ) -> StorageResult<bool>;
    /// Switches MFA off, forgetting the secrets and codes, and sets `updated_at`; `false`
    /// when it was not on.
    async fn disable_totp(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<bool>;

    async fn insert_mfa_challenge(&self, record: OneTimeTokenRecord) -> StorageResult<()>;
    /// Counts one attempt at a live challenge (unused, unexpired at `at`, with fewer than
    /// `max_attempts` so far), atomically; whose it is, or `None` when it is not live.
    async fn attempt_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
        max_attempts: u32,
    ) -> StorageResult<Option<UserId>>;
    /// Spends a challenge, atomically; `false` when it was spent already.
    async fn consume_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<bool>;

    async fn insert_audit_event(&self, event: &AuditEvent) -> StorageResult<()>;
    /// Events newest first (by time, then id); `total` counts all that match the filter.
    async fn list_audit_events(&self, query: &AuditQuery) -> StorageResult<Page<AuditEvent>>;
    /// Removes the events older than `before`; how many.
    async fn delete_audit_events_before(&self, before: OffsetDateTime) -> StorageResult<u64>;

    async fn insert_reset_token(&self, record: OneTimeTokenRecord) -> StorageResult<()>;
    /// Whose a live (unused, unexpired) reset token is, without spending it: so that a new
    /// password can be judged against the account before the token is used up.
    async fn reset_token_owner(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>>;
    /// Spends a live, unexpired reset token atomically and voids the user's other ones;
    /// returns whose it was.
    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>>;
    /// Voids every unused reset token of a user, as used at `at`: a link mailed before the
    /// password, the address or the account's state changed must not work after. How many.
    async fn void_reset_tokens(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64>;

    /// Stores a verification token and voids the user's earlier ones: only the newest link
    /// works.
    async fn insert_verification_token(&self, record: VerificationTokenRecord)
    -> StorageResult<()>;
    /// Spends a live, unexpired verification token atomically; whose it was and the address
    /// it verifies.
    async fn consume_verification_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, Email)>>;

    /// Claims the sending of a mail of `kind` to `address` at `at`: `true`, and the claim
    /// counts as a mail sent, when none of that kind went to it within `window`; else
    /// `false` and nothing changes. Atomic, so it holds across instances.
    async fn claim_mail(
        &self,
        kind: &str,
        address: &Email,
        at: OffsetDateTime,
        window: Duration,
    ) -> StorageResult<bool>;

    /// Claims the idempotency key `key` of `scope` for a request whose fingerprint is
    /// `fingerprint`, in one atomic step (of simultaneous claims through any number of
    /// handles, at most one is `New`). An entry whose `expires_at` has passed counts as
    /// absent, and so does one still in flight that was claimed `stale_after` or longer
    /// before `at` (its holder died between claim and completion). A new claim holds the key
    /// in flight and expires at `at + ttl`. A different fingerprint is a `Mismatch` whatever
    /// the entry's state.
    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        at: OffsetDateTime,
        ttl: Duration,
        stale_after: Duration,
    ) -> StorageResult<Claim>;
    /// Stores the answer of a key held in flight, which replays it from now on (until the
    /// entry expires). Does nothing when the key is not in flight.
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> StorageResult<()>;
    /// Frees a key held in flight (its request failed), so that a retry runs again. Does
    /// nothing to a completed key.
    async fn release_idempotency_key(&self, scope: &str, key: &str) -> StorageResult<()>;
}

/// How long start-up waits for MongoDB (as when it starts beside us in `docker compose`)
/// before the service gives up with an error.
pub const MONGODB_STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Where the data lives.
#[derive(Debug, Clone, PartialEq)]
pub enum DatabaseSettings {
    Sqlite { path: PathBuf },
    Mongo { url: Secret, database: String },
}

/// Opens the embedded database at `path`, as `DATABASE_URL` names it: the file's own errors
/// ("file is not a database") do not say which setting chose it.
pub async fn open_sqlite(path: &Path) -> anyhow::Result<SqliteRepository> {
    SqliteRepository::open(path).await.with_context(|| {
        format!(
            "DATABASE_URL names {}, which cannot be used as the SQLite database",
            path.display()
        )
    })
}

/// Opens the configured backend: MongoDB for a `mongodb` URL, else the embedded SQLite file.
/// Audit events older than `audit_retention` are removed (by MongoDB's TTL index; on SQLite
/// by the sweep the services run).
pub async fn connect(
    settings: &DatabaseSettings,
    audit_retention: Duration,
) -> anyhow::Result<DynRepository> {
    Ok(match settings {
        DatabaseSettings::Sqlite { path } => {
            tracing::info!(path = %path.display(), "using the embedded SQLite database");
            Arc::new(open_sqlite(path).await?)
        }
        DatabaseSettings::Mongo { url, database } => {
            tracing::info!(database, "using MongoDB");
            Arc::new(
                MongoRepository::connect(
                    url.expose(),
                    database,
                    MONGODB_STARTUP_TIMEOUT,
                    audit_retention,
                )
                .await?,
            )
        }
    })
}
