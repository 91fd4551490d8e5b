//! Security events, as the audit log records them.

use std::fmt;

use bson::oid::ObjectId;
use time::OffsetDateTime;

use super::{Origin, ParseError, UserId};

/// An event's id: an ObjectId, 24 lower-case hex characters like a user's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(ObjectId);

impl EventId {
    pub fn generate() -> Self {
        Self(ObjectId::new())
    }

    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        UserId::parse(raw).map(|id| Self(id.object_id()))
    }

    pub fn object_id(&self) -> ObjectId {
        self.0
    }
}

impl From<ObjectId> for EventId {
    fn from(id: ObjectId) -> Self {
        Self(id)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_hex())
    }
}

macro_rules! event_kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// What happened. The names are the contract's.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum EventKind { $($variant,)* }

        impl EventKind {
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self { $(EventKind::$variant => $name,)* }
            }
        }
    };
}

event_kinds! {
    UserRegistered => "user.registered",
    UserCreated => "user.created",
    UserUpdated => "user.updated",
    UserDeleted => "user.deleted",
    UserActivated => "user.activated",
    UserDeactivated => "user.deactivated",
    UserUnlocked => "user.unlocked",
    LoginSucceeded => "login.succeeded",
    LoginFailed => "login.failed",
    LoginLocked => "login.locked",
    MfaEnabled => "mfa.enabled",
    MfaDisabled => "mfa.disabled",
    MfaFailed => "mfa.failed",
    PasswordChanged => "password.changed",
    PasswordResetRequested => "password.reset_requested",
    PasswordReset => "password.reset",
    EmailVerified => "email.verified",
    SessionEnded => "session.ended",
    RefreshReused => "refresh.reused",
}

impl EventKind {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        Self::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == raw)
            .ok_or_else(|| ParseError::new("is not an event type"))
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Details of an event: names and facts, never a secret value.
pub type EventDetails = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub id: EventId,
    pub at: OffsetDateTime,
    pub kind: EventKind,
    /// Who was signed in; `None` for an anonymous request.
    pub actor_id: Option<UserId>,
    /// The user the event is about; `None` when it is nobody's (a login for an unknown name).
    pub subject_id: Option<UserId>,
    pub origin: Origin,
    pub details: EventDetails,
}

/// Which events a listing shows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    /// Events this user did or underwent.
    pub user_id: Option<UserId>,
    /// Events this user underwent.
    pub subject_id: Option<UserId>,
    pub kind: Option<EventKind>,
    /// From this instant on, inclusive.
    pub since: Option<OffsetDateTime>,
    /// Before this instant, exclusive.
    pub until: Option<OffsetDateTime>,
}

/// A slice of the log, newest first: skipping `offset` events, or strictly after the event
/// `after` (keyset), at most `limit`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    pub after: Option<(OffsetDateTime, EventId)>,
    pub offset: u64,
    pub limit: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        assert_eq!(EventKind::ALL.len(), 19);
        for kind in EventKind::ALL {
            assert_eq!(EventKind::parse(kind.as_str()).unwrap(), *kind);
        }
        assert!(EventKind::parse("user.exploded").is_err());
    }
}
