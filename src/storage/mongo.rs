//! The MongoDB backend: a typed `users` collection with unique indexes on email and username.
//! A user's TOTP secrets live in their document, under `mfa`, which ordinary reads leave out.

use std::{future::IntoFuture, time::Duration};

use async_trait::async_trait;
use bson::{Bson, DateTime as BsonDateTime, Document, doc, oid::ObjectId};
use futures_util::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    error::{ErrorKind, WriteFailure},
    options::{ClientOptions, IndexOptions, ReadPreference, ReturnDocument},
};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Claim, Imported, LoginAttempts, OneTimeTokenRecord, RefreshTokenRecord, RefreshTokenUse,
    Repository, StorageError, StorageResult, StoredAnswer, TotpState, UniqueField,
    VerificationTokenRecord, role_from_stored, stored_role,
};
use crate::domain::{
    self, AuditEvent, AuditFilter, AuditQuery, DisplayName, Email, EventDetails, EventId,
    EventKind, ListQuery, Origin, Page, Role, Secret, Session, SessionId, SortField, SortKey,
    SortOrder, User, UserField, UserFilter, UserId, UserPatch, Username,
};

const SESSIONS: &str = "sessions";
const AUDIT_EVENTS: &str = "audit_events";
/// The TTL index that removes audit events past their retention.
const AUDIT_TTL_INDEX: &str = "at_ttl";
const EMAIL_INDEX: &str = "email_unique";
const USERNAME_INDEX: &str = "username_unique";
/// The unique username index of earlier versions, whose `$type` filter DocumentDB refuses:
/// replaced by [`USERNAME_INDEX`].
const OLD_USERNAME_INDEX: &str = "username_key_unique";
/// `{scope, key, fingerprint, created_at, expires_at, answer?: {status, body, location}}`:
/// an idempotency key, in flight until it has an `answer`. Unique on (scope, key); a TTL
/// index removes it once expired.
const IDEMPOTENCY_KEYS: &str = "idempotency_keys";
const DUPLICATE_KEY: i32 = 11000;
/// An index of that name exists with other options (`IndexOptionsConflict`), or other keys
/// (`IndexKeySpecsConflict`).
const INDEX_CONFLICT_CODES: &[i32] = &[85, 86];
/// `IndexNotFound`: dropping an index that is not there.
const INDEX_NOT_FOUND: i32 = 27;
/// Another write touched the same document first (MongoDB, DocumentDB, Cosmos DB vCore).
const WRITE_CONFLICT: i32 = 112;
/// Server answers that mean "not now" rather than "never": shutting down, stepping down,
/// no primary, host unreachable, exceeded time limit (50 is `MaxTimeMSExpired`) and the like.
const TRANSIENT_CODES: &[i32] = &[
    6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];
/// How long one database operation may take, its retries included: past it the caller
/// gets a 503 rather than a request that hangs.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a write that met a write conflict is tried again, after a random pause.
const CONFLICT_RETRIES: u32 = 4;
/// A reservation on an admin being removed that is older than this was abandoned (its
/// holder died between two steps): it no longer hides that admin or blocks others.
const ADMIN_RESERVATION_TTL: Duration = Duration::from_secs(30);
/// How often a removal of an admin starts again when another one holds their reservation.
const ADMIN_ATTEMPTS: u32 = 40;

#[derive(Debug, Serialize, Deserialize)]
struct UserDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    name: String,
    /// [`name_key`] of `name`, which `q` searches. Absent on users stored before it until
    /// [`MongoRepository::fill_name_keys`] runs; never read back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_key: Option<String>,
    username: Option<String>,
    /// Lower-cased `username`: the unique index ignores case through it.
    username_key: Option<String>,
    email: String,
    /// As [`stored_role`] spells it.
    role: String,
    active: bool,
    password_hash: String,
    created_at: BsonDateTime,
    updated_at: BsonDateTime,
    last_login_at: Option<BsonDateTime>,
    password_changed_at: BsonDateTime,
    /// Absent on users stored before login locks.
    #[serde(default)]
    locked_until: Option<BsonDateTime>,
    /// Absent on users stored before email verification: not verified.
    #[serde(default)]
    email_verified: bool,
    /// Absent on users stored before MFA: off. The secrets are under `mfa` (see
    /// [`MfaDocument`]), which every ordinary read projects out ([`without_secrets`]).
    #[serde(default)]
    mfa_enabled: bool,
}

/// A user's TOTP state, embedded in their document as `mfa`: `{secret, pending, last_step,
/// recovery}` (the SHA-256 of each unused recovery code). Absent until an enrolment starts.
#[derive(Debug, Default, Deserialize)]
struct MfaDocument {
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    pending: Option<String>,
    #[serde(default)]
    last_step: Option<i64>,
}

/// A user document read for its MFA state only.
#[derive(Debug, Deserialize)]
struct MfaHolder {
    #[serde(default)]
    mfa: Option<MfaDocument>,
}

/// A session (what one login starts). A TTL index removes it once it has expired.
#[derive(Debug, Serialize, Deserialize)]
struct SessionDocument {
    #[serde(rename = "_id")]
    id: String,
    user_id: ObjectId,
    created_at: BsonDateTime,
    last_used_at: BsonDateTime,
    expires_at: BsonDateTime,
    ip: Option<String>,
    user_agent: Option<String>,
    ended_at: Option<BsonDateTime>,
}

/// The second step of a login. A TTL index removes it once it has expired.
#[derive(Debug, Serialize, Deserialize)]
struct MfaChallengeDocument {
    /// The SHA-256 of the `mfa_token`.
    #[serde(rename = "_id")]
    token_hash: String,
    user_id: ObjectId,
    created_at: BsonDateTime,
    expires_at: BsonDateTime,
    attempts: i64,
    used_at: Option<BsonDateTime>,
}

/// One audit event. A TTL index on `at` removes it after the retention.
#[derive(Debug, Serialize, Deserialize)]
struct AuditEventDocument {
    #[serde(rename = "_id")]
    id: ObjectId,
    at: BsonDateTime,
    /// As [`EventKind::as_str`] spells it.
    #[serde(rename = "type")]
    kind: String,
    actor_id: Option<ObjectId>,
    subject_id: Option<ObjectId>,
    ip: Option<String>,
    user_agent: Option<String>,
    /// The details as BSON ([`json_to_bson`]).
    #[serde(default)]
    details: Document,
}

#[derive(Debug, Serialize, Deserialize)]
struct RefreshTokenDocument {
    /// The SHA-256 of the token.
    #[serde(rename = "_id")]
    token_hash: String,
    /// Absent on tokens of earlier versions, which had no sessions: those are revoked.
    #[serde(default)]
    session_id: String,
    user_id: ObjectId,
    created_at: BsonDateTime,
    /// A TTL index removes the document once this has passed.
    expires_at: BsonDateTime,
    spent_at: Option<BsonDateTime>,
}

#[derive(Debug, Serialize, Deserialize)]
struct VerificationTokenDocument {
    #[serde(rename = "_id")]
    token_hash: String,
    user_id: ObjectId,
    email: String,
    created_at: BsonDateTime,
    expires_at: BsonDateTime,
    used_at: Option<BsonDateTime>,
}

/// Login attempts counted against one key. A TTL index removes idle ones.
#[derive(Debug, Serialize, Deserialize)]
struct LoginAttemptsDocument {
    #[serde(rename = "_id")]
    key: String,
    count: i64,
    last_at: BsonDateTime,
    locked_until: Option<BsonDateTime>,
    expires_at: BsonDateTime,
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

/// A single-use token (reset, verification, MFA challenge) that is unused and unexpired at
/// `at`.
fn live_token(token_hash: &str, at: OffsetDateTime) -> Document {
    doc! {
        "_id": token_hash,
        "used_at": Bson::Null,
        "expires_at": { "$gt": bson_time(at) },
    }
}

impl From<&User> for UserDocument {
    fn from(user: &User) -> Self {
        Self {
            id: user.id.object_id(),
            name: user.name.as_str().to_owned(),
            name_key: Some(name_key(user.name.as_str())),
            username: user.username.as_ref().map(|u| u.as_str().to_owned()),
            username_key: user.username.as_ref().map(Username::key),
            email: user.email.as_str().to_owned(),
            role: stored_role(user.role).to_owned(),
            active: user.active,
            password_hash: user.password_hash.clone(),
            created_at: bson_time(user.created_at),
            updated_at: bson_time(user.updated_at),
            last_login_at: user.last_login_at.map(bson_time),
            locked_until: user.locked_until.map(bson_time),
            email_verified: user.email_verified,
            mfa_enabled: user.mfa_enabled,
            password_changed_at: bson_time(user.password_changed_at),
        }
    }
}

impl TryFrom<UserDocument> for User {
    type Error = StorageError;

    fn try_from(doc: UserDocument) -> Result<Self, Self::Error> {
        Ok(User {
            id: doc.id.into(),
            name: DisplayName::parse(&doc.name).map_err(StorageError::internal)?,
            username: doc
                .username
                .as_deref()
                .map(Username::parse)
                .transpose()
                .map_err(StorageError::internal)?,
            email: Email::parse(&doc.email).map_err(StorageError::internal)?,
            role: role_from_stored(&doc.role)?,
            active: doc.active,
            password_hash: doc.password_hash,
            created_at: doc.created_at.to_time_0_3(),
            updated_at: doc.updated_at.to_time_0_3(),
            last_login_at: doc.last_login_at.map(BsonDateTime::to_time_0_3),
            locked_until: doc.locked_until.map(BsonDateTime::to_time_0_3),
            email_verified: doc.email_verified,
            mfa_enabled: doc.mfa_enabled,
            password_changed_at: doc.password_changed_at.to_time_0_3(),
        })
    }
}

/// The projection of every ordinary user read: everything but the MFA secrets.
/// The user's sessions that have not ended and are unexpired at `at`.
fn live_sessions_of(user_id: &UserId, at: OffsetDateTime) -> Document {
    doc! {
        "user_id": user_id.object_id(),
        "ended_at": Bson::Null,
        "expires_at": { "$gt": bson_time(at) },
    }
}

fn without_secrets() -> Document {
    doc! { "mfa": 0 }
}

fn parse_ip(ip: Option<String>) -> StorageResult<Option<std::net::IpAddr>> {
    ip.map(|ip| ip.parse().map_err(StorageError::internal))
        .transpose()
}

impl From<&Session> for SessionDocument {
    fn from(session: &Session) -> Self {
        Self {
            id: session.id.as_str().to_owned(),
            user_id: session.user_id.object_id(),
            created_at: bson_time(session.created_at),
            last_used_at: bson_time(session.last_used_at),
            expires_at: bson_time(session.expires_at),
            ip: session.origin.ip.map(|ip| ip.to_string()),
            user_agent: session.origin.user_agent.clone(),
            ended_at: None,
        }
    }
}

impl TryFrom<SessionDocument> for Session {
    type Error = StorageError;

    fn try_from(doc: SessionDocument) -> Result<Self, Self::Error> {
        Ok(Session {
            id: SessionId::parse(&doc.id).map_err(StorageError::internal)?,
            user_id: doc.user_id.into(),
            created_at: doc.created_at.to_time_0_3(),
            last_used_at: doc.last_used_at.to_time_0_3(),
            expires_at: doc.expires_at.to_time_0_3(),
            origin: Origin {
                ip: parse_ip(doc.ip)?,
                user_agent: doc.user_agent,
            },
        })
    }
}

/// A TOTP time step as BSON's signed integers hold it.
fn stored_step(step: u64) -> StorageResult<i64> {
    i64::try_from(step).map_err(StorageError::internal)
}

/// Plain JSON as BSON, value for value: no extended-JSON keys are interpreted, so what
/// [`bson_to_json`] gives back is what was given. Integers become `Int64` (those beyond it,
/// doubles).
fn json_to_bson(value: &serde_json::Value) -> Bson {
    use serde_json::Value;
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Bson::Int64(i),
            None => Bson::Double(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(json_to_bson).collect()),
        Value::Object(map) => Bson::Document(json_map_to_document(map)),
    }
}

fn json_map_to_document(map: &EventDetails) -> Document {
    map.iter()
        .map(|(key, value)| (key.clone(), json_to_bson(value)))
        .collect()
}

/// The inverse of [`json_to_bson`]; BSON types plain JSON lacks come back as relaxed
/// extended JSON.
fn bson_to_json(value: Bson) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Bson::Null => Value::Null,
        Bson::Boolean(b) => Value::Bool(b),
        Bson::Int32(i) => Value::from(i),
        Bson::Int64(i) => Value::from(i),
        Bson::Double(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Bson::String(s) => Value::String(s),
        Bson::Array(items) => Value::Array(items.into_iter().map(bson_to_json).collect()),
        Bson::Document(document) => Value::Object(document_to_json_map(document)),
        other => other.into_relaxed_extjson(),
    }
}

fn document_to_json_map(document: Document) -> EventDetails {
    document
        .into_iter()
        .map(|(key, value)| (key, bson_to_json(value)))
        .collect()
}

impl From<&AuditEvent> for AuditEventDocument {
    fn from(event: &AuditEvent) -> Self {
        Self {
            id: event.id.object_id(),
            at: bson_time(event.at),
            kind: event.kind.as_str().to_owned(),
            actor_id: event.actor_id.map(|id| id.object_id()),
            subject_id: event.subject_id.map(|id| id.object_id()),
            ip: event.origin.ip.map(|ip| ip.to_string()),
            user_agent: event.origin.user_agent.clone(),
            details: json_map_to_document(&event.details),
        }
    }
}

impl TryFrom<AuditEventDocument> for AuditEvent {
    type Error = StorageError;

    fn try_from(doc: AuditEventDocument) -> Result<Self, Self::Error> {
        Ok(AuditEvent {
            id: EventId::from(doc.id),
            at: doc.at.to_time_0_3(),
            kind: EventKind::parse(&doc.kind).map_err(StorageError::internal)?,
            actor_id: doc.actor_id.map(UserId::from),
            subject_id: doc.subject_id.map(UserId::from),
            origin: Origin {
                ip: parse_ip(doc.ip)?,
                user_agent: doc.user_agent,
            },
            details: document_to_json_map(doc.details),
        })
    }
}

/// The filter of an audit listing, without its keyset position.
fn audit_filter_document(filter: &AuditFilter) -> Document {
    let mut document = Document::new();
    if let Some(id) = filter.user_id {
        document.insert(
            "$or",
            vec![
                doc! { "actor_id": id.object_id() },
                doc! { "subject_id": id.object_id() },
            ],
        );
    }
    if let Some(id) = filter.subject_id {
        document.insert("subject_id", id.object_id());
    }
    if let Some(kind) = filter.kind {
        document.insert("type", kind.as_str());
    }
    let mut at = Document::new();
    if let Some(since) = filter.since {
        at.insert("$gte", bson_time(since));
    }
    if let Some(until) = filter.until {
        at.insert("$lt", bson_time(until));
    }
    if !at.is_empty() {
        document.insert("at", at);
    }
    document
}

/// `filter` narrowed to the events strictly after `(at, id)` in the listing's order
/// (newest first, by time then id).
fn after_position(mut filter: Document, (at, id): (OffsetDateTime, EventId)) -> Document {
    let at = bson_time(at);
    let keyset = vec![
        doc! { "at": { "$lt": at } },
        doc! { "at": at, "_id": { "$lt": id.object_id() } },
    ];
    match filter.remove("$or") {
        Some(or) => {
            filter.insert("$and", vec![doc! { "$or": or }, doc! { "$or": keyset }]);
        }
        None => {
            filter.insert("$or", keyset);
        }
    }
    filter
}

/// What a MongoDB error means here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Diagnosis {
    /// A unique index refused the write; `None` when the server did not say which one.
    Duplicate(Option<UniqueField>),
    /// A transient conflict with another write: trying again may succeed at once.
    Conflict,
    Unavailable,
    Internal,
}

fn diagnose(error: &mongodb::error::Error) -> Diagnosis {
    let duplicate_message = match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) if e.code == DUPLICATE_KEY => {
            Some(e.message.as_str())
        }
        ErrorKind::Command(e) if e.code == DUPLICATE_KEY => Some(e.message.as_str()),
        _ => None,
    };
    if let Some(message) = duplicate_message {
        let key_pattern = error
            .server_response()
            .and_then(|raw| raw.to_document().ok())
            .and_then(|response| key_pattern(&response));
        return Diagnosis::Duplicate(duplicate_field(message, key_pattern.as_ref()));
    }
    let conflict_code = match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == WRITE_CONFLICT,
        ErrorKind::Command(e) => e.code == WRITE_CONFLICT,
        _ => false,
    };
    // Only a write the server refused is tried again. Not one labelled `RetryableWriteError`:
    // the driver labels network errors so, whose write may have landed, after its own retry
    // (under the same transaction number, so applied once) failed too; a second, new write
    // could count an attempt twice or spend a token and then find it spent.
    if conflict_code || error.contains_label("TransientTransactionError") {
        return Diagnosis::Conflict;
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
    if transient {
        Diagnosis::Unavailable
    } else {
        Diagnosis::Internal
    }
}

impl From<mongodb::error::Error> for StorageError {
    fn from(error: mongodb::error::Error) -> Self {
        match diagnose(&error) {
            Diagnosis::Duplicate(Some(field)) => StorageError::Duplicate(field),
            // User writes attribute these themselves (`MongoRepository::explain`); elsewhere
            // a duplicate key is a bug.
            Diagnosis::Duplicate(None) | Diagnosis::Internal => {
                StorageError::Internal(error.into())
            }
            // Still in conflict after the retries: the database is too busy right now.
            Diagnosis::Conflict | Diagnosis::Unavailable => StorageError::Unavailable(error.into()),
        }
    }
}

/// The server's error code, when it answered a command with one.
fn command_code(error: &mongodb::error::Error) -> Option<i32> {
    match error.kind.as_ref() {
        ErrorKind::Command(e) => Some(e.code),
        _ => None,
    }
}

/// Why an operation failed.
#[derive(Debug)]
enum Failure {
    Server(mongodb::error::Error),
    TimedOut,
}

impl From<Failure> for StorageError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Server(error) => error.into(),
            Failure::TimedOut => StorageError::Unavailable(anyhow::anyhow!(
                "MongoDB did not answer within {OPERATION_TIMEOUT:?}"
            )),
        }
    }
}

/// Runs one operation within [`OPERATION_TIMEOUT`], trying it again after a short random
/// pause when it met a write conflict. A duplicate found on a later try is reported as such.
async fn run<T, F, Fut>(mut operation: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = mongodb::error::Result<T>>,
{
    let tries = async {
        let mut attempt = 0;
        loop {
            match operation().await {
                Err(error)
                    if diagnose(&error) == Diagnosis::Conflict && attempt < CONFLICT_RETRIES =>
                {
                    attempt += 1;
                    pause(attempt).await;
                }
                result => return result.map_err(Failure::Server),
            }
        }
    };
    tokio::time::timeout(OPERATION_TIMEOUT, tries)
        .await
        .unwrap_or(Err(Failure::TimedOut))
}

/// The outcome of inserting a document under a fresh random id: a duplicate can only be an
/// earlier try of this very insert that landed though its answer was lost.
fn inserted<T>(result: Result<T, Failure>) -> StorageResult<()> {
    match result {
        Ok(_) => Ok(()),
        Err(Failure::Server(error)) if matches!(diagnose(&error), Diagnosis::Duplicate(_)) => {
            Ok(())
        }
        Err(failure) => Err(failure.into()),
    }
}

/// A random pause that grows with `attempt`, so that competing writers drift apart.
async fn pause(attempt: u32) {
    let ceiling = 10 * u64::from(attempt.min(6)) + 10;
    tokio::time::sleep(Duration::from_millis(rand::random_range(5..ceiling))).await;
}

/// The `keyPattern` of a duplicate-key answer: at the top of a command's answer
/// (`findAndModify`), or in its first write error (`insert`, `update`).
fn key_pattern(response: &Document) -> Option<Document> {
    if let Ok(pattern) = response.get_document("keyPattern") {
        return Some(pattern.clone());
    }
    let first = response
        .get_array("writeErrors")
        .ok()?
        .first()?
        .as_document()?;
    first.get_document("keyPattern").ok().cloned()
}

/// Which unique field a duplicate-key error is about, from what the server told: the
/// indexed field (`keyPattern`), or else the index name in its message, as MongoDB writes it
/// (`... index: email_unique dup key: { ... }`) or as DocumentDB, Cosmos DB vCore and
/// FerretDB write it (`... Index 'email_unique'`). Only the index name counts, never the
/// duplicated value that may follow it. `None` when neither says.
fn duplicate_field(message: &str, key_pattern: Option<&Document>) -> Option<UniqueField> {
    let by_name = |name: &str| {
        if name == USERNAME_INDEX || name.contains("username") {
            Some(UniqueField::Username)
        } else if name == EMAIL_INDEX || name.contains("email") {
            Some(UniqueField::Email)
        } else {
            None
        }
    };
    if let Some(field) = key_pattern.and_then(|pattern| pattern.keys().find_map(|key| by_name(key)))
    {
        return Some(field);
    }
    let index_name = if let Some((_, rest)) = message.split_once(" index: ") {
        rest.split_whitespace().next()
    } else if let Some((_, rest)) = message.split_once("Index '") {
        rest.split('\'').next()
    } else {
        None
    };
    index_name.and_then(by_name)
}

/// The unique values a patch sets, for [`MongoRepository::explain`].
fn patched_unique_values(patch: &UserPatch) -> (Option<&Email>, Option<&Username>) {
    let mut email = None;
    let mut username = None;
    for field in patch.fields() {
        match field {
            UserField::Email(e) => email = Some(e),
            UserField::Username(u) => username = u.as_ref(),
            _ => {}
        }
    }
    (email, username)
}

/// A name as `q` searches it: lower-cased as Rust does it (and SQLite's index, and the
/// conformance suite). A case-insensitive regular expression would fold one character at
/// a time, and miss a letter whose lower case is longer ("İ" is "i̇").
fn name_key(name: &str) -> String {
    name.to_lowercase()
}

/// The users the unique index on `username_key` holds: those with a username, whose key is
/// a string (the others store null). A comparison holds only between values of one type, so
/// `$gte: ""` is every string; DocumentDB takes no `$type` in an index's filter, only
/// equality, `$exists` and comparisons.
fn stored_username() -> Document {
    doc! { "$gte": "" }
}

/// The condition on `username_key` of a look-up by username. It names the index's
/// condition too: MongoDB uses a partial index only for a query that implies its filter,
/// and DocumentDB only for one that states it.
fn username_key(username: &Username) -> Document {
    let mut condition = doc! { "$eq": username.key() };
    condition.extend(stored_username());
    condition
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
        // Each field in lower case (an address is stored so, a username's key is its ASCII
        // lower case), searched for `q` in lower case: case ignored exactly as SQLite does.
        let pattern = doc! { "$regex": regex_escape(&q.to_lowercase()) };
        document.insert(
            "$or",
            vec![
                doc! { "name_key": pattern.clone() },
                doc! { "email": pattern.clone() },
                doc! { "username_key": pattern },
            ],
        );
    }
    if let Some(role) = filter.role {
        document.insert("role", stored_role(role));
    }
    match filter.active {
        Some(active) => document.insert("active", active),
        // A role alone: both states named, so that MongoDB walks the role's two ranges of a
        // (role, active, key) index and merges them in order, instead of sorting its users.
        None if filter.role.is_some() => document.insert("active", doc! { "$in": [false, true] }),
        None => None,
    };
    document
}

/// The `$set` of a patch: one entry per field, as the patch lists them.
fn set_document(patch: &UserPatch) -> Document {
    let mut set = Document::new();
    for field in patch.fields() {
        match field {
            UserField::Name(name) => {
                set.insert("name_key", name_key(name.as_str()));
                set.insert("name", name.as_str())
            }
            UserField::Username(username) => {
                set.insert("username", username.as_ref().map(Username::as_str));
                set.insert("username_key", username.as_ref().map(Username::key))
            }
            UserField::Email(email) => set.insert("email", email.as_str()),
            UserField::Role(role) => set.insert("role", stored_role(*role)),
            UserField::Active(active) => set.insert("active", *active),
            UserField::PasswordHash(hash) => set.insert("password_hash", hash.as_str()),
            UserField::PasswordChangedAt(at) => set.insert("password_changed_at", bson_time(*at)),
            UserField::UpdatedAt(at) => set.insert("updated_at", bson_time(*at)),
            UserField::LastLoginAt(at) => set.insert("last_login_at", bson_time(*at)),
            UserField::LockedUntil(until) => set.insert("locked_until", until.map(bson_time)),
            UserField::EmailVerified(verified) => set.insert("email_verified", *verified),
        };
    }
    set
}

/// A filter matching the user's document only while every stored field is as in `user`
/// (fields absent from older documents count as their defaults).
fn as_read(user: &User) -> Document {
    let stored = UserDocument::from(user);
    let flag = |on: bool| {
        if on {
            Bson::Boolean(true)
        } else {
            Bson::Document(doc! { "$ne": true })
        }
    };
    doc! {
        "_id": stored.id,
        "name": stored.name,
        "username": stored.username,
        "email": stored.email,
        "role": stored.role,
        "active": stored.active,
        "password_hash": stored.password_hash,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "last_login_at": stored.last_login_at,
        "password_changed_at": stored.password_changed_at,
        "locked_until": stored.locked_until,
        "email_verified": flag(stored.email_verified),
        "mfa_enabled": flag(stored.mfa_enabled),
    }
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
    sessions: Collection<SessionDocument>,
    mfa_challenges: Collection<MfaChallengeDocument>,
    audit_events: Collection<AuditEventDocument>,
    reset_tokens: Collection<ResetTokenDocument>,
    login_attempts: Collection<LoginAttemptsDocument>,
    verification_tokens: Collection<VerificationTokenDocument>,
    /// `{_id: "kind address", sent_at, expires_at}`: when a mail of a kind last went to an
    /// address. A TTL index removes it once the throttle window is over.
    mail_log: Collection<Document>,
}

/// Users who hold the admin role and are active.
fn active_admins() -> Document {
    doc! { "role": stored_role(Role::Admin), "active": true }
}

/// Users whom no removal in progress has reserved (or whose reservation was abandoned).
fn unreserved(now: OffsetDateTime) -> Document {
    doc! { "$or": [
        { "admin_removal": { "$exists": false } },
        { "admin_removal.at": { "$lt": bson_time(now - ADMIN_RESERVATION_TTL) } },
    ] }
}

impl MongoRepository {
    /// Connects, waiting up to `startup_timeout` for the server (and, for `mongodb+srv`,
    /// its DNS records), and creates the indexes: among them the TTL index that removes
    /// audit events older than `audit_retention`.
    pub async fn connect(
        url: &str,
        database: &str,
        startup_timeout: Duration,
        audit_retention: Duration,
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
        // Every read goes to the primary, whatever the URL asks: the session a login just
        // wrote, or a refresh token just spent, must be seen by the next read.
        options.selection_criteria = Some(ReadPreference::Primary.into());
        let client = Client::with_options(options)?;
        let db = client.database(database);
        let repository = Self {
            users: db.collection("users"),
            refresh_tokens: db.collection("refresh_tokens"),
            sessions: db.collection(SESSIONS),
            mfa_challenges: db.collection("mfa_challenges"),
            audit_events: db.collection(AUDIT_EVENTS),
            reset_tokens: db.collection("password_reset_tokens"),
            login_attempts: db.collection("login_attempts"),
            verification_tokens: db.collection("email_verification_tokens"),
            mail_log: db.collection("mail_log"),
            db,
        };
        retry_until(deadline, "MongoDB", || repository.ping()).await?;
        // Sessions replaced the refresh-token families of earlier versions, whose tokens name
        // no session and so are revoked: upgrading signs everyone out, once.
        repository.create_indexes(audit_retention).await?;
        let filled = repository
            .fill_name_keys(doc! { "name_key": { "$exists": false } })
            .await?;
        if filled > 0 {
            tracing::info!(
                users = filled,
                "stored the lower-cased names that q searches"
            );
        }
        Ok(repository)
    }

    /// Stores anew the `name_key` of every user whose key is missing or no longer their
    /// name's (a rename by an instance of an earlier version, during a rolling upgrade), for
    /// `reindex`. How many it changed.
    pub async fn rebuild_name_keys(&self) -> mongodb::error::Result<u64> {
        self.fill_name_keys(doc! {}).await
    }

    /// Gives the users `among` the [`name_key`] of their name where it is missing or differs
    /// (computed here: MongoDB's `$toLower` folds ASCII only). Written only while the name is
    /// still the one read, so a rename meanwhile keeps its own key; instances doing this
    /// together write the same values. How many it changed.
    async fn fill_name_keys(&self, among: Document) -> mongodb::error::Result<u64> {
        let raw = self.users.clone_with_type::<Document>();
        let mut users = raw
            .find(among)
            .projection(doc! { "name": 1, "name_key": 1 })
            .await?;
        let mut filled = 0;
        while let Some(user) = users.try_next().await? {
            let (Ok(id), Ok(name)) = (user.get_object_id("_id"), user.get_str("name")) else {
                continue;
            };
            let key = name_key(name);
            if user.get_str("name_key") == Ok(key.as_str()) {
                continue;
            }
            let unchanged = doc! { "_id": id, "name": name };
            let set = doc! { "$set": { "name_key": key } };
            filled += raw.update_one(unchanged, set).await?.modified_count;
        }
        Ok(filled)
    }

    /// Creating an index that already exists with the same options is a no-op.
    async fn create_indexes(&self, audit_retention: Duration) -> mongodb::error::Result<()> {
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
                // One index per sort (a B-tree serves both directions), and per sort under
                // the role and active filters, so that every page is an index walk.
                named(doc! { "created_at": -1, "_id": -1 }, "created_at_desc"),
                named(doc! { "name": 1, "_id": 1 }, "name_id"),
                named(doc! { "email": 1, "_id": 1 }, "email_id"),
                named(
                    doc! { "role": 1, "active": 1, "created_at": -1, "_id": -1 },
                    "role_active_created_at",
                ),
                named(
                    doc! { "role": 1, "active": 1, "name": 1, "_id": 1 },
                    "role_active_name",
                ),
                named(
                    doc! { "role": 1, "active": 1, "email": 1, "_id": 1 },
                    "role_active_email",
                ),
                named(
                    doc! { "active": 1, "created_at": -1, "_id": -1 },
                    "active_created_at",
                ),
                named(doc! { "active": 1, "name": 1, "_id": 1 }, "active_name"),
                named(doc! { "active": 1, "email": 1, "_id": 1 }, "active_email"),
            ])
            .await?;
        self.username_index(unique(
            doc! { "username_key": 1 },
            USERNAME_INDEX,
            Some(doc! { "username_key": stored_username() }),
        ))
        .await?;
        self.refresh_tokens
            .create_indexes([
                named(doc! { "session_id": 1 }, "session_id"),
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.sessions
            .create_indexes([
                named(doc! { "user_id": 1, "created_at": -1 }, "user_created_at"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.mfa_challenges
            .create_indexes([
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.audit_events
            .create_indexes([
                named(doc! { "at": -1, "_id": -1 }, "at_desc"),
                named(doc! { "actor_id": 1, "at": -1, "_id": -1 }, "actor_at_desc"),
                named(
                    doc! { "subject_id": 1, "at": -1, "_id": -1 },
                    "subject_at_desc",
                ),
                named(doc! { "type": 1, "at": -1, "_id": -1 }, "type_at_desc"),
            ])
            .await?;
        self.audit_ttl_index(audit_retention).await?;
        self.login_attempts
            .create_index(expiring("expires_at_ttl"))
            .await?;
        self.verification_tokens
            .create_indexes([
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.mail_log
            .create_index(expiring("expires_at_ttl"))
            .await?;
        self.reset_tokens
            .create_indexes([
                named(doc! { "user_id": 1 }, "user_id"),
                expiring("expires_at_ttl"),
            ])
            .await?;
        self.idempotency_keys()
            .create_indexes([
                unique(doc! { "scope": 1, "key": 1 }, "scope_key_unique", None),
                expiring("expires_at_ttl"),
            ])
            .await?;
        Ok(())
    }

    /// Makes the unique username index, then drops the one of earlier versions, so that
    /// usernames stay unique throughout (MongoDB 5.0 and later keep two indexes of one key
    /// whose filters differ). A server that keeps one index per key refuses the new one
    /// while the old stands (85 or 86): the old one goes first there, leaving usernames
    /// unchecked while the new one is built, once.
    async fn username_index(&self, index: IndexModel) -> mongodb::error::Result<()> {
        match self.users.create_index(index.clone()).await {
            Ok(_) => self.drop_old_username_index().await,
            Err(error)
                if command_code(&error)
                    .is_some_and(|code| INDEX_CONFLICT_CODES.contains(&code)) =>
            {
                self.drop_old_username_index().await?;
                self.users.create_index(index).await.map(drop)
            }
            Err(error) => Err(error),
        }
    }

    /// Drops the unique username index of earlier versions where the collection has it.
    /// Another instance starting at once may drop it first.
    async fn drop_old_username_index(&self) -> mongodb::error::Result<()> {
        let names = self.users.list_index_names().await?;
        if !names.iter().any(|name| name == OLD_USERNAME_INDEX) {
            return Ok(());
        }
        match self.users.drop_index(OLD_USERNAME_INDEX).await {
            Ok(()) => {
                tracing::info!(
                    index = OLD_USERNAME_INDEX,
                    "dropped the unique username index of an earlier version"
                );
                Ok(())
            }
            Err(error) if command_code(&error) == Some(INDEX_NOT_FOUND) => Ok(()),
            Err(error) => Err(error),
        }
    }

    fn idempotency_keys(&self) -> Collection<Document> {
        self.db.collection(IDEMPOTENCY_KEYS)
    }

    /// The TTL index that removes audit events `retention` after they happened (MongoDB
    /// takes at most `i32::MAX` seconds). When the retention was changed since the index was
    /// made, MongoDB refuses to make it again: the existing one is changed in place.
    async fn audit_ttl_index(&self, retention: Duration) -> mongodb::error::Result<()> {
        let seconds = i32::try_from(retention.as_secs()).unwrap_or(i32::MAX);
        let index = IndexModel::builder()
            .keys(doc! { "at": 1 })
            .options(
                IndexOptions::builder()
                    .name(AUDIT_TTL_INDEX.to_owned())
                    .expire_after(Duration::from_secs(seconds.unsigned_abs().into()))
                    .build(),
            )
            .build();
        match self.audit_events.create_index(index).await {
            Ok(_) => Ok(()),
            Err(error)
                if command_code(&error)
                    .is_some_and(|code| INDEX_CONFLICT_CODES.contains(&code)) =>
            {
                tracing::info!(seconds, "changing the retention of the audit log");
                self.db
                    .run_command(doc! {
                        "collMod": AUDIT_EVENTS,
                        "index": { "name": AUDIT_TTL_INDEX, "expireAfterSeconds": seconds },
                    })
                    .await?;
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    /// One conditional update of a user's document: what it matched and changed.
    async fn update_user_document(
        &self,
        filter: Document,
        update: Document,
    ) -> StorageResult<mongodb::results::UpdateResult> {
        Ok(run(|| {
            self.users
                .update_one(filter.clone(), update.clone())
                .into_future()
        })
        .await?)
    }

    /// A failed write of user `id` as a storage error. A duplicate the server did not
    /// attribute to an index is attributed by asking which of the unique values written is
    /// held by another user.
    async fn explain(
        &self,
        error: mongodb::error::Error,
        id: UserId,
        email: Option<&Email>,
        username: Option<&Username>,
    ) -> StorageError {
        if diagnose(&error) != Diagnosis::Duplicate(None) {
            return error.into();
        }
        let others = doc! { "$ne": id.object_id() };
        let mut candidates = Vec::new();
        if let Some(email) = email {
            candidates.push((
                UniqueField::Email,
                doc! { "email": email.as_str(), "_id": others.clone() },
            ));
        }
        if let Some(username) = username {
            candidates.push((
                UniqueField::Username,
                doc! { "username_key": username_key(username), "_id": others },
            ));
        }
        for (field, filter) in &candidates {
            let users = self.users.clone_with_type::<Document>();
            let held = run(|| {
                users
                    .find_one(filter.clone())
                    .projection(doc! { "_id": 1 })
                    .into_future()
            })
            .await;
            match held {
                Ok(Some(_)) => return StorageError::Duplicate(*field),
                Ok(None) => {}
                Err(e) => return e.into(),
            }
        }
        // The holder is gone already (deleted since); the write was still refused for it.
        match candidates.first() {
            Some((field, _)) => StorageError::Duplicate(*field),
            None => StorageError::Internal(error.into()),
        }
    }

    /// The stored refresh token with this hash, if there is one.
    async fn find_refresh_token(
        &self,
        token_hash: &str,
    ) -> StorageResult<Option<RefreshTokenDocument>> {
        Ok(run(|| {
            self.refresh_tokens
                .find_one(doc! { "_id": token_hash })
                .into_future()
        })
        .await?)
    }

    /// What a stored refresh token is, as found (`spent_at` as it was before any change).
    async fn refresh_token_state(
        &self,
        found: Option<RefreshTokenDocument>,
    ) -> StorageResult<RefreshTokenUse> {
        let Some(token) = found else {
            return Ok(RefreshTokenUse::Unknown);
        };
        if self.session_ended(&token.session_id).await? {
            return Ok(RefreshTokenUse::Revoked);
        }
        let session_id = SessionId::parse(&token.session_id).map_err(StorageError::internal)?;
        Ok(match token.spent_at {
            Some(_) => RefreshTokenUse::Replayed {
                session_id,
                user_id: token.user_id.into(),
            },
            None => RefreshTokenUse::Live(RefreshTokenRecord {
                session_id,
                token_hash: token.token_hash,
                user_id: token.user_id.into(),
                created_at: token.created_at.to_time_0_3(),
                expires_at: token.expires_at.to_time_0_3(),
            }),
        })
    }

    /// Whether the session has ended, or is gone (expired and removed, or never was).
    async fn session_ended(&self, session_id: &str) -> StorageResult<bool> {
        let session = run(|| {
            self.sessions
                .find_one(doc! { "_id": session_id })
                .into_future()
        })
        .await?;
        Ok(session.is_none_or(|session| session.ended_at.is_some()))
    }

    async fn find_user(&self, filter: Document) -> StorageResult<Option<User>> {
        run(|| {
            self.users
                .find_one(filter.clone())
                .projection(without_secrets())
                .into_future()
        })
        .await?
        .map(User::try_from)
        .transpose()
    }

    /// Updates user `id` with `patch` where `filter` matches; `None` when it did not.
    async fn update_where(
        &self,
        id: &UserId,
        filter: Document,
        patch: &UserPatch,
    ) -> StorageResult<Option<User>> {
        // A reservation made for this write (see `remove_admin`) ends with it.
        let update = doc! { "$set": set_document(patch), "$unset": { "admin_removal": "" } };
        let updated = run(|| {
            self.users
                .find_one_and_update(filter.clone(), update.clone())
                .projection(without_secrets())
                .return_document(ReturnDocument::After)
                .into_future()
        })
        .await;
        match updated {
            Ok(found) => found.map(User::try_from).transpose(),
            Err(Failure::Server(error)) => {
                let (email, username) = patched_unique_values(patch);
                Err(self.explain(error, *id, email, username).await)
            }
            Err(failure) => Err(failure.into()),
        }
    }

    /// Deletes user `id` where `filter` matches (their MFA state with them), then their
    /// sessions and tokens; `false` when it did not.
    async fn delete_where(&self, id: &UserId, filter: Document) -> StorageResult<bool> {
        let deleted = run(|| self.users.delete_one(filter.clone()).into_future()).await?;
        if deleted.deleted_count == 0 {
            return Ok(false);
        }
        let owned = doc! { "user_id": id.object_id() };
        run(|| self.refresh_tokens.delete_many(owned.clone()).into_future()).await?;
        run(|| self.sessions.delete_many(owned.clone()).into_future()).await?;
        run(|| self.mfa_challenges.delete_many(owned.clone()).into_future()).await?;
        run(|| self.reset_tokens.delete_many(owned.clone()).into_future()).await?;
        run(|| {
            self.verification_tokens
                .delete_many(owned.clone())
                .into_future()
        })
        .await?;
        Ok(true)
    }

    /// After a guarded write that matched nothing, with no admin reservation involved:
    /// [`StorageError::Changed`] when the user is there (so not as read), `Ok` when gone.
    async fn not_as_read(&self, id: &UserId) -> StorageResult<()> {
        match self.user_by_id(id).await? {
            Some(_) => Err(StorageError::Changed),
            None => Ok(()),
        }
    }

    /// After a guarded write under [`MongoRepository::remove_admin`] matched nothing:
    /// [`StorageError::Changed`] when the user is there but no longer as read; `Ok` when
    /// they are gone or still as read (the write missed for the admin rule, which
    /// `remove_admin` goes on with).
    async fn check_as_read(&self, id: &UserId, expected: &User) -> StorageResult<()> {
        match self.user_by_id(id).await? {
            Some(user) if user != *expected => Err(StorageError::Changed),
            _ => Ok(()),
        }
    }

    /// A write (`apply`, given the filter to write under) that may take user `id` out of
    /// the active admins, made only if another active admin remains. With no transactions
    /// (none need a replica set), by reservation on the user's own document:
    /// 1. if they are not an active admin, write on that condition, and be done;
    /// 2. else reserve them (`admin_removal`), unless another removal holds them;
    /// 3. count the active admins nobody has reserved, others than them: none, refuse;
    /// 4. write on the condition that the reservation still holds, which ends it.
    ///
    /// Of two removals racing for the last two admins each reserves its own, so each sees
    /// the other reserved and at most one goes ahead: there is always an admin left, for
    /// any number of processes. `None` when there is no such user.
    async fn remove_admin<T, F, Fut>(&self, id: &UserId, mut apply: F) -> StorageResult<Option<T>>
    where
        F: FnMut(Document) -> Fut,
        Fut: std::future::Future<Output = StorageResult<Option<T>>>,
    {
        let oid = id.object_id();
        let raw_users = self.users.clone_with_type::<Document>();
        for attempt in 1..=ADMIN_ATTEMPTS {
            if let Some(done) = apply(doc! { "_id": oid, "$nor": [active_admins()] }).await? {
                return Ok(Some(done));
            }
            let now = domain::now();
            let token = ObjectId::new();
            let mut reservable = active_admins();
            reservable.insert("_id", oid);
            reservable.extend(unreserved(now));
            let reservation = doc! { "$set": {
                "admin_removal": { "token": token, "at": bson_time(now) },
            } };
            let reserved = run(|| {
                raw_users
                    .update_one(reservable.clone(), reservation.clone())
                    .into_future()
            })
            .await?;
            if reserved.matched_count == 0 {
                // Gone, or no longer an admin (step 1 will see), or another removal holds them.
                if self.find_user(doc! { "_id": oid }).await?.is_none() {
                    return Ok(None);
                }
                pause(attempt).await;
                continue;
            }
            let mut others = active_admins();
            others.insert("_id", doc! { "$ne": oid });
            others.extend(unreserved(now));
            let left = run(|| {
                raw_users
                    .count_documents(others.clone())
                    .limit(1)
                    .into_future()
            })
            .await;
            // Only while the reservation is ours and, by our own clock, not yet abandoned.
            let held = doc! {
                "_id": oid,
                "admin_removal.token": token,
                "admin_removal.at": { "$gt": bson_time(domain::now() - ADMIN_RESERVATION_TTL) },
            };
            let outcome = match left {
                Ok(0) => Err(StorageError::LastActiveAdmin),
                Ok(_) => apply(held).await,
                Err(failure) => Err(failure.into()),
            };
            match outcome {
                Ok(Some(done)) => return Ok(Some(done)),
                Ok(None) => {}
                Err(error) => {
                    // A removal that did not happen (the last admin, a taken address, a
                    // version changed meanwhile, the database) gives its reservation back
                    // now: until it lapses, neither this admin nor the others could go.
                    let release = doc! { "_id": oid, "admin_removal.token": token };
                    let released = run(|| {
                        raw_users
                            .update_one(release.clone(), doc! { "$unset": { "admin_removal": "" } })
                            .into_future()
                    })
                    .await;
                    if let Err(failure) = released {
                        tracing::warn!(?failure, "an admin's reservation is left to lapse");
                    }
                    return Err(error);
                }
            }
        }
        Err(StorageError::Unavailable(anyhow::anyhow!(
            "removing an admin met competing removals {ADMIN_ATTEMPTS} times"
        )))
    }
}

#[async_trait]
impl Repository for MongoRepository {
    async fn ping(&self) -> StorageResult<()> {
        run(|| self.db.run_command(doc! { "ping": 1 }).into_future()).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StorageResult<()> {
        let document = UserDocument::from(user);
        match run(|| self.users.insert_one(&document).into_future()).await {
            Ok(_) => Ok(()),
            // A try whose answer was lost had landed: the retry found its own fresh id taken.
            Err(Failure::Server(error))
                if matches!(diagnose(&error), Diagnosis::Duplicate(_))
                    && self.user_by_id(&user.id).await?.is_some() =>
            {
                Ok(())
            }
            Err(Failure::Server(error)) => Err(self
                .explain(error, user.id, Some(&user.email), user.username.as_ref())
                .await),
            Err(failure) => Err(failure.into()),
        }
    }

    async fn import_users(&self, users: &[User]) -> StorageResult<Vec<Imported>> {
        // Users whose id or email is stored already are left alone...
        let ids: Vec<ObjectId> = users.iter().map(|u| u.id.object_id()).collect();
        let emails: Vec<&str> = users.iter().map(|u| u.email.as_str()).collect();
        let filter = doc! { "$or": [{ "_id": { "$in": &ids } }, { "email": { "$in": &emails } }] };
        let stored: Vec<Document> = run(|| async {
            self.users
                .clone_with_type::<Document>()
                .find(filter.clone())
                .projection(doc! { "_id": 1, "email": 1 })
                .await?
                .try_collect()
                .await
        })
        .await?;
        let exists = |user: &User| {
            stored.iter().any(|d| {
                d.get_object_id("_id").ok() == Some(user.id.object_id())
                    || d.get_str("email").ok() == Some(user.email.as_str())
            })
        };
        // ...the others go in one unordered batch, in which a refused one stops no other. An
        // unordered batch may be applied in any order, so it holds only lines that share no
        // id, email or username with an earlier line; those few are tried one by one after
        // it, in order, which gives each line the outcome it would have had alone.
        let mut seen = std::collections::HashSet::new();
        let batched: Vec<bool> = users
            .iter()
            .map(|user| {
                let keys = [
                    Some(user.id.to_hex()),
                    Some(format!("email:{}", user.email.as_str())),
                    user.username
                        .as_ref()
                        .map(|u| format!("username:{}", u.key())),
                ];
                let first = keys.iter().flatten().all(|key| !seen.contains(key));
                seen.extend(keys.into_iter().flatten());
                first && !exists(user)
            })
            .collect();
        let fresh: Vec<UserDocument> = users
            .iter()
            .zip(&batched)
            .filter(|(_, batched)| **batched)
            .map(|(user, _)| UserDocument::from(user))
            .collect();
        if !fresh.is_empty() {
            let inserted = self.users.insert_many(&fresh).ordered(false).await;
            if let Err(error) = inserted
                && !matches!(*error.kind, mongodb::error::ErrorKind::InsertMany(_))
            {
                return Err(Failure::Server(error).into());
            }
        }
        // Each outcome as the database now tells it: the ids now present were created; one
        // refused by a unique index is tried again alone, which names the index as every
        // other write does.
        let fresh_ids: Vec<ObjectId> = fresh.iter().map(|d| d.id).collect();
        let created: Vec<Document> = run(|| async {
            self.users
                .clone_with_type::<Document>()
                .find(doc! { "_id": { "$in": &fresh_ids } })
                .projection(doc! { "_id": 1 })
                .await?
                .try_collect()
                .await
        })
        .await?;
        let mut created: std::collections::HashSet<ObjectId> = created
            .iter()
            .filter_map(|d| d.get_object_id("_id").ok())
            .collect();
        let mut outcomes = Vec::with_capacity(users.len());
        for (user, batched) in users.iter().zip(batched) {
            outcomes.push(if exists(user) {
                Imported::Exists
            } else if batched && created.contains(&user.id.object_id()) {
                Imported::Created
            } else if created.contains(&user.id.object_id()) {
                // An earlier line of this batch had the id.
                Imported::Exists
            } else {
                match self.create_user(user).await {
                    Ok(()) => {
                        created.insert(user.id.object_id());
                        Imported::Created
                    }
                    Err(StorageError::Duplicate(UniqueField::Email)) => Imported::Exists,
                    Err(StorageError::Duplicate(UniqueField::Username)) => Imported::UsernameTaken,
                    Err(e) => return Err(e),
                }
            });
        }
        Ok(outcomes)
    }

    async fn user_by_id(&self, id: &UserId) -> StorageResult<Option<User>> {
        self.find_user(doc! { "_id": id.object_id() }).await
    }

    async fn user_by_email(&self, email: &Email) -> StorageResult<Option<User>> {
        self.find_user(doc! { "email": email.as_str() }).await
    }

    async fn user_by_username(&self, username: &Username) -> StorageResult<Option<User>> {
        self.find_user(doc! { "username_key": username_key(username) })
            .await
    }

    async fn update_user(&self, id: &UserId, patch: &UserPatch) -> StorageResult<Option<User>> {
        if patch.is_empty() {
            return self.user_by_id(id).await;
        }
        if !patch.may_remove_an_admin() {
            return self
                .update_where(id, doc! { "_id": id.object_id() }, patch)
                .await;
        }
        self.remove_admin(id, |filter| async move {
            self.update_where(id, filter, patch).await
        })
        .await
    }

    async fn delete_user(&self, id: &UserId) -> StorageResult<bool> {
        let deleted = self
            .remove_admin(id, |filter| async move {
                Ok(self.delete_where(id, filter).await?.then_some(()))
            })
            .await?;
        Ok(deleted.is_some())
    }

    async fn update_user_if(
        &self,
        id: &UserId,
        patch: &UserPatch,
        expected: &User,
    ) -> StorageResult<Option<User>> {
        let as_read = &as_read(expected);
        if patch.is_empty() {
            return match self.find_user(as_read.clone()).await? {
                Some(user) => Ok(Some(user)),
                None => self.not_as_read(id).await.map(|()| None),
            };
        }
        let guarded = |filter: Document| doc! { "$and": [filter, as_read.clone()] };
        if !patch.may_remove_an_admin() {
            let filter = guarded(doc! { "_id": id.object_id() });
            return match self.update_where(id, filter, patch).await? {
                Some(user) => Ok(Some(user)),
                None => self.not_as_read(id).await.map(|()| None),
            };
        }
        self.remove_admin(id, |filter| {
            let filter = guarded(filter);
            async move {
                match self.update_where(id, filter, patch).await? {
                    Some(user) => Ok(Some(user)),
                    None => self.check_as_read(id, expected).await.map(|()| None),
                }
            }
        })
        .await
    }

    async fn delete_user_if(&self, id: &UserId, expected: &User) -> StorageResult<bool> {
        let as_read = &as_read(expected);
        let deleted = self
            .remove_admin(id, |filter| {
                let filter = doc! { "$and": [filter, as_read.clone()] };
                async move {
                    if self.delete_where(id, filter).await? {
                        return Ok(Some(()));
                    }
                    self.check_as_read(id, expected).await.map(|()| None)
                }
            })
            .await?;
        Ok(deleted.is_some())
    }

    async fn list_users(&self, query: &ListQuery) -> StorageResult<Page<User>> {
        let filter = filter_document(&query.filter);
        let (direction, beyond) = match query.order {
            SortOrder::Ascending => (1, "$gt"),
            SortOrder::Descending => (-1, "$lt"),
        };
        let field = match query.sort {
            SortField::CreatedAt => "created_at",
            SortField::Name => "name",
            SortField::Email => "email",
        };
        // Without a filter the collection's own count (metadata, no scan); with role or
        // active, a count over their index.
        let total = if filter.is_empty() {
            run(|| self.users.estimated_document_count().into_future()).await?
        } else {
            run(|| self.users.count_documents(filter.clone()).into_future()).await?
        };
        let mut page_filter = filter;
        if let Some(after) = &query.after {
            let key = match &after.key {
                SortKey::CreatedAt(at) => Bson::DateTime(bson_time(*at)),
                SortKey::Text(text) => Bson::String(text.clone()),
            };
            let id = after.id.object_id();
            let keyset = doc! { "$or": [
                { field: { beyond: key.clone() } },
                { field: key, "_id": { beyond: id } },
            ] };
            page_filter = doc! { "$and": [page_filter, keyset] };
        }
        let items = run(|| async {
            self.users
                .find(page_filter.clone())
                .projection(without_secrets())
                .sort(doc! { field: direction, "_id": direction })
                .skip(query.offset)
                .limit(i64::from(query.limit))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?
        .into_iter()
        .map(User::try_from)
        .collect::<Result<_, _>>()?;
        Ok(Page { items, total })
    }

    /// Three atomic steps, each safe against the others running at once: a series whose lock
    /// ended, or idle for `lock_for`, starts again; the count goes up by one (`$inc`, so
    /// each attempt gets its own number); the attempt that reached the threshold sets the
    /// lock, once. No pipeline updates or transactions, so compatible servers can run it.
    async fn count_login_attempt(
        &self,
        key: &str,
        at: OffsetDateTime,
        threshold: u32,
        lock_for: Duration,
    ) -> StorageResult<LoginAttempts> {
        let now = bson_time(at);
        let idle_before = bson_time(at - lock_for);
        let later = bson_time(at + lock_for);
        let stale = doc! {
            "_id": key,
            "$or": [
                { "locked_until": { "$lte": now } },
                { "locked_until": Bson::Null, "last_at": { "$lte": idle_before } },
            ],
        };
        let restart = doc! { "$set": { "count": 0_i64, "locked_until": Bson::Null } };
        run(|| {
            self.login_attempts
                .update_one(stale.clone(), restart.clone())
                .into_future()
        })
        .await?;
        let count_one = doc! {
            "$inc": { "count": 1_i64 },
            "$set": { "last_at": now },
            "$max": { "expires_at": later },
        };
        let mut counted = None;
        // Two first attempts may upsert at once: the loser counts again, on the winner's record.
        for _ in 0..3 {
            let attempt = run(|| {
                self.login_attempts
                    .find_one_and_update(doc! { "_id": key }, count_one.clone())
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .into_future()
            })
            .await;
            match attempt {
                Err(Failure::Server(error))
                    if matches!(diagnose(&error), Diagnosis::Duplicate(_)) => {}
                other => {
                    counted = other?;
                    break;
                }
            }
        }
        let Some(counted) = counted else {
            return Err(StorageError::internal(anyhow::anyhow!(
                "an upsert returned nothing"
            )));
        };
        let count = u32::try_from(counted.count).unwrap_or(u32::MAX);
        let mut locked_until = counted.locked_until.map(BsonDateTime::to_time_0_3);
        if count == threshold && locked_until.is_none() {
            let lock = doc! {
                "$set": { "locked_until": later },
                "$max": { "expires_at": later },
            };
            run(|| {
                self.login_attempts
                    .update_one(
                        doc! { "_id": key, "locked_until": Bson::Null },
                        lock.clone(),
                    )
                    .into_future()
            })
            .await?;
            locked_until = Some(later.to_time_0_3());
        }
        Ok(LoginAttempts {
            count,
            locked_until,
        })
    }

    async fn forgive_login_attempt(&self, key: &str, threshold: u32) -> StorageResult<()> {
        // Two steps, each atomic on the record: the lock ends only while the count is below
        // the threshold, so an attempt counted in between that reaches it keeps its lock.
        run(|| {
            self.login_attempts
                .update_one(
                    doc! { "_id": key, "count": { "$gt": 0_i64 } },
                    doc! { "$inc": { "count": -1_i64 } },
                )
                .into_future()
        })
        .await?;
        run(|| {
            self.login_attempts
                .update_one(
                    doc! {
                        "_id": key,
                        "count": { "$lt": i64::from(threshold) },
                        "locked_until": { "$ne": Bson::Null },
                    },
                    doc! { "$set": { "locked_until": Bson::Null } },
                )
                .into_future()
        })
        .await?;
        Ok(())
    }

    async fn clear_login_attempts(&self, key: &str) -> StorageResult<()> {
        run(|| {
            self.login_attempts
                .delete_one(doc! { "_id": key })
                .into_future()
        })
        .await?;
        Ok(())
    }

    async fn login_lock(&self, key: &str) -> StorageResult<Option<OffsetDateTime>> {
        let attempts = run(|| {
            self.login_attempts
                .find_one(doc! { "_id": key })
                .into_future()
        })
        .await?;
        Ok(attempts
            .and_then(|attempts| attempts.locked_until)
            .map(BsonDateTime::to_time_0_3))
    }

    async fn create_session(&self, session: &Session) -> StorageResult<()> {
        let document = SessionDocument::from(session);
        inserted(run(|| self.sessions.insert_one(&document).into_future()).await)
    }

    /// One aggregation: the user, and the session looked up beside them.
    async fn user_with_session(
        &self,
        id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(User, bool)>> {
        let oid = id.object_id();
        let mut live = live_sessions_of(id, at);
        live.insert("_id", session.as_str());
        let pipeline = [
            doc! { "$match": { "_id": oid } },
            doc! { "$lookup": {
                "from": SESSIONS,
                "pipeline": [
                    { "$match": live },
                    { "$project": { "_id": 1 } },
                ],
                "as": "live_session",
            } },
            doc! { "$project": without_secrets() },
        ];
        let found = run(|| async {
            let mut cursor = self.users.aggregate(pipeline.clone()).await?;
            cursor.try_next().await
        })
        .await?;
        let Some(mut document) = found else {
            return Ok(None);
        };
        let live = matches!(
            document.remove("live_session"),
            Some(Bson::Array(sessions)) if !sessions.is_empty()
        );
        let user = bson::from_document::<UserDocument>(document).map_err(StorageError::internal)?;
        Ok(Some((User::try_from(user)?, live)))
    }

    async fn live_sessions(
        &self,
        user_id: &UserId,
        at: OffsetDateTime,
    ) -> StorageResult<Vec<Session>> {
        let live = live_sessions_of(user_id, at);
        run(|| async {
            self.sessions
                .find(live.clone())
                .sort(doc! { "created_at": -1, "_id": -1 })
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?
        .into_iter()
        .map(Session::try_from)
        .collect()
    }

    async fn end_session(
        &self,
        user_id: &UserId,
        session: &SessionId,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let mut live = live_sessions_of(user_id, at);
        live.insert("_id", session.as_str());
        let end = doc! { "$set": { "ended_at": bson_time(at) } };
        let ended = run(|| {
            self.sessions
                .update_one(live.clone(), end.clone())
                .into_future()
        })
        .await?;
        Ok(ended.modified_count == 1)
    }

    async fn end_user_sessions(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64> {
        let live = live_sessions_of(user_id, at);
        let end = doc! { "$set": { "ended_at": bson_time(at) } };
        let ended = run(|| {
            self.sessions
                .update_many(live.clone(), end.clone())
                .into_future()
        })
        .await?;
        run(|| {
            self.mfa_challenges
                .delete_many(doc! { "user_id": user_id.object_id() })
                .into_future()
        })
        .await?;
        Ok(ended.modified_count)
    }

    async fn insert_refresh_token(&self, record: RefreshTokenRecord) -> StorageResult<()> {
        let created_at = bson_time(record.created_at);
        let expires_at = bson_time(record.expires_at);
        // The session first; one that has ended stays as it is, and the token is dead.
        let used = doc! {
            "$set": { "last_used_at": created_at },
            "$max": { "expires_at": expires_at },
        };
        run(|| {
            self.sessions
                .update_one(
                    doc! { "_id": record.session_id.as_str(), "ended_at": Bson::Null },
                    used.clone(),
                )
                .into_future()
        })
        .await?;
        let token = RefreshTokenDocument {
            token_hash: record.token_hash.clone(),
            session_id: record.session_id.as_str().to_owned(),
            user_id: record.user_id.object_id(),
            created_at,
            expires_at,
            spent_at: None,
        };
        run(|| self.refresh_tokens.insert_one(&token).into_future()).await?;
        Ok(())
    }

    async fn use_refresh_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<RefreshTokenUse> {
        let spent = run(|| {
            self.refresh_tokens
                .find_one_and_update(
                    doc! { "_id": token_hash, "spent_at": Bson::Null },
                    doc! { "$set": { "spent_at": bson_time(at) } },
                )
                .into_future()
        })
        .await?;
        // Spent by this call, or else as it is (spent before, revoked or unknown).
        let (found, spent_now) = match spent {
            Some(token) => (Some(token), true),
            None => (self.find_refresh_token(token_hash).await?, false),
        };
        Ok(match self.refresh_token_state(found).await? {
            RefreshTokenUse::Live(record) if spent_now => RefreshTokenUse::Spent(record),
            // Unspent, yet not spendable a moment ago: counted as replayed, never as live.
            RefreshTokenUse::Live(record) => RefreshTokenUse::Replayed {
                session_id: record.session_id,
                user_id: record.user_id,
            },
            other => other,
        })
    }

    async fn peek_refresh_token(&self, token_hash: &str) -> StorageResult<RefreshTokenUse> {
        let found = self.find_refresh_token(token_hash).await?;
        self.refresh_token_state(found).await
    }

    async fn end_session_of_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, SessionId)>> {
        let token = run(|| {
            self.refresh_tokens
                .find_one(doc! { "_id": token_hash })
                .into_future()
        })
        .await?;
        let Some(token) = token else {
            return Ok(None);
        };
        let ended = run(|| {
            self.sessions
                .find_one_and_update(
                    doc! {
                        "_id": &token.session_id,
                        "ended_at": Bson::Null,
                        "expires_at": { "$gt": bson_time(at) },
                    },
                    doc! { "$set": { "ended_at": bson_time(at) } },
                )
                .into_future()
        })
        .await?;
        ended
            .map(|session| {
                let id = SessionId::parse(&session.id).map_err(StorageError::internal)?;
                Ok((session.user_id.into(), id))
            })
            .transpose()
    }

    async fn totp_state(&self, user_id: &UserId) -> StorageResult<Option<TotpState>> {
        let users = self.users.clone_with_type::<MfaHolder>();
        let holder = run(|| {
            users
                .find_one(doc! { "_id": user_id.object_id() })
                .projection(doc! { "mfa": 1 })
                .into_future()
        })
        .await?;
        Ok(holder.map(|holder| {
            let mfa = holder.mfa.unwrap_or_default();
            TotpState {
                secret: mfa.secret.map(Secret::new),
                pending: mfa.pending.map(Secret::new),
                last_step: mfa
                    .last_step
                    .map(|step| u64::try_from(step).unwrap_or_default()),
            }
        }))
    }

    async fn set_pending_totp(&self, user_id: &UserId, secret: &Secret) -> StorageResult<bool> {
        let off = doc! { "_id": user_id.object_id(), "mfa_enabled": { "$ne": true } };
        let pending = doc! { "$set": { "mfa.pending": secret.expose() } };
        let set = self.update_user_document(off, pending).await?;
        Ok(set.matched_count == 1)
    }

    async fn enable_totp(
        &self,
        user_id: &UserId,
        secret: &Secret,
        step: u64,
        recovery_hashes: &[String],
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let step = stored_step(step)?;
        let confirmable = doc! {
            "_id": user_id.object_id(),
            "mfa_enabled": { "$ne": true },
            "mfa.pending": secret.expose(),
        };
        let enable = doc! {
            "$set": {
                "mfa_enabled": true,
                "mfa.secret": secret.expose(),
                "mfa.last_step": step,
                "mfa.recovery": recovery_hashes,
                "updated_at": bson_time(at),
            },
            "$unset": { "mfa.pending": "" },
        };
        let enabled = self.update_user_document(confirmable, enable).await?;
        Ok(enabled.matched_count == 1)
    }

    async fn claim_totp_step(&self, user_id: &UserId, step: u64) -> StorageResult<bool> {
        let step = stored_step(step)?;
        let later = doc! {
            "_id": user_id.object_id(),
            "mfa_enabled": true,
            "$or": [
                { "mfa.last_step": Bson::Null },
                { "mfa.last_step": { "$lt": step } },
            ],
        };
        let claim = doc! { "$set": { "mfa.last_step": step } };
        let claimed = self.update_user_document(later, claim).await?;
        Ok(claimed.matched_count == 1)
    }

    async fn use_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        let holding = doc! {
            "_id": user_id.object_id(),
            "mfa_enabled": true,
            "mfa.recovery": code_hash,
        };
        let spend = doc! { "$pull": { "mfa.recovery": code_hash } };
        let spent = self.update_user_document(holding, spend).await?;
        Ok(spent.modified_count == 1)
    }

    async fn holds_recovery_code(&self, user_id: &UserId, code_hash: &str) -> StorageResult<bool> {
        let holding = doc! {
            "_id": user_id.object_id(),
            "mfa_enabled": true,
            "mfa.recovery": code_hash,
        };
        let users = self.users.clone_with_type::<Document>();
        let found = run(|| {
            users
                .find_one(holding.clone())
                .projection(doc! { "_id": 1 })
                .into_future()
        })
        .await?;
        Ok(found.is_some())
    }

    async fn replace_recovery_codes(
        &self,
        user_id: &UserId,
        recovery_hashes: &[String],
    ) -> StorageResult<bool> {
        let on = doc! { "_id": user_id.object_id(), "mfa_enabled": true };
        let replace = doc! { "$set": { "mfa.recovery": recovery_hashes } };
        let replaced = self.update_user_document(on, replace).await?;
        Ok(replaced.matched_count == 1)
    }

    /// The last step accepted stays, as the other backends keep it: a code of it or before
    /// is never taken again, even after a new enrolment.
    async fn disable_totp(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<bool> {
        let on = doc! { "_id": user_id.object_id(), "mfa_enabled": true };
        let disable = doc! {
            "$set": { "mfa_enabled": false, "updated_at": bson_time(at) },
            "$unset": { "mfa.secret": "", "mfa.pending": "", "mfa.recovery": "" },
        };
        let disabled = self.update_user_document(on, disable).await?;
        Ok(disabled.matched_count == 1)
    }

    async fn insert_mfa_challenge(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        let challenge = MfaChallengeDocument {
            token_hash: record.token_hash,
            user_id: record.user_id.object_id(),
            created_at: bson_time(record.created_at),
            expires_at: bson_time(record.expires_at),
            attempts: 0,
            used_at: None,
        };
        inserted(run(|| self.mfa_challenges.insert_one(&challenge).into_future()).await)
    }

    async fn attempt_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
        max_attempts: u32,
    ) -> StorageResult<Option<UserId>> {
        let mut live = live_token(token_hash, at);
        live.insert("attempts", doc! { "$lt": i64::from(max_attempts) });
        let count = doc! { "$inc": { "attempts": 1_i64 } };
        let attempted = run(|| {
            self.mfa_challenges
                .find_one_and_update(live.clone(), count.clone())
                .into_future()
        })
        .await?;
        Ok(attempted.map(|challenge| challenge.user_id.into()))
    }

    async fn consume_mfa_challenge(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<bool> {
        let live = live_token(token_hash, at);
        let spend = doc! { "$set": { "used_at": bson_time(at) } };
        let spent = run(|| {
            self.mfa_challenges
                .update_one(live.clone(), spend.clone())
                .into_future()
        })
        .await?;
        Ok(spent.modified_count == 1)
    }

    async fn insert_audit_event(&self, event: &AuditEvent) -> StorageResult<()> {
        let document = AuditEventDocument::from(event);
        inserted(run(|| self.audit_events.insert_one(&document).into_future()).await)
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> StorageResult<Page<AuditEvent>> {
        let filter = audit_filter_document(&query.filter);
        let total = run(|| {
            self.audit_events
                .count_documents(filter.clone())
                .into_future()
        })
        .await?;
        // MongoDB reads a limit of 0 as none at all.
        if query.limit == 0 {
            return Ok(Page {
                items: Vec::new(),
                total,
            });
        }
        let page = match query.after {
            Some(after) => after_position(filter, after),
            None => filter,
        };
        let items = run(|| async {
            self.audit_events
                .find(page.clone())
                .sort(doc! { "at": -1, "_id": -1 })
                .skip(query.offset)
                .limit(i64::from(query.limit))
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?
        .into_iter()
        .map(AuditEvent::try_from)
        .collect::<Result<_, _>>()?;
        Ok(Page { items, total })
    }

    async fn delete_audit_events_before(&self, before: OffsetDateTime) -> StorageResult<u64> {
        let older = doc! { "at": { "$lt": bson_time(before) } };
        let deleted = run(|| self.audit_events.delete_many(older.clone()).into_future()).await?;
        Ok(deleted.deleted_count)
    }

    async fn insert_reset_token(&self, record: OneTimeTokenRecord) -> StorageResult<()> {
        let token = ResetTokenDocument {
            token_hash: record.token_hash,
            user_id: record.user_id.object_id(),
            created_at: bson_time(record.created_at),
            expires_at: bson_time(record.expires_at),
            used_at: None,
        };
        run(|| self.reset_tokens.insert_one(&token).into_future()).await?;
        Ok(())
    }

    async fn reset_token_owner(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let live = live_token(token_hash, at);
        let token = run(|| self.reset_tokens.find_one(live.clone()).into_future()).await?;
        Ok(token.map(|token| token.user_id.into()))
    }

    async fn consume_reset_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<UserId>> {
        let used = run(|| {
            self.reset_tokens
                .find_one_and_update(
                    live_token(token_hash, at),
                    doc! { "$set": { "used_at": bson_time(at) } },
                )
                .into_future()
        })
        .await?;
        let Some(doc) = used else {
            return Ok(None);
        };
        let user_id = doc.user_id.into();
        self.void_reset_tokens(&user_id, at).await?;
        Ok(Some(user_id))
    }

    async fn void_reset_tokens(&self, user_id: &UserId, at: OffsetDateTime) -> StorageResult<u64> {
        let voided = run(|| {
            self.reset_tokens
                .update_many(
                    doc! { "user_id": user_id.object_id(), "used_at": Bson::Null },
                    doc! { "$set": { "used_at": bson_time(at) } },
                )
                .into_future()
        })
        .await?;
        Ok(voided.modified_count)
    }

    async fn insert_verification_token(
        &self,
        record: VerificationTokenRecord,
    ) -> StorageResult<()> {
        let at = bson_time(record.created_at);
        run(|| {
            self.verification_tokens
                .update_many(
                    doc! { "user_id": record.user_id.object_id(), "used_at": Bson::Null },
                    doc! { "$set": { "used_at": at } },
                )
                .into_future()
        })
        .await?;
        let token = VerificationTokenDocument {
            token_hash: record.token_hash.clone(),
            user_id: record.user_id.object_id(),
            email: record.email.as_str().to_owned(),
            created_at: at,
            expires_at: bson_time(record.expires_at),
            used_at: None,
        };
        run(|| self.verification_tokens.insert_one(&token).into_future()).await?;
        Ok(())
    }

    async fn consume_verification_token(
        &self,
        token_hash: &str,
        at: OffsetDateTime,
    ) -> StorageResult<Option<(UserId, Email)>> {
        let live = live_token(token_hash, at);
        let spend = doc! { "$set": { "used_at": bson_time(at) } };
        let spent = run(|| {
            self.verification_tokens
                .find_one_and_update(live.clone(), spend.clone())
                .into_future()
        })
        .await?;
        spent
            .map(|token| {
                let email = Email::parse(&token.email).map_err(StorageError::internal)?;
                Ok((token.user_id.into(), email))
            })
            .transpose()
    }

    /// One conditional upsert: a record still inside the window does not match, so the
    /// upsert tries to insert its `_id` again and fails as a duplicate: no claim.
    async fn claim_mail(
        &self,
        kind: &str,
        address: &Email,
        at: OffsetDateTime,
        window: Duration,
    ) -> StorageResult<bool> {
        let key = format!("{kind} {address}");
        let past = doc! { "_id": &key, "sent_at": { "$lte": bson_time(at - window) } };
        let sent =
            doc! { "$set": { "sent_at": bson_time(at), "expires_at": bson_time(at + window) } };
        let claimed = run(|| {
            self.mail_log
                .update_one(past.clone(), sent.clone())
                .upsert(true)
                .into_future()
        })
        .await;
        match claimed {
            Ok(_) => Ok(true),
            Err(Failure::Server(error)) if matches!(diagnose(&error), Diagnosis::Duplicate(_)) => {
                Ok(false)
            }
            Err(failure) => Err(failure.into()),
        }
    }

    async fn claim_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        fingerprint: &str,
        at: OffsetDateTime,
        ttl: Duration,
        stale_after: Duration,
    ) -> StorageResult<Claim> {
        let keys = self.idempotency_keys();
        let id = doc! { "scope": scope, "key": key };
        // The entry may be replaced when it has expired (the TTL monitor runs only once a
        // minute) or is a claim in flight that was abandoned.
        let mut free = id.clone();
        free.insert(
            "$or",
            vec![
                Bson::Document(doc! { "expires_at": { "$lte": bson_time(at) } }),
                Bson::Document(doc! {
                    "answer": { "$exists": false },
                    "created_at": { "$lte": bson_time(at - stale_after) },
                }),
            ],
        );
        let claim = doc! {
            "$set": {
                "fingerprint": fingerprint,
                "created_at": bson_time(at),
                "expires_at": bson_time(at + ttl),
            },
            "$unset": { "answer": "" },
        };
        // A claim that met a taken key reads it; if the entry went away meanwhile (released,
        // expired), claim again.
        for _ in 0..CONFLICT_RETRIES {
            let claimed = run(|| {
                keys.update_one(free.clone(), claim.clone())
                    .upsert(true)
                    .into_future()
            })
            .await;
            match claimed {
                Ok(_) => return Ok(Claim::New),
                Err(Failure::Server(error))
                    if matches!(diagnose(&error), Diagnosis::Duplicate(_)) => {}
                Err(failure) => return Err(failure.into()),
            }
            let Some(entry) = run(|| keys.find_one(id.clone()).into_future()).await? else {
                continue;
            };
            let expired = entry
                .get_datetime("expires_at")
                .is_ok_and(|t| *t <= bson_time(at));
            let answer = entry.get_document("answer").ok();
            let abandoned = answer.is_none()
                && entry
                    .get_datetime("created_at")
                    .is_ok_and(|t| *t <= bson_time(at - stale_after));
            if expired || abandoned {
                continue;
            }
            if entry.get_str("fingerprint").ok() != Some(fingerprint) {
                return Ok(Claim::Mismatch);
            }
            let Some(answer) = answer else {
                return Ok(Claim::InFlight);
            };
            let status = answer
                .get_i32("status")
                .ok()
                .and_then(|s| u16::try_from(s).ok())
                .ok_or_else(|| {
                    StorageError::internal(anyhow::anyhow!("an idempotency answer has no status"))
                })?;
            return Ok(Claim::Replay(StoredAnswer {
                status,
                body: answer.get_str("body").unwrap_or_default().to_owned(),
                location: answer.get_str("location").ok().map(str::to_owned),
                etag: answer.get_str("etag").ok().map(str::to_owned),
            }));
        }
        Err(StorageError::Unavailable(anyhow::anyhow!(
            "the idempotency key kept changing while it was claimed"
        )))
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        answer: &StoredAnswer,
    ) -> StorageResult<()> {
        let keys = self.idempotency_keys();
        let filter = doc! { "scope": scope, "key": key, "answer": { "$exists": false } };
        let mut stored = doc! { "status": i32::from(answer.status), "body": &answer.body };
        if let Some(location) = &answer.location {
            stored.insert("location", location);
        }
        if let Some(etag) = &answer.etag {
            stored.insert("etag", etag);
        }
        let update = doc! { "$set": { "answer": stored } };
        run(|| {
            keys.update_one(filter.clone(), update.clone())
                .into_future()
        })
        .await?;
        Ok(())
    }

    async fn release_idempotency_key(&self, scope: &str, key: &str) -> StorageResult<()> {
        let keys = self.idempotency_keys();
        let filter = doc! { "scope": scope, "key": key, "answer": { "$exists": false } };
        run(|| keys.delete_one(filter.clone()).into_future()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_details_round_trip_as_plain_json() {
        let details = serde_json::json!({
            "reason": "wrong_code",
            "fields": ["email", "name"],
            "count": 3,
            "negative": -7,
            "ratio": 0.5,
            "flag": true,
            "none": null,
            "nested": { "$oid": "not an id", "list": [1, "two"] },
        });
        let serde_json::Value::Object(map) = details else {
            unreachable!()
        };
        let stored = json_map_to_document(&map);
        // Nothing is read as extended JSON: a `$oid` key stays a plain string.
        assert_eq!(
            stored.get_document("nested").unwrap().get_str("$oid"),
            Ok("not an id")
        );
        assert_eq!(stored.get_i64("count"), Ok(3));
        assert_eq!(document_to_json_map(stored), map);
    }

    #[test]
    fn audit_events_round_trip_through_their_document() {
        let event = AuditEvent {
            id: EventId::generate(),
            at: domain::truncate_to_millis(domain::now()),
            kind: EventKind::MfaEnabled,
            actor_id: Some(UserId::generate()),
            subject_id: None,
            origin: Origin::new(Some("2001:db8::1".parse().unwrap()), Some("curl/8")),
            details: EventDetails::from_iter([("method".to_owned(), "totp".into())]),
        };
        let document = bson::to_document(&AuditEventDocument::from(&event)).unwrap();
        assert_eq!(document.get_str("type"), Ok("mfa.enabled"));
        assert_eq!(document.get("subject_id"), Some(&Bson::Null));
        let back: AuditEventDocument = bson::from_document(document).unwrap();
        assert_eq!(AuditEvent::try_from(back).unwrap(), event);
    }

    #[test]
    fn sessions_round_trip_through_their_document() {
        let at = domain::truncate_to_millis(domain::now());
        let session = Session {
            id: SessionId::generate(),
            user_id: UserId::generate(),
            created_at: at,
            last_used_at: at,
            expires_at: at + Duration::from_secs(60),
            origin: Origin::new(Some("192.0.2.7".parse().unwrap()), None),
        };
        let document = bson::to_document(&SessionDocument::from(&session)).unwrap();
        assert_eq!(document.get("ended_at"), Some(&Bson::Null));
        let back: SessionDocument = bson::from_document(document).unwrap();
        assert_eq!(Session::try_from(back).unwrap(), session);
    }

    #[test]
    fn users_of_earlier_versions_have_mfa_off_and_secrets_are_not_read() {
        let user = UserDocument::from(&User {
            mfa_enabled: true,
            ..User::sample()
        });
        let mut document = bson::to_document(&user).unwrap();
        assert_eq!(document.get_bool("mfa_enabled"), Ok(true));
        assert!(!document.contains_key("mfa"));
        document.remove("mfa_enabled");
        let old: UserDocument = bson::from_document(document).unwrap();
        assert!(!User::try_from(old).unwrap().mfa_enabled);
    }

    #[test]
    fn refresh_tokens_of_earlier_versions_name_no_session() {
        let old = doc! {
            "_id": "hash",
            "family_id": "f",
            "user_id": ObjectId::new(),
            "created_at": BsonDateTime::now(),
            "expires_at": BsonDateTime::now(),
            "spent_at": Bson::Null,
        };
        let token: RefreshTokenDocument = bson::from_document(old).unwrap();
        assert!(SessionId::parse(&token.session_id).is_err());
    }

    #[test]
    fn audit_filters_combine_the_user_and_the_keyset() {
        let user = UserId::generate();
        let id = EventId::generate();
        let at = domain::truncate_to_millis(domain::now());
        let since = at - Duration::from_secs(3600);
        let filter = AuditFilter {
            user_id: Some(user),
            kind: Some(EventKind::LoginFailed),
            since: Some(since),
            ..AuditFilter::default()
        };
        let document = audit_filter_document(&filter);
        assert_eq!(
            document,
            doc! {
                "$or": [{ "actor_id": user.object_id() }, { "subject_id": user.object_id() }],
                "type": "login.failed",
                "at": { "$gte": bson_time(since) },
            }
        );
        let keyset = doc! { "$or": [
            { "at": { "$lt": bson_time(at) } },
            { "at": bson_time(at), "_id": { "$lt": id.object_id() } },
        ] };
        assert_eq!(
            after_position(document, (at, id)),
            doc! {
                "type": "login.failed",
                "at": { "$gte": bson_time(since) },
                "$and": [
                    { "$or": [{ "actor_id": user.object_id() }, { "subject_id": user.object_id() }] },
                    keyset.clone(),
                ],
            }
        );
        assert_eq!(
            after_position(audit_filter_document(&AuditFilter::default()), (at, id)),
            keyset
        );
    }

    #[test]
    fn index_conflicts_are_recognised() {
        for code in INDEX_CONFLICT_CODES {
            assert_eq!(command_code(&command_error(*code, "x")), Some(*code));
        }
        assert_eq!(command_code(&write_error(DUPLICATE_KEY, "x")), None);
    }

    #[test]
    fn regex_escape_makes_metacharacters_literal() {
        assert_eq!(regex_escape("a.b*c"), r"a\.b\*c");
        assert_eq!(regex_escape("(x)"), r"\(x\)");
        assert_eq!(regex_escape("plain"), "plain");
    }

    #[test]
    fn a_look_up_by_username_states_the_condition_of_its_partial_index() {
        let username = Username::parse("Mario_R").unwrap();
        // The index's own filter is a part of it, word for word, as DocumentDB's planner
        // wants it.
        assert_eq!(
            username_key(&username),
            doc! { "$eq": "mario_r", "$gte": "" }
        );
        assert_eq!(stored_username(), doc! { "$gte": "" });
    }

    #[test]
    fn a_role_alone_names_both_states_for_the_index_walk() {
        let of = |role, active| {
            filter_document(&UserFilter {
                role,
                active,
                ..UserFilter::default()
            })
        };
        assert_eq!(
            of(Some(Role::Admin), None),
            doc! { "role": "admin", "active": { "$in": [false, true] } }
        );
        assert_eq!(
            of(Some(Role::User), Some(false)),
            doc! { "role": "user", "active": false }
        );
        assert_eq!(of(None, Some(true)), doc! { "active": true });
        assert_eq!(of(None, None), doc! {});
    }

    #[test]
    fn q_is_searched_in_lower_case_in_the_lower_cased_fields() {
        let filter = UserFilter {
            q: Some("İstanbul.X".to_owned()),
            ..UserFilter::default()
        };
        // No "i" option: "İ" lower-cased is two characters, which no per-character folding
        // of the stored "İ" would match.
        let pattern = doc! { "$regex": "i\u{307}stanbul\\.x" };
        assert_eq!(
            filter_document(&filter),
            doc! { "$or": [
                { "name_key": pattern.clone() },
                { "email": pattern.clone() },
                { "username_key": pattern },
            ] }
        );
        let user = User {
            name: DisplayName::parse("İstanbul Ürün").unwrap(),
            ..User::sample()
        };
        assert_eq!(
            UserDocument::from(&user).name_key.as_deref(),
            Some("i\u{307}stanbul ürün")
        );
        let renamed = set_document(&UserPatch::new().set(UserField::Name(user.name.clone())));
        assert_eq!(renamed.get_str("name_key"), Ok("i\u{307}stanbul ürün"));
    }

    fn command_error(code: i32, message: &str) -> mongodb::error::Error {
        let error: mongodb::error::CommandError =
            bson::from_document(doc! { "code": code, "codeName": "x", "errmsg": message }).unwrap();
        ErrorKind::Command(error).into()
    }

    fn write_error(code: i32, message: &str) -> mongodb::error::Error {
        let error: mongodb::error::WriteError =
            bson::from_document(doc! { "code": code, "errmsg": message }).unwrap();
        ErrorKind::Write(WriteFailure::WriteError(error)).into()
    }

    #[test]
    fn mongodb_duplicate_messages_name_the_index() {
        let email = "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"a@x.io\" }";
        let username = "E11000 duplicate key error collection: db.users index: username_unique dup key: { username_key: \"mario\" }";
        assert_eq!(duplicate_field(email, None), Some(UniqueField::Email));
        assert_eq!(duplicate_field(username, None), Some(UniqueField::Username));
        // The duplicated value follows the index name and must not be mistaken for it.
        let tricky = "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"username_key_unique@x.io\" }";
        assert_eq!(duplicate_field(tricky, None), Some(UniqueField::Email));
    }

    #[test]
    fn documentdb_duplicate_messages_name_the_index() {
        let username =
            "Duplicate key violation on the requested collection: Index 'username_unique'";
        // The index of earlier versions, met while they run beside this one.
        let ours =
            "Duplicate key violation on the requested collection: Index 'username_key_unique'";
        let email = "Duplicate key violation on the requested collection: Index 'email_unique'";
        assert_eq!(duplicate_field(username, None), Some(UniqueField::Username));
        assert_eq!(duplicate_field(ours, None), Some(UniqueField::Username));
        assert_eq!(duplicate_field(email, None), Some(UniqueField::Email));
    }

    #[test]
    fn key_pattern_names_the_field_when_the_message_does_not() {
        let message = "Duplicate key violation on the requested collection";
        assert_eq!(duplicate_field(message, None), None);
        let pattern = doc! { "username_key": 1 };
        assert_eq!(
            duplicate_field(message, Some(&pattern)),
            Some(UniqueField::Username)
        );
        let pattern = doc! { "email": 1 };
        assert_eq!(
            duplicate_field(message, Some(&pattern)),
            Some(UniqueField::Email)
        );
        // A command answer carries it at the top, an insert's in its first write error.
        let command = doc! { "ok": 0, "code": 11000, "keyPattern": { "email": 1 } };
        assert_eq!(key_pattern(&command), Some(doc! { "email": 1 }));
        let insert = doc! { "ok": 1, "writeErrors": [{ "index": 0, "code": 11000, "keyPattern": { "username_key": 1 } }] };
        assert_eq!(key_pattern(&insert), Some(doc! { "username_key": 1 }));
    }

    #[test]
    fn duplicates_are_diagnosed_from_writes_and_commands() {
        let email = "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"a@x.io\" }";
        assert_eq!(
            diagnose(&write_error(DUPLICATE_KEY, email)),
            Diagnosis::Duplicate(Some(UniqueField::Email))
        );
        // findAndModify on DocumentDB names no index: the repository must ask.
        assert_eq!(
            diagnose(&command_error(
                DUPLICATE_KEY,
                "Duplicate key violation on the requested collection"
            )),
            Diagnosis::Duplicate(None)
        );
        assert!(matches!(
            StorageError::from(command_error(DUPLICATE_KEY, "no index named")),
            StorageError::Internal(_)
        ));
        assert_eq!(
            diagnose(&command_error(91, "shutting down")),
            Diagnosis::Unavailable
        );
        assert_eq!(
            diagnose(&command_error(2, "bad value")),
            Diagnosis::Internal
        );
    }

    fn labelled(label: &str) -> mongodb::error::Error {
        // Labels reach an error from the server's answer; a write-concern error carries them.
        let error: mongodb::error::WriteConcernError = bson::from_document(
            doc! { "code": 64, "codeName": "x", "errmsg": "x", "errorLabels": [label] },
        )
        .unwrap();
        ErrorKind::Write(WriteFailure::WriteConcernError(error)).into()
    }

    #[test]
    fn write_conflicts_are_retried_then_unavailable() {
        assert_eq!(
            diagnose(&command_error(WRITE_CONFLICT, "WriteConflict")),
            Diagnosis::Conflict
        );
        assert_eq!(
            diagnose(&write_error(WRITE_CONFLICT, "WriteConflict")),
            Diagnosis::Conflict
        );
        let transient = labelled("TransientTransactionError");
        assert!(transient.contains_label("TransientTransactionError"));
        assert_eq!(diagnose(&transient), Diagnosis::Conflict);
        // The driver's own retry failed, and the write may have landed (this one did: only
        // its write concern failed): 503 at once, never a second write.
        let retryable = labelled("RetryableWriteError");
        assert!(retryable.contains_label("RetryableWriteError"));
        assert_eq!(diagnose(&retryable), Diagnosis::Unavailable);
        // Still conflicting after the retries: 503, never 500.
        assert!(matches!(
            StorageError::from(command_error(WRITE_CONFLICT, "WriteConflict")),
            StorageError::Unavailable(_)
        ));
    }

    #[test]
    fn exceeded_time_limits_are_unavailable() {
        let error = StorageError::from(command_error(50, "operation exceeded time limit"));
        assert!(matches!(error, StorageError::Unavailable(_)));
        assert!(matches!(
            StorageError::from(Failure::TimedOut),
            StorageError::Unavailable(_)
        ));
    }

    #[tokio::test]
    async fn conflicts_are_tried_again_a_bounded_number_of_times() {
        let mut calls = 0;
        let result: Result<(), Failure> = run(|| {
            calls += 1;
            async { Err(command_error(WRITE_CONFLICT, "WriteConflict")) }
        })
        .await;
        assert!(matches!(result, Err(Failure::Server(_))));
        assert_eq!(calls, CONFLICT_RETRIES + 1);

        // A duplicate met on a later try is reported as the duplicate it is.
        let mut calls = 0;
        let result: Result<(), Failure> = run(|| {
            calls += 1;
            let error = if calls == 1 {
                command_error(WRITE_CONFLICT, "WriteConflict")
            } else {
                command_error(
                    DUPLICATE_KEY,
                    "E11000 duplicate key error collection: db.users index: email_unique dup key: { email: \"a@x.io\" }",
                )
            };
            async move { Err(error) }
        })
        .await;
        let Err(Failure::Server(error)) = result else {
            panic!("{result:?}")
        };
        assert!(matches!(
            StorageError::from(error),
            StorageError::Duplicate(UniqueField::Email)
        ));
        assert_eq!(calls, 2);
    }
}
