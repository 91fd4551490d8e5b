use std::{fmt, str::FromStr};

use bson::oid::ObjectId;
use time::OffsetDateTime;

use super::{DisplayName, Email, ParseError, Role, Username};

/// A user's id: a MongoDB ObjectId, shown as 24 lower-case hex characters on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserId(ObjectId);

impl UserId {
    /// The rule of [`UserId::parse`] as a regular expression (see [`super::text`]).
    pub const PATTERN: &str = "^[0-9a-f]{24}$";

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

/// The instant `ms` milliseconds after the Unix epoch; `None` out of range.
pub fn from_unix_millis(ms: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
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
    pub name: DisplayName,
    pub username: Option<Username>,
    pub email: Email,
    pub role: Role,
    pub active: bool,
    pub password_hash: String,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub last_login_at: Option<OffsetDateTime>,
    pub password_changed_at: OffsetDateTime,
    /// The end of the login lock last set on the account, if any (it may have passed).
    pub locked_until: Option<OffsetDateTime>,
    /// Whether the user showed they receive mail at `email`.
    pub email_verified: bool,
    /// Whether a login needs a second factor (TOTP), as the repository's MFA operations set it.
    pub mfa_enabled: bool,
}

impl User {
    pub fn is_active_admin(&self) -> bool {
        self.active && self.role == Role::Admin
    }

    /// The end of a login lock still in force at `at`.
    pub fn lock_in_force(&self, at: OffsetDateTime) -> Option<OffsetDateTime> {
        self.locked_until.filter(|until| *until > at)
    }
}

/// One stored field of a user with the value it is to take.
#[derive(Debug, Clone, PartialEq)]
pub enum UserField {
    Name(DisplayName),
    /// `None` removes the username.
    Username(Option<Username>),
    Email(Email),
    Role(Role),
    Active(bool),
    PasswordHash(String),
    PasswordChangedAt(OffsetDateTime),
    UpdatedAt(OffsetDateTime),
    LastLoginAt(OffsetDateTime),
    /// The end of a login lock, or `None` when it was lifted.
    LockedUntil(Option<OffsetDateTime>),
    EmailVerified(bool),
}

/// Concrete values to store, in the order they were set. The services decide every value
/// (timestamps included); a backend only translates the list into its own update, so the
/// rules of an update live in one place.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch(Vec<UserField>);

impl UserPatch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `field`, replacing an earlier value of the same field.
    pub fn set(mut self, field: UserField) -> Self {
        self.0
            .retain(|f| std::mem::discriminant(f) != std::mem::discriminant(&field));
        self.0.push(field);
        self
    }

    pub fn fields(&self) -> &[UserField] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether applying the patch can take its user out of the active admins: backends
    /// check the last-active-admin rule in the same write when it can.
    pub fn may_remove_an_admin(&self) -> bool {
        self.0.iter().any(|field| {
            matches!(
                field,
                UserField::Role(Role::User) | UserField::Active(false)
            )
        })
    }

    /// The patch applied to an in-memory `user`: what every backend must store.
    pub fn apply_to(&self, user: &mut User) {
        for field in &self.0 {
            match field.clone() {
                UserField::Name(name) => user.name = name,
                UserField::Username(username) => user.username = username,
                UserField::Email(email) => user.email = email,
                UserField::Role(role) => user.role = role,
                UserField::Active(active) => user.active = active,
                UserField::PasswordHash(hash) => user.password_hash = hash,
                UserField::PasswordChangedAt(at) => user.password_changed_at = at,
                UserField::UpdatedAt(at) => user.updated_at = at,
                UserField::LastLoginAt(at) => user.last_login_at = Some(at),
                UserField::LockedUntil(until) => user.locked_until = until,
                UserField::EmailVerified(verified) => user.email_verified = verified,
            }
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserFilter {
    /// Case-insensitive substring of name, email or username.
    pub q: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
}

impl UserFilter {
    /// Whether the filter keeps users by role or state.
    pub fn by_role_or_state(&self) -> bool {
        self.role.is_some() || self.active.is_some()
    }

    /// Whether the filter's role and state keep a user of this role in this state.
    pub fn keeps(&self, role: Role, active: bool) -> bool {
        self.role.is_none_or(|r| r == role) && self.active.is_none_or(|a| a == active)
    }
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

/// The value a list is sorted by, of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SortKey {
    CreatedAt(OffsetDateTime),
    /// A name or an email, as stored.
    Text(String),
}

impl SortKey {
    pub fn of(user: &User, sort: SortField) -> Self {
        match sort {
            SortField::CreatedAt => SortKey::CreatedAt(user.created_at),
            SortField::Name => SortKey::Text(user.name.as_str().to_owned()),
            SortField::Email => SortKey::Text(user.email.as_str().to_owned()),
        }
    }
}

/// A keyset position: strictly after the user with this sort key and id, in the list's order
/// (ties on the key are broken by id, in the same direction).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCursor {
    pub key: SortKey,
    pub id: UserId,
}

/// A slice of the user list: skipping `offset` users, or strictly after `after` (keyset), at
/// most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub filter: UserFilter,
    pub sort: SortField,
    pub order: SortOrder,
    pub after: Option<UserCursor>,
    pub offset: u64,
    pub limit: u32,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            filter: UserFilter::default(),
            sort: SortField::default(),
            order: SortOrder::default(),
            after: None,
            offset: 0,
            limit: 20,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: u64,
}

/// The user the unit tests start from: Mario, an active user without a username, every
/// time now. Tests change what they need with struct update syntax.
#[cfg(test)]
impl User {
    pub(crate) fn sample() -> Self {
        let at = super::now();
        Self {
            id: UserId::generate(),
            name: DisplayName::parse("Mario").expect("a valid name"),
            username: None,
            email: Email::parse("mario@example.com").expect("a valid email"),
            role: Role::User,
            active: true,
            password_hash: "hash".into(),
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
            locked_until: None,
            email_verified: false,
            mfa_enabled: false,
        }
    }
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
    fn a_patch_keeps_the_last_value_of_each_field_and_applies_only_its_fields() {
        let mut user = User {
            username: Some(Username::parse("mario").unwrap()),
            ..User::sample()
        };
        let at = user.created_at;
        let later = at + time::Duration::seconds(1);
        let patch = UserPatch::new()
            .set(UserField::Name(DisplayName::parse("First").unwrap()))
            .set(UserField::Username(None))
            .set(UserField::Name(DisplayName::parse("Second").unwrap()))
            .set(UserField::UpdatedAt(later));
        assert_eq!(patch.fields().len(), 3);
        let before = user.clone();
        patch.apply_to(&mut user);
        assert_eq!(user.name.as_str(), "Second");
        assert_eq!(user.username, None);
        assert_eq!(user.updated_at, later);
        assert_eq!(
            (user.email, user.password_changed_at, user.created_at),
            (before.email, before.password_changed_at, before.created_at)
        );
        assert!(UserPatch::new().is_empty());
    }

    #[test]
    fn the_pattern_states_the_rule() {
        let pattern = regex::Regex::new(UserId::PATTERN).unwrap();
        let good = UserId::generate().to_hex();
        let mut texts = vec![good.clone(), format!("{good}0"), good[1..].to_owned()];
        for c in super::super::text::tests::sample_chars() {
            texts.push(format!("{}{c}", &good[1..]));
            texts.push(format!("{c}{}", &good[1..]));
        }
        for t in &texts {
            assert_eq!(pattern.is_match(t), UserId::parse(t).is_ok(), "{t:?}");
        }
    }

    #[test]
    fn now_has_millisecond_precision() {
        assert_eq!(now().nanosecond() % 1_000_000, 0);
    }
}
