//! Who may do what, decided in one place. A request's [`Actor`] is made only by
//! authentication; the proofs below are made only from an actor, and the methods that need
//! a permission take its proof, so no call can skip the check and none makes it twice.

use super::ServiceError;
use super::error::Refusal;
use crate::domain::{Origin, Role, SessionId, User, UserId};

/// The signed-in user behind a request, as [`super::AccountService::authenticate`] found them,
/// with the session their token belongs to and where the request came from.
#[derive(Debug, Clone)]
pub struct Actor {
    user: User,
    session: SessionId,
    origin: Origin,
}

impl Actor {
    pub(super) fn new(user: User, session: SessionId, origin: Origin) -> Self {
        Self {
            user,
            session,
            origin,
        }
    }

    pub fn user(&self) -> &User {
        &self.user
    }

    pub fn session(&self) -> &SessionId {
        &self.session
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    pub fn id(&self) -> UserId {
        self.user.id
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// The proof that admin-only methods take.
    pub fn admin(&self) -> Result<AdminAccess<'_>, ServiceError> {
        if self.is_admin() {
            Ok(AdminAccess { actor: self })
        } else {
            Err(ServiceError::Forbidden(Refusal::NotAdmin))
        }
    }

    /// The proof that this actor may act on account `id`: their own, or anyone's as an admin.
    pub fn access(&self, id: UserId) -> Result<AccountAccess<'_>, ServiceError> {
        if self.user.id == id || self.is_admin() {
            Ok(AccountAccess {
                actor: self,
                target: id,
            })
        } else {
            Err(ServiceError::Forbidden(Refusal::NotTheirAccount))
        }
    }
}

/// Proof that the actor is an admin.
#[derive(Debug, Clone, Copy)]
pub struct AdminAccess<'a> {
    actor: &'a Actor,
}

impl<'a> AdminAccess<'a> {
    /// The admin's own id.
    pub fn id(self) -> UserId {
        self.actor.id()
    }

    /// The same admin acting on account `id`.
    pub fn on(self, id: UserId) -> AccountAccess<'a> {
        AccountAccess {
            actor: self.actor,
            target: id,
        }
    }
}

/// Proof that the actor may act on one account.
#[derive(Debug, Clone, Copy)]
pub struct AccountAccess<'a> {
    actor: &'a Actor,
    target: UserId,
}

impl<'a> AccountAccess<'a> {
    pub fn target(&self) -> UserId {
        self.target
    }

    pub fn actor(&self) -> &'a Actor {
        self.actor
    }

    /// The actor's own record when the account is theirs: read once per request.
    pub fn own_record(&self) -> Option<&'a User> {
        (self.actor.id() == self.target).then_some(&self.actor.user)
    }

    pub fn by_admin(&self) -> bool {
        self.actor.is_admin()
    }
}
