//! Persistence. The repository speaks domain types only: no HTTP, no rows, no documents.

mod mongo;
mod sqlite;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::domain::{
    Email, ListQuery, NewUser, Page, User, UserFilter, UserId, UserUpdate, Username,
};

pub use mongo::MongoRepository;
pub use sqlite::SqliteRepository;

pub type DynRepository = Arc<dyn Repository>;

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

pub type StorageResult<T> = Result<T, StorageError>;

/// A refresh token as stored: only the SHA-256 of the secret is kept.
/// Tokens rotated from one login share a `family_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct RefreshTokenRecord {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

/// What presenting a refresh token found.
#[derive(Debug, Clone, PartialEq)]
pub enum RefreshTokenUse {
    /// The token was live; it is now spent and cannot be used again.
    Spent(RefreshTokenRecord),
    /// The token had already been spent: a sign it was stolen.
    Replayed {
        family_id: String,
    },
    /// The token was revoked (logout, password change, or a replay in its session).
    Revoked,
    Unknown,
}

/// A password-reset token as stored: only the SHA-256 of the secret is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetTokenRecord {
    pub token_hash: String,
    pub user_id: UserId,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
}

#[async_trait]
pub trait Repository: Send + Sync + 'static {
    /// A trivial round trip, for readiness.
    async fn ping(&self) -> StorageResult<()>;

    async fn create_user(&self, new: NewUser) -> StorageResult<User>;
    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>>;
    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>>;
    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>>;
    /// Applies a partial update and bumps `updated_at`; `None` when there is no such user.
    async fn update_user(&self, id: &UserId, update: UserUpdate) -> StorageResult<Option<User>>;
    /// Sets `last_login_at`, and the hash when it was upgraded to a higher cost;
    /// neither counts as a change of the profile or the password.
    async fn record_login(
        &self,
        id: &UserId,
        at: OffsetDateTime,
        upgraded_hash: Option<String>,
    ) -> StorageResult<()>;
    /// Deletes the user with their tokens; `false` when there was no such user.
    async fn delete_user(&self, id: &UserId) -> StorageResult<bool>;
    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>>;
    async fn count_users(&self, filter: &UserFilter) -> StorageResult<u64>;

    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()>;
    /// Spends a live token atomically: of two concurrent uses, one wins.
    async fn use_refresh_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse>;
    async fn revoke_refresh_token(&self, token_hash: &str) -> StorageResult<()>;
    async fn revoke_refresh_family(&self, family_id: &str) -> StorageResult<()>;
    async fn revoke_user_refresh_tokens(&self, user_id: &UserId) -> StorageResult<()>;

    async fn insert_reset_token(&self, record: ResetTokenRecord) -> StorageResult<()>;
    /// Spends a live, unexpired reset token atomically and voids the user's other ones;
    /// returns whose it was.
    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>>;
}

/// How long start-up waits for MongoDB (as when it starts beside us in `docker compose`)
/// before the service gives up with an error.
const MONGODB_STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Opens the configured backend: MongoDB for a `mongodb` URL, else the embedded SQLite file.
pub async fn connect(settings: &crate::config::DatabaseSettings) -> anyhow::Result<DynRepository> {
    use crate::config::DatabaseSettings;
    Ok(match settings {
        DatabaseSettings::Sqlite { path } => {
            tracing::info!(path = %path.display(), "using the embedded SQLite database");
            Arc::new(SqliteRepository::open(path).await?)
        }
        DatabaseSettings::Mongo { url, database } => {
            tracing::info!(database, "using MongoDB");
            Arc::new(
                MongoRepository::connect(url.expose(), database, MONGODB_STARTUP_TIMEOUT).await?,
            )
        }
    })
}
