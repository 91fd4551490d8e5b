//! Domain types: once you hold one, it is valid.

mod audit;
mod email;
mod names;
mod password;
mod role;
mod secret;
mod session;
pub mod text;
mod user;
mod version;

pub use audit::{AuditEvent, AuditFilter, AuditQuery, EventDetails, EventId, EventKind};
pub use email::Email;
pub use names::{DisplayName, Username};
pub use password::{NewPassword, Password};
pub use role::Role;
pub use secret::Secret;
pub use session::{Origin, Session, SessionId};
pub use user::{
    ListQuery, Page, SortField, SortKey, SortOrder, User, UserCursor, UserField, UserFilter,
    UserId, UserPatch, from_unix_millis, now, truncate_to_millis, unix_millis,
};
pub use version::{Precondition, Version};

/// Why a value was refused; the message is meant for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

impl ParseError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}
