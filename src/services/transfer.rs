//! Moving users between deployments (say, from the embedded SQLite file to MongoDB): JSON
//! Lines out and in, one user per line, password hashes included. Two-factor enrolments,
//! sessions and the audit log stay behind.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    ServiceError,
    password_policy::{self, AccountWords},
    passwords::PasswordHasher,
};
use crate::{
    domain::{
        self, DisplayName, Email, ListQuery, NewPassword, Role, SortField, SortKey, SortOrder,
        User, UserCursor, UserId, Username,
    },
    storage::{DynRepository, Imported},
};

/// Users per database round trip, both ways. An import batch is one transaction on SQLite:
/// the larger it is, the fewer times the index pages its users share are written (1 M users,
/// with three more indexes than now: 17,000 users/s at 5,000 per batch, 19,900 at 20,000, no
/// better at 50,000).
pub const BATCH: usize = 20000;

/// One user as a line of an export, or of an import (where only `name`, `email` and one of
/// `password_hash` or `password` are required).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default)]
    pub username: Option<String>,
    pub email: String,
    /// `user` (the default) or `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
    /// Default `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// A bcrypt hash, kept as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_hash: Option<String>,
    /// A password in the clear, hashed on import under the usual password rules; never
    /// exported.
    #[serde(default, skip_serializing)]
    pub password: Option<String>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub created_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_login_at: Option<OffsetDateTime>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub password_changed_at: Option<OffsetDateTime>,
}

impl From<&User> for UserRecord {
    fn from(user: &User) -> Self {
        Self {
            id: Some(user.id.to_hex()),
            name: user.name.as_str().to_owned(),
            username: user.username.as_ref().map(|u| u.as_str().to_owned()),
            email: user.email.as_str().to_owned(),
            role: Some(record_role(user.role).to_owned()),
            active: Some(user.active),
            email_verified: Some(user.email_verified),
            password_hash: Some(user.password_hash.clone()),
            password: None,
            created_at: Some(user.created_at),
            updated_at: Some(user.updated_at),
            last_login_at: user.last_login_at,
            password_changed_at: Some(user.password_changed_at),
        }
    }
}

/// A role as export files spell it.
fn record_role(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Admin => "admin",
    }
}

/// What became of a batch of lines.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub created: u64,
    /// Already there (same id or email): left as they were.
    pub existing: u64,
    /// Line number and why.
    pub refused: Vec<(u64, String)>,
}

impl ImportReport {
    pub fn add(&mut self, other: ImportReport) {
        self.created += other.created;
        self.existing += other.existing;
        self.refused.extend(other.refused);
    }
}

/// A page of the export: the users, and where the next page starts (`None` at the end).
pub struct ExportPage {
    pub users: Vec<UserRecord>,
    /// Users of the page who had two-factor sign-in, which is not exported.
    pub with_mfa: u64,
    pub next: Option<UserCursor>,
}

#[derive(Clone)]
pub struct Transfer {
    repo: DynRepository,
    hasher: PasswordHasher,
}

impl Transfer {
    pub(super) fn new(repo: DynRepository, hasher: PasswordHasher) -> Self {
        Self { repo, hasher }
    }

    /// Imports numbered lines (at most [`BATCH`] at a time, for one round trip): each
    /// well-formed user whose id and email are new is created; the others are reported.
    pub async fn import(&self, lines: Vec<(u64, String)>) -> Result<ImportReport, ServiceError> {
        let mut report = ImportReport::default();
        let mut users = Vec::with_capacity(lines.len());
        for (number, line) in lines {
            match self.parse(&line).await? {
                Ok(user) => users.push((number, user)),
                Err(refusal) => report.refused.push((number, refusal)),
            }
        }
        let batch: Vec<User> = users.iter().map(|(_, user)| user.clone()).collect();
        let outcomes = self.repo.import_users(&batch).await?;
        for ((number, _), outcome) in users.iter().zip(outcomes) {
            match outcome {
                Imported::Created => report.created += 1,
                Imported::Exists => report.existing += 1,
                Imported::UsernameTaken => report
                    .refused
                    .push((*number, "username: another user has it".to_owned())),
            }
        }
        report.refused.sort();
        Ok(report)
    }

    /// Every user, oldest first, a page at a time from `after`.
    pub async fn export(&self, after: Option<UserCursor>) -> Result<ExportPage, ServiceError> {
        let query = ListQuery {
            sort: SortField::CreatedAt,
            order: SortOrder::Ascending,
            after,
            limit: BATCH as u32,
            ..ListQuery::default()
        };
        let page = self.repo.list_users(&query).await?;
        let next = (page.items.len() == BATCH).then(|| {
            let last = page.items.last().expect("a full page");
            UserCursor {
                key: SortKey::of(last, SortField::CreatedAt),
                id: last.id,
            }
        });
        Ok(ExportPage {
            with_mfa: page.items.iter().filter(|u| u.mfa_enabled).count() as u64,
            users: page.items.iter().map(UserRecord::from).collect(),
            next,
        })
    }

    /// One line as a user, under the rules every other way in applies; the inner error says
    /// why the line is refused.
    async fn parse(&self, line: &str) -> Result<Result<User, String>, ServiceError> {
        let record: UserRecord = match serde_json::from_str(line) {
            Ok(record) => record,
            Err(e) => return Ok(Err(format!("not a user: {e}"))),
        };
        let checked = match check(record) {
            Ok(checked) => checked,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let password_hash = match checked.password {
            Secret::Hash(hash) => hash,
            Secret::Clear(password) => {
                let words = AccountWords {
                    email: &checked.user.email,
                    username: checked.user.username.as_ref(),
                    name: &checked.user.name,
                };
                match password_policy::check(&password, &words, "password") {
                    Ok(()) => self.hasher.hash(password.password()).await?,
                    Err(ServiceError::Invalid { field, message }) => {
                        return Ok(Err(format!("{field}: {message}")));
                    }
                    Err(other) => return Err(other),
                }
            }
        };
        Ok(Ok(User {
            password_hash,
            ..checked.user
        }))
    }
}

/// The password of a line: a hash to keep, or a password to hash.
enum Secret {
    Hash(String),
    Clear(NewPassword),
}

struct Checked {
    /// With an empty `password_hash`, filled in from `password`.
    user: User,
    password: Secret,
}

/// The fields of a record, parsed into their domain types; `field: reason` when one is bad.
fn check(record: UserRecord) -> Result<Checked, String> {
    let bad = |field: &str, reason: &str| format!("{field}: {reason}");
    let name = DisplayName::parse(&record.name).map_err(|e| bad("name", &e.0))?;
    let email = Email::parse(&record.email).map_err(|e| bad("email", &e.0))?;
    let username = record
        .username
        .as_deref()
        .map(Username::parse)
        .transpose()
        .map_err(|e| bad("username", &e.0))?;
    let role = match record.role.as_deref() {
        None | Some("user") => Role::User,
        Some("admin") => Role::Admin,
        Some(_) => return Err(bad("role", "must be user or admin")),
    };
    let id = match &record.id {
        Some(id) => UserId::parse(id).map_err(|e| bad("id", &e.0))?,
        None => UserId::generate(),
    };
    let password = match (record.password_hash, record.password) {
        // A well-formed bcrypt hash, or nobody could ever log in with it.
        (Some(hash), None) => match hash.parse::<bcrypt::HashParts>() {
            Ok(_) => Secret::Hash(hash),
            Err(_) => return Err(bad("password_hash", "is not a bcrypt hash")),
        },
        (None, Some(password)) => {
            Secret::Clear(NewPassword::parse(&password).map_err(|e| bad("password", &e.0))?)
        }
        _ => {
            return Err(bad(
                "password_hash",
                "give exactly one of password_hash and password",
            ));
        }
    };
    let now = domain::now();
    let created_at = record.created_at.map_or(now, domain::truncate_to_millis);
    let user = User {
        id,
        name,
        username,
        email,
        role,
        active: record.active.unwrap_or(true),
        password_hash: String::new(),
        created_at,
        updated_at: record
            .updated_at
            .map_or(created_at, domain::truncate_to_millis),
        last_login_at: record.last_login_at.map(domain::truncate_to_millis),
        password_changed_at: record
            .password_changed_at
            .map_or(created_at, domain::truncate_to_millis),
        locked_until: None,
        email_verified: record.email_verified.unwrap_or(false),
        mfa_enabled: false,
    };
    Ok(Checked { user, password })
}
