//! The MongoDB backend: a typed `users` collection with unique indexes on email and username.

use std::{future::IntoFuture, time::Duration};

use async_trait::async_trait;
use bson::{Bson, DateTime as BsonDateTime, Document, doc, oid::ObjectId};
use futures_util::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    RefreshTokenRecord, RefreshTokenUse, Repository, ResetTokenRecord, StorageError, StorageResult,
    UniqueField,
};
use crate::domain::{
    self, Email, ListQuery, NewUser, Page, Role, SortField, SortOrder, User, UserFilter, UserId,
    UserName, UserUpdate, Username,
};

const EMAIL_INDEX: &str = "email_unique";
const USERNAME_INDEX: &str = "username_key_unique";
const DUPLICATE_KEY: i32 = 11000;
/// Server answers that mean "not now" rather than "never": shutting down, stepping down,
/// no primary, host unreachable, exceeded time limit and the like.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

#[derive(Debug, Serialize, Deserialize)]
struct UserDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    username: Option<String>,
    /// Lower-cased `username`: the unique index ignores case through it.
    username_key: Option<String>,
    email: String,
    role: Role,
    active: bool,
    password_hash: String,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
    last_login_at: Option<BsonDateTime>,
    password_changed_at: BsonDateTime,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefreshTokenDocument {
    /// The SHA-256 of the token.
    #[serde(rename = "_id")]
    token_hash: String,
    family_id: String,
    user_id: ObjectId,
    created_at: BsonDateTime,
    /// A TTL index removes the document once this has passed.
    expires_at: BsonDateTime,
    spent_at: Option<BsonDateTime>,
    revoked: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct ResetTokenDocument {
    #[serde(rename = "_id")]
    token_hash: String,
    user_id: ObjectId,
    created_at: BsonDateTime,
    expires_at: BsonDateTime,
    used_at: Option<BsonDateTime>,
}

fn bson_time(t: OffsetDateTime) -> BsonDateTime {
    BsonDateTime::from_time_0_3(t)
}

impl From<&User> for UserDocument {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.object_id(),
            name: user.name.as_str().to_owned(),
            username: user.username.as_ref().map(|u| u.as_str().to_owned()),
            username_key: user.username.as_ref().map(Username::key),
            email: user.email.as_str().to_owned(),
            role: user.role,
            active: user.active,
            password_hash: user.password_hash.clone(),
            created_at: bson_time(user.created_at),
            updated_at: bson_time(user.updated_at),
            last_login_at: user.last_login_at.map(bson_time),
            password_changed_at: bson_time(user.password_changed_at),
        }
    }
}

impl TryFrom<UserDocument> for User {
    type Error = StorageError;

    fn try_from(doc: UserDocument) -> Result<Self, Self::Error> {
        Ok(User {
            id: doc.id.into(),
            name: UserName::parse(&doc.name).map_err(StorageError::internal)?,
            username: doc
                .username
                .as_deref()
                .map(Username::parse)
                .transpose()
                .map_err(StorageError::internal)?,
            email: Email::parse(&doc.email).map_err(StorageError::internal)?,
            role: doc.role,
            active: doc.active,
            password_hash: doc.password_hash,
            created_at: doc.created_at.to_time_0_3(),
            updated_at: doc.updated_at.to_time_0_3(),
            last_login_at: doc.last_login_at.map(BsonDateTime::to_time_0_3),
            password_changed_at: doc.password_changed_at.to_time_0_3(),
        })
    }
}

impl From<mongodb::error::Error> for StorageError {
    fn from(error: mongodb::error::Error) -> Self {
        let duplicate_message = match error.kind.as_ref() {
            ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY => {
                Some(e.message.as_str())
            }
            ErrorKind::Command(e) if e.code == DUPLICATE_KEY => Some(e.message.as_str()),
            _ => None,
        };
        if let Some(message) = duplicate_message {
            return StorageError::Duplicate(duplicate_field(message));
        }
        let transient = match error.kind.as_ref() {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. }
            | ErrorKind::DnsResolve { .. }
            | ErrorKind::Shutdown
            | ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
            ErrorKind::Command(e) => TRANSIENT_CODES.contains(&e.code),
            _ => false,
        };
        if transient || error.contains_label("RetryableWriteError") {
            StorageError::Unavailable(error.into())
        } else {
            StorageError::Internal(error.into())
        }
    }
}

/// Which unique index a duplicate-key message names (`... index: email_unique dup key: ...`);
/// only the index name counts, not the duplicated value that follows it.
fn duplicate_field(message: &str) -> UniqueField {
    if message.contains(&format!("index: {USERNAME_INDEX} ")) {
        UniqueField::Username
    } else {
        UniqueField::Email
    }
}

/// Escapes `text` so that a regular expression matches it literally.
fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/#&~ ".contains(c) {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

fn filter_document(filter: &UserFilter) -> Document {
    let mut document = Document::new();
    if let Some(q) = &filter.q {
        let pattern = doc! { "$regex": regex_escape(q), "$options": "i" };
        document.insert(
            "$or",
            vec![
                doc! { "name": pattern.clone() },
                doc! { "email": pattern.clone() },
                doc! { "username": pattern },
            ],
        );
    }
    if let Some(role) = filter.role {
        document.insert("role", role.as_str());
    }
    if let Some(active) = filter.active {
        document.insert("active", active);
    }
    document
}

fn update_document(update: UserUpdate, at: OffsetDateTime) -> Document {
    let mut set = doc! { "updated_at": bson_time(at) };
    if let Some(name) = update.name {
        set.insert("name", name.as_str());
    }
    if let Some(username) = update.username {
        set.insert("username", username.as_ref().map(Username::as_str));
        set.insert("username_key", username.as_ref().map(Username::key));
    }
    if let Some(email) = update.email {
        set.insert("email", email.as_str());
    }
    if let Some(role) = update.role {
        set.insert("role", role.as_str());
    }
    if let Some(active) = update.active {
        set.insert("active", active);
    }
    if let Some(hash) = update.password_hash {
        set.insert("password_hash", hash);
        set.insert("password_changed_at", bson_time(at));
    }
    doc! { "$set": set }
}

/// Runs `attempt` until it succeeds or `deadline` passes, backing off between tries.
async fn retry_until<T, E, F, Fut>(
    deadline: tokio::time::Instant,
    what: &str,
    mut attempt: F,
) -> anyhow::Result<T>
where
    E: Into<anyhow::Error>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(250);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let error: anyhow::Error = error.into();
                if tokio::time::Instant::now() + delay >= deadline {
                    return Err(error.context(format!("{what} did not answer in time")));
                }
                tracing::warn!(
                    error = format!("{error:#}"),
                    "{what} is not reachable yet; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

#[derive(Clone)]
pub struct MongoRepository {
    db: Database,
    users: Collection<UserDocument>,
    refresh_tokens: Collection<RefreshTokenDocument>,
    reset_tokens: Collection<ResetTokenDocument>,
}

impl MongoRepository {
    /// Connects, waiting up to `startup_timeout` for the server (and, for `mongodb+srv`,
    /// its DNS records), and creates the indexes.
    pub async fn connect(
        url: &str,
        database: &str,
        startup_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let deadline = tokio::time::Instant::now() + startup_timeout;
        let mut options = retry_until(deadline, "MongoDB's address", || {
            ClientOptions::parse(url).into_future()
        })
        .await?;
        options
            .app_name
            .get_or_insert_with(|| "user-service".to_owned());
        // Unless the URL says otherwise, fail requests fast while the server is away, so that
        // clients see 503 quickly.
        options
            .server_selection_timeout
            .get_or_insert(Duration::from_secs(3));
        options
            .connect_timeout
            .get_or_insert(Duration::from_secs(3));
        let client = Client::with_options(options)?;
        let db = client.database(database);
        let repository = Self {
            users: db.collection("users"),
            refresh_tokens: db.collection("refresh_tokens"),
            reset_tokens: db.collection("password_reset_tokens"),
            db,
        };
        retry_until(deadline, "MongoDB", || repository.ping()).await?;
        repository.create_indexes().await?;
        Ok(repository)
    }

    /// Creating an index that already exists with the same options is a no-op.
    async fn create_indexes(&self) -> mongodb::error::Result<()> {
        let named = |keys: Document, name: &str| {
            IndexModel::builder()
                .keys(keys)
                .options(IndexOptions::builder().name(name.to_owned()).build())
                .build()
        };
        let unique = |keys: Document, name: &str, partial: Option<Document>| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(true)
                        .partial_filter_expression(partial)
                        .build(),
                )
                .build()
        };
        let expiring = |name: &str| {
            IndexModel::builder()
                .keys(doc! { "expires_at": 1 })
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .expire_after(Duration::ZERO)
                        .build(),
                )
                .build()
        };
        self.users
            .create_indexes([
                unique(doc! { "email": 1 }, EMAIL_INDEX, None),
                unique(
                    doc! { "username_key": 1 },
                    USERNAME_INDEX,
                    Some(doc! { "username_key": { "$type": "string" } }),
                ),
                named(doc! { "created_at": -1, "_id": -1 }, "created_at_desc"),
            ])
            .await?;
        self.refresh_tokens
            .create_indexes([
                named(doc! { "family_id": 1 }, "family_id"),
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.reset_tokens
            .create_indexes([
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        Ok(())
    }

    async fn find_user(&self, filter: Document) -> StorageResult<Option<User>> {
        self.users
            .find_one(filter)
            .await?
            .map(User::try_from)
            .transpose()
    }
}

#[async_trait]
impl Repository for MongoRepository {
    async fn ping(&self) -> StorageResult<()> {
        self.db.run_command(doc! { "ping": 1 }).await?;
        Ok(())
    }

    async fn create_user(&self, new: NewUser) -> StorageResult<User> {
        let user = new.into_user(domain::now());
        self.users.insert_one(UserDocument::from(&user)).await?;
        Ok(user)
    }

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        self.find_user(doc! { "_id": id.object_id() }).await
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        self.find_user(doc! { "email": email.as_str() }).await
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        self.find_user(doc! { "username_key": username.key() })
            .await
    }

    async fn update_user(&self, id: &UserId, update: UserUpdate) -> StorageResult<Option<User>> {
        self.users
            .find_one_and_update(
                doc! { "_id": id.object_id() },
                update_document(update, domain::now()),
            )
            .return_document(ReturnDocument::After)
            .await?
            .map(User::try_from)
            .transpose()
    }

    async fn record_login(
        &self,
        id: &UserId,
        at: OffsetDateTime,
        upgraded_hash: Option<String>,
    ) -> StorageResult<()> {
        let mut set = doc! { "last_login_at": bson_time(at) };
        if let Some(hash) = upgraded_hash {
            set.insert("password_hash", hash);
        }
        self.users
            .update_one(doc! { "_id": id.object_id() }, doc! { "$set": set })
            .await?;
        Ok(())
    }

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        let oid = id.object_id();
        let deleted = self.users.delete_one(doc! { "_id": oid }).await?;
        self.refresh_tokens
            .delete_many(doc! { "user_id": oid })
            .await?;
        self.reset_tokens
            .delete_many(doc! { "user_id": oid })
            .await?;
        Ok(deleted.deleted_count > 0)
    }

    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>> {
        let filter = filter_document(&query.filter);
        let direction = match query.order {
            SortOrder::Ascending => 1,
            SortOrder::Descending => -1,
        };
        let field = match query.sort {
            SortField::CreatedAt => "created_at",
            SortField::Name => "name",
            SortField::Email => "email",
        };
        let total = self.users.count_documents(filter.clone()).await?;
        let items = self
            .users
            .find(filter)
            .sort(doc! { field: direction, "_id": direction })
            .skip(query.offset())
            .limit(i64::from(query.per_page))
            .await?
            .try_collect::<Vec<_>>()
            .await?
            .into_iter()
            .map(User::try_from)
            .collect::<Result<_, _>>()?;
        Ok(Page { items, total })
    }

    async fn count_users(&self, filter: &UserFilter) -> StorageResult<u64> {
        Ok(self.users.count_documents(filter_document(filter)).await?)
    }

    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()> {
        self.refresh_tokens
            .insert_one(RefreshTokenDocument {
                token_hash: record.token_hash,
                family_id: record.family_id,
                user_id: record.user_id.object_id(),
                created_at: bson_time(record.created_at),
                expires_at: bson_time(record.expires_at),
                spent_at: None,
                revoked: false,
            })
            .await?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse> {
        let spent = self
            .refresh_tokens
            .find_one_and_update(
                doc! { "_id": token_hash, "spent_at": Bson::Null, "revoked": false },
                doc! { "$set": { "spent_at": bson_time(at) } },
            )
            .await?;
        if let Some(doc) = spent {
            return Ok(RefreshTokenUse::Spent(RefreshTokenRecord {
                token_hash: doc.token_hash,
                family_id: doc.family_id,
                user_id: doc.user_id.into(),
                created_at: doc.created_at.to_time_0_3(),
                expires_at: doc.expires_at.to_time_0_3(),
            }));
        }
        Ok(
            match self
                .refresh_tokens
                .find_one(doc! { "_id": token_hash })
                .await?
            {
                Some(doc) if doc.revoked => RefreshTokenUse::Revoked,
                Some(doc) => RefreshTokenUse::Replayed {
                    family_id: doc.family_id,
                },
                None => RefreshTokenUse::Unknown,
            },
        )
    }

    async fn revoke_refresh_token(&self, token_hash: &str) -> StorageResult<()> {
        self.refresh_tokens
            .update_one(
                doc! { "_id": token_hash },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    async fn revoke_refresh_family(&self, family_id: &str) -> StorageResult<()> {
        self.refresh_tokens
            .update_many(
                doc! { "family_id": family_id },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    async fn revoke_user_refresh_tokens(&self, user_id: &UserId) -> StorageResult<()> {
        self.refresh_tokens
            .update_many(
                doc! { "user_id": user_id.object_id() },
                doc! { "$set": { "revoked": true } },
            )
            .await?;
        Ok(())
    }

    async fn insert_reset_token(&self, record: ResetTokenRecord) -> StorageResult<()> {
        self.reset_tokens
            .insert_one(ResetTokenDocument {
                token_hash: record.token_hash,
                user_id: record.user_id.object_id(),
                created_at: bson_time(record.created_at),
                expires_at: bson_time(record.expires_at),
                used_at: None,
            })
            .await?;
        Ok(())
    }

    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let used = self
            .reset_tokens
            .find_one_and_update(
                doc! {
                    "_id": token_hash,
                    "used_at": Bson::Null,
                    "expires_at": { "$gt": bson_time(at) },
                },
                doc! { "$set": { "used_at": bson_time(at) } },
            )
            .await?;
        let Some(doc) = used else {
            return Ok(None);
        };
        self.reset_tokens
            .update_many(
                doc! { "user_id": doc.user_id, "used_at": Bson::Null },
                doc! { "$set": { "used_at": bson_time(at) } },
            )
            .await?;
        Ok(Some(doc.user_id.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_escape_makes_metacharacters_literal() {
        assert_eq!(regex_escape("a.b*c"), r"a\.b\*c");
        assert_eq!(regex_escape("(x)"), r"\(x\)");
        assert_eq!(regex_escape("plain"), "plain");
    }

    #[test]
    fn duplicate_key_message_names_the_field() {
        let email = "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"a@x.io\" }";
        let username = "E11000 duplicate key error collection: db.users index: username_key_unique dup key: { username_key: \"mario\" }";
        assert_eq!(duplicate_field(email), UniqueField::Email);
        assert_eq!(duplicate_field(username), UniqueField::Username);
        let tricky = "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"username_key_unique@x.io\" }";
        assert_eq!(duplicate_field(tricky), UniqueField::Email);
    }
}
