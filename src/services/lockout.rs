//! The login lock: attempts at an account's secrets, counted in the database.

use std::time::Duration;

use time::OffsetDateTime;

use super::{
    ServiceError,
    actor::Actor,
    audit::{AuditLog, Event},
    error::Refusal,
    passwords::PasswordHasher,
};
use crate::{
    domain::{self, EventKind, Origin, UserField, UserId, UserPatch},
    storage::{DynRepository, StorageError},
};

/// How failed logins lock an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failed logins in a row that lock it.
    pub threshold: u32,
    /// How long the lock lasts.
    pub duration: Duration,
}

/// Counts attempts at a secret (a login's password or code, the current password a change
/// asks for) before each is checked (see [`Repository::count_login_attempt`]): past the
/// threshold the answer is [`ServiceError::LoginLocked`] and the secret is not looked at,
/// so that of any number of simultaneous attempts at most the threshold are checked. The
/// counts live in the database, shared by every instance.
///
/// [`Repository::count_login_attempt`]: crate::storage::Repository::count_login_attempt
#[derive(Clone)]
pub struct LoginLock {
    repo: DynRepository,
    hasher: PasswordHasher,
    audit: AuditLog,
    /// `None`: nothing is counted, nothing locks.
    lockout: Option<Lockout>,
}

impl LoginLock {
    pub(super) fn new(
        repo: DynRepository,
        hasher: PasswordHasher,
        audit: AuditLog,
        lockout: Option<Lockout>,
    ) -> Self {
        Self {
            repo,
            hasher,
            audit,
            lockout,
        }
    }

    /// The key under which an account's attempts are counted: one for its email and its
    /// username alike.
    pub(super) fn key(id: &UserId) -> String {
        format!("user:{id}")
    }

    /// Counts an attempt against `key`: [`ServiceError::LoginLocked`] past the threshold,
    /// otherwise the end of the lock this attempt started, if it started one.
    pub(super) async fn count(&self, key: &str) -> Result<Option<OffsetDateTime>, ServiceError> {
        let Some(lockout) = self.lockout else {
            return Ok(None);
        };
        let now = domain::now();
        let attempts = self
            .repo
            .count_login_attempt(key, now, lockout.threshold, lockout.duration)
            .await?;
        if attempts.count > lockout.threshold {
            let until = attempts.locked_until.unwrap_or(now + lockout.duration);
            return Err(ServiceError::LoginLocked {
                retry_after: (until - now).try_into().unwrap_or_default(),
            });
        }
        Ok(attempts.locked_until)
    }

    /// Takes back an attempt [`count`](Self::count) counted, with a lock it started: its
    /// secret was right.
    pub(super) async fn forgive(&self, key: &str) -> Result<(), ServiceError> {
        if let Some(lockout) = self.lockout {
            self.repo
                .forgive_login_attempt(key, lockout.threshold)
                .await?;
        }
        Ok(())
    }

    /// Ends the count of a user: they passed every check of a login, or the lock was lifted.
    pub(super) async fn clear(&self, id: &UserId) -> Result<(), ServiceError> {
        if self.lockout.is_some() {
            self.repo.clear_login_attempts(&Self::key(id)).await?;
        }
        Ok(())
    }

    /// Shows on the user the lock an attempt of theirs started, and records it.
    pub(super) async fn locked(
        &self,
        id: UserId,
        until: OffsetDateTime,
        origin: &Origin,
    ) -> Result<(), ServiceError> {
        let lock = UserPatch::new().set(UserField::LockedUntil(Some(until)));
        let shown = self.repo.update_user(&id, &lock).await?;
        // A login that passed meanwhile ended the series, and the lock with it, perhaps
        // before the write above, which then shows a lock there is not: look again, and
        // take it back off the user as this wrote them (a later write knows better).
        let holds = self
            .repo
            .login_lock(&Self::key(&id))
            .await?
            .is_some_and(|end| end > domain::now());
        if let (Some(shown), false) = (shown, holds) {
            let off = UserPatch::new().set(UserField::LockedUntil(None));
            match self.repo.update_user_if(&id, &off, &shown).await {
                Ok(_) | Err(StorageError::Changed) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let until = until
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        self.audit
            .record(
                Event::new(EventKind::LoginLocked)
                    .about(id)
                    .detail("locked_until", until),
                origin,
            )
            .await;
        Ok(())
    }

    /// The actor's own current password, as a change of a credential asks for it: missing
    /// or wrong is [`Refusal::CurrentPasswordWrong`]. Each one given counts as a login does,
    /// so that a session in other hands does not make guessing the password free; a right
    /// one is taken back. A missing one is no guess, and is refused without a count.
    pub(super) async fn confirm_current(
        &self,
        actor: &Actor,
        given: Option<&str>,
    ) -> Result<(), ServiceError> {
        let refused = || ServiceError::Forbidden(Refusal::CurrentPasswordWrong);
        let Some(given) = given.filter(|given| !given.is_empty()) else {
            return Err(refused());
        };
        let user = actor.user();
        let key = Self::key(&user.id);
        // A place to check the password first: a try the queue has no room for answers 503
        // and does not count.
        let slot = self.hasher.reserve()?;
        let newly_locked = self.count(&key).await?;
        if self
            .hasher
            .verify_in(slot, given, Some(&user.password_hash))
            .await?
        {
            return self.forgive(&key).await;
        }
        if let Some(until) = newly_locked {
            self.locked(user.id, until, actor.origin()).await?;
        }
        Err(refused())
    }
}
