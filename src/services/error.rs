//! What a service call can fail with, in the services' own terms: no HTTP, no metrics.

use crate::storage::{StorageError, UniqueField};

/// Which secret a caller presented that did not hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// A login: one message for an unknown user and a wrong password.
    Login,
    RefreshToken,
    ResetToken,
    VerificationToken,
    /// The first step of a two-step login.
    MfaToken,
    /// A TOTP or recovery code at login.
    MfaCode,
}

impl Credential {
    fn refusal(self) -> &'static str {
        match self {
            Credential::Login => "invalid credentials",
            Credential::RefreshToken => "the refresh token is invalid, expired or revoked",
            Credential::ResetToken => "the reset token is invalid, expired or already used",
            Credential::VerificationToken => {
                "the verification token is invalid, expired or already used"
            }
            Credential::MfaToken => "the mfa_token is invalid, expired or already used",
            Credential::MfaCode => "the code is wrong or was used already",
        }
    }
}

/// Why a request does not fit the state it met (409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    MfaOn,
    MfaOff,
    NoEnrolment,
}

impl Conflict {
    fn reason(self) -> &'static str {
        match self {
            Conflict::MfaOn => "two-factor sign-in is on already; disable it first",
            Conflict::MfaOff => "two-factor sign-in is not on",
            Conflict::NoEnrolment => "no enrolment was started: POST /api/users/me/mfa/totp first",
        }
    }
}

/// Why an authenticated caller may not do what they asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAdmin,
    NotTheirAccount,
    AdminOnlyFields,
    CurrentPasswordWrong,
    RegistrationClosed,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::NotAdmin => "this needs the admin role",
            Refusal::NotTheirAccount => "you may only access your own account",
            Refusal::AdminOnlyFields => "only an admin may set role, active or email_verified",
            Refusal::CurrentPasswordWrong => "current_password is missing or wrong",
            Refusal::RegistrationClosed => "registration is closed",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No valid access token: missing, malformed, forged, expired, or its user is gone,
    /// deactivated or has changed password since. The reason is logged at debug level only.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    #[error("{}", .0.refusal())]
    InvalidCredentials(Credential),
    #[error("{}", .0.reason())]
    Forbidden(Refusal),
    #[error("no such user")]
    NotFound,
    /// Not a live session of the user who names it.
    #[error("no such session")]
    NoSuchSession,
    /// A well-formed value that a rule of the service refuses (a common password, say),
    /// named by its field in the request.
    #[error("{field} {message}")]
    Invalid {
        field: &'static str,
        message: &'static str,
    },
    /// A query parameter that is well-formed but does not fit (a cursor of another list).
    #[error("{parameter} {message}")]
    BadQuery {
        parameter: &'static str,
        message: &'static str,
    },
    #[error("{0} is already taken")]
    Taken(UniqueField),
    #[error("the last active admin cannot be removed, deactivated or demoted")]
    LastAdmin,
    #[error("{}", .0.reason())]
    Conflict(Conflict),
    /// A conditional request (`If-Match`) named a version of the user that is no longer
    /// current, or another write came first: nothing changed.
    #[error("the user has changed since that version: read it again")]
    PreconditionFailed,
    /// `REQUIRE_VERIFIED_EMAIL`: the password was right, the address is not verified.
    #[error("the email address of this account is not verified yet")]
    EmailNotVerified,
    /// Too many failed logins (or wrong current passwords) in a row: no login, and no
    /// check of the current password, until the lock ends.
    #[error("too many failed attempts at this account's password or code: it is locked for now")]
    LoginLocked { retry_after: std::time::Duration },
    /// A request header that is malformed, named.
    #[error("{header} {message}")]
    BadHeader {
        header: &'static str,
        message: &'static str,
    },
    /// An `Idempotency-Key` used before for another request (another body).
    #[error("this Idempotency-Key was used for another request")]
    IdempotencyKeyReused,
    /// An `Idempotency-Key` whose first request is still running.
    #[error("a request with this Idempotency-Key is still running; retry later")]
    IdempotencyKeyInFlight,
    /// The database does not answer; trying again later may work.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// Every password-hashing thread is busy and their queue is full; trying again in a
    /// moment may work.
    #[error("the service is busy checking passwords; try again shortly")]
    Busy,
    /// A bug or corrupt data.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl ServiceError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// `Some(kind)` when the database failed: "unavailable" or "internal".
    pub fn database_failure(&self) -> Option<&'static str> {
        match self {
            ServiceError::Unavailable(_) => Some("unavailable"),
            ServiceError::Internal(cause) if cause.is::<StorageError>() => Some("internal"),
            _ => None,
        }
    }
}

impl From<StorageError> for ServiceError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Duplicate(field) => ServiceError::Taken(field),
            StorageError::LastActiveAdmin => ServiceError::LastAdmin,
            StorageError::Changed => ServiceError::PreconditionFailed,
            StorageError::UserGone => ServiceError::NotFound,
            StorageError::Unavailable(_) => ServiceError::Unavailable(error.into()),
            // Kept whole, so that `database_failure` can tell it from other bugs.
            StorageError::Internal(_) => ServiceError::Internal(error.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_failures_are_told_from_other_bugs() {
        let storage = ServiceError::from(StorageError::internal(anyhow::anyhow!("corrupt row")));
        assert_eq!(storage.database_failure(), Some("internal"));
        let other = ServiceError::internal(anyhow::anyhow!("bcrypt refused"));
        assert_eq!(other.database_failure(), None);
        let down = ServiceError::from(StorageError::Unavailable(anyhow::anyhow!("no server")));
        assert_eq!(down.database_failure(), Some("unavailable"));
        assert!(matches!(
            ServiceError::from(StorageError::Duplicate(UniqueField::Email)),
            ServiceError::Taken(UniqueField::Email)
        ));
    }
}
