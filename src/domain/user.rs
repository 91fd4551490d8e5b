use std::{fmt, str::FromStr};

use bson::oid::ObjectId;
use time::OffsetDateTime;

use super::{Email, ParseError, Role, UserName, Username};

/// A user's id: a MongoDB ObjectId, shown as 24 lower-case hex characters on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(ObjectId);

impl UserId {
    pub fn generate() -> Self {
        Self(ObjectId::new())
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        // ObjectId::parse_str accepts upper-case hex; the contract's ids are lower case only.
        if raw.len() != 24 || !raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ParseError::new("must be 24 lower-case hex characters"));
        }
        ObjectId::parse_str(raw)
            .map(Self)
            .map_err(|_| ParseError::new("must be 24 lower-case hex characters"))
    }

    pub fn object_id(&self) -> ObjectId {
        self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.to_hex()
    }
}

impl From<ObjectId> for UserId {
    fn from(id: ObjectId) -> Self {
        Self(id)
    }
}

impl FromStr for UserId {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

/// The current time at the precision every backend stores: milliseconds.
pub fn now() -> OffsetDateTime {
    truncate_to_millis(OffsetDateTime::now_utc())
}

/// Milliseconds since the Unix epoch: how timestamps are stored and compared.
pub fn unix_millis(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn truncate_to_millis(t: OffsetDateTime) -> OffsetDateTime {
    let nanos = t.unix_timestamp_nanos();
    OffsetDateTime::from_unix_timestamp_nanos(nanos - nanos.rem_euclid(1_000_000))
        .expect("truncating never leaves the valid range")
}

/// A stored user. `password_changed_at` lets the token layer refuse tokens issued earlier.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub name: UserName,
    pub username: Option<Username>,
    pub email: Email,
    pub role: Role,
    pub active: bool,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
    pub password_changed_at: OffsetDateTime,
}

impl User {
    pub fn is_active_admin(&self) -> bool {
        self.active && self.role == Role::Admin
    }
}

/// Everything needed to create a user; the password is already hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: UserName,
    pub username: Option<Username>,
    pub email: Email,
    pub role: Role,
    pub active: bool,
    pub password_hash: String,
}

impl NewUser {
    /// The record a backend stores: a fresh id, and every timestamp set to `at`.
    pub fn into_user(self, at: OffsetDateTime) -> User {
        User {
            id: UserId::generate(),
            name: self.name,
            username: self.username,
            email: self.email,
            role: self.role,
            active: self.active,
            password_hash: self.password_hash,
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
        }
    }
}

/// A partial update: `None` leaves a field as it is. `username: Some(None)` clears it.
/// Setting `password_hash` also moves `password_changed_at`.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    pub name: Option<UserName>,
    pub username: Option<Option<Username>>,
    pub email: Option<Email>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub password_hash: Option<String>,
}

impl UserUpdate {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.username.is_none()
            && self.email.is_none()
            && self.role.is_none()
            && self.active.is_none()
            && self.password_hash.is_none()
    }

    /// Applies the update to `user` as of `at`. SQLite stores the result; MongoDB applies the
    /// same as one `$set`, and the conformance suite holds both to it.
    pub fn apply(self, user: &mut User, at: OffsetDateTime) {
        if let Some(name) = self.name {
            user.name = name;
        }
        if let Some(username) = self.username {
            user.username = username;
        }
        if let Some(email) = self.email {
            user.email = email;
        }
        if let Some(role) = self.role {
            user.role = role;
        }
        if let Some(active) = self.active {
            user.active = active;
        }
        if let Some(hash) = self.password_hash {
            user.password_hash = hash;
            user.password_changed_at = at;
        }
        user.updated_at = at;
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    /// Case-insensitive substring of name, email or username.
    pub q: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortField {
    #[default]
    CreatedAt,
    Name,
    Email,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortOrder {
    Ascending,
    #[default]
    Descending,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    /// 1-based.
    pub page: u32,
    pub per_page: u32,
    pub filter: UserFilter,
    pub sort: SortField,
    pub order: SortOrder,
}

impl ListQuery {
    pub fn offset(&self) -> u64 {
        u64::from(self.page.saturating_sub(1)) * u64::from(self.per_page)
    }
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            page: 1,
            per_page: 20,
            filter: UserFilter::default(),
            sort: SortField::default(),
            order: SortOrder::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_round_trips_as_lower_hex() {
        let id = UserId::generate();
        assert_eq!(UserId::parse(&id.to_hex()).unwrap(), id);
        assert!(UserId::parse("65f0c1e2a4b5c6d7e8f90123").is_ok());
        for bad in [
            "65F0C1E2A4B5C6D7E8F90123",
            "65f0c1e2",
            "zzf0c1e2a4b5c6d7e8f90123",
            "",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn now_has_millisecond_precision() {
        assert_eq!(now().nanosecond() % 1_000_000, 0);
    }
}
