//! Versions of a user, for conditional requests: a hash of everything the user's
//! representation shows, so that it changes whenever that does.

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::{User, unix_millis};

/// An opaque version of a user. Two versions are the same only when every shown field is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version(String);

impl Version {
    /// A version as a client sent it back (the opaque part of an entity tag): it need not be
    /// one this service made; then it is simply no user's current version.
    pub fn from_opaque(opaque: &str) -> Self {
        Self(opaque.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl User {
    /// The version of the user as shown at `at`: of every field the representation carries,
    /// the login lock as in force at `at` (a lock that has passed is shown as none).
    pub fn version(&self, at: OffsetDateTime) -> Version {
        let millis = |t: Option<OffsetDateTime>| t.map_or(-1, unix_millis).to_string();
        let fields = [
            self.id.to_hex(),
            self.name.as_str().to_owned(),
            self.username
                .as_ref()
                .map_or_else(String::new, |u| format!("={}", u.as_str())),
            self.email.as_str().to_owned(),
            self.email_verified.to_string(),
            format!("{:?}", self.role),
            self.active.to_string(),
            millis(Some(self.created_at)),
            millis(Some(self.updated_at)),
            millis(self.last_login_at),
            self.mfa_enabled.to_string(),
            millis(self.lock_in_force(at)),
        ];
        let mut hasher = Sha256::new();
        for field in &fields {
            // Length-prefixed, so that no two different lists of fields hash alike.
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        Version(hex::encode(&hasher.finalize()[..16]))
    }
}

/// What a conditional request asks of the current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// `*`: any version, so long as the user exists.
    Any,
    /// One of these versions (none: no version will do).
    OneOf(Vec<Version>),
}

impl Precondition {
    pub fn holds_for(&self, current: &Version) -> bool {
        match self {
            Precondition::Any => true,
            Precondition::OneOf(versions) => versions.contains(current),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DisplayName, Email, Role, UserField, UserPatch, Username, now};

    fn user() -> User {
        User {
            username: Some(Username::parse("mario").unwrap()),
            ..User::sample()
        }
    }

    #[test]
    fn every_shown_field_changes_the_version_and_nothing_else_does() {
        let base = user();
        let at = now();
        let later = at + time::Duration::seconds(5);
        let changes = [
            UserField::Name(DisplayName::parse("Luigi").unwrap()),
            UserField::Username(None),
            UserField::Email(Email::parse("luigi@example.com").unwrap()),
            UserField::Role(Role::Admin),
            UserField::Active(false),
            UserField::UpdatedAt(later),
            UserField::LastLoginAt(later),
            UserField::LockedUntil(Some(later)),
            UserField::EmailVerified(true),
        ];
        for change in changes {
            let mut changed = base.clone();
            UserPatch::new().set(change.clone()).apply_to(&mut changed);
            assert_ne!(changed.version(at), base.version(at), "{change:?}");
        }
        let mut mfa = base.clone();
        mfa.mfa_enabled = true;
        assert_ne!(mfa.version(at), base.version(at));
        let mut hidden = base.clone();
        hidden.password_hash = "other".into();
        hidden.password_changed_at = later;
        assert_eq!(hidden.version(at), base.version(at));
        // A lock that has passed is shown as none.
        let mut past_lock = base.clone();
        past_lock.locked_until = Some(at - time::Duration::seconds(1));
        assert_eq!(past_lock.version(at), base.version(at));
    }

    #[test]
    fn preconditions_match_by_exact_version() {
        let at = now();
        let current = user().version(at);
        assert!(Precondition::Any.holds_for(&current));
        assert!(Precondition::OneOf(vec![current.clone()]).holds_for(&current));
        let other = Precondition::OneOf(vec![Version::from_opaque("nope")]);
        assert!(!other.holds_for(&current));
        assert!(!Precondition::OneOf(vec![]).holds_for(&current));
    }
}
