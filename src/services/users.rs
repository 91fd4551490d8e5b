use super::{
    AccountAccess, AdminAccess, ServiceError,
    audit::{AuditLog, Event},
    error::Refusal,
    listing::{Cursors, Listing, Position, bad_cursor},
    lockout::LoginLock,
    outbox::Outbox,
    password_policy::{self, AccountWords},
    passwords::PasswordHasher,
};
use crate::{
    domain::{
        self, DisplayName, Email, EventKind, ListQuery, NewPassword, Origin, Precondition, Role,
        SortField, SortKey, SortOrder, User, UserCursor, UserField, UserFilter, UserId, UserPatch,
        Username,
    },
    mail::Mail,
    storage::DynRepository,
};

/// One page of users.
pub type UserPage = Listing<User>;

/// The fields every new account has, as registration takes them.
#[derive(Debug, Clone)]
pub struct NewAccount {
    pub name: DisplayName,
    pub email: Email,
    pub username: Option<Username>,
    pub password: NewPassword,
}

/// Requested changes; `None` leaves a field alone, `username: Some(None)` removes it.
#[derive(Debug, Default)]
pub struct UserChanges {
    pub name: Option<DisplayName>,
    pub email: Option<Email>,
    pub username: Option<Option<Username>>,
    pub password: Option<NewPassword>,
    /// Needed when users change their own password or email.
    pub current_password: Option<String>,
    pub role: Option<Role>,
    pub active: Option<bool>,
    pub email_verified: Option<bool>,
}

impl UserChanges {
    fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.email.is_none()
            && self.username.is_none()
            && self.password.is_none()
            && self.role.is_none()
            && self.active.is_none()
            && self.email_verified.is_none()
    }
}

/// What [`UserService::ensure_admin`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnsuredAdmin {
    Created,
    /// An active admin has the address already.
    Exists,
    /// A user who is not an active admin has the address: left as they are.
    NotAnActiveAdmin,
}

/// User management. The last-active-admin rule is kept by the repository, in the same
/// write as the change, so that it holds across processes sharing the database.
#[derive(Clone)]
pub struct UserService {
    repo: DynRepository,
    hasher: PasswordHasher,
    lock: LoginLock,
    outbox: Outbox,
    audit: AuditLog,
}

/// The names of the profile fields that differ between two versions of a user.
fn changed_fields(before: &User, after: &User) -> Vec<&'static str> {
    [
        ("name", before.name != after.name),
        ("username", before.username != after.username),
        ("email", before.email != after.email),
        ("role", before.role != after.role),
        (
            "email_verified",
            before.email_verified != after.email_verified,
        ),
        ("password", before.password_hash != after.password_hash),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// `if_match` against the user as read now: [`ServiceError::PreconditionFailed`] when it
/// names a version that is no longer current. `None` (no condition) always holds.
pub(super) fn check_version(
    if_match: Option<&Precondition>,
    user: &User,
) -> Result<(), ServiceError> {
    match if_match {
        Some(condition) if !condition.holds_for(&user.version(domain::now())) => {
            Err(ServiceError::PreconditionFailed)
        }
        _ => Ok(()),
    }
}

impl UserService {
    pub(super) fn new(
        repo: DynRepository,
        hasher: PasswordHasher,
        lock: LoginLock,
        outbox: Outbox,
        audit: AuditLog,
    ) -> Self {
        Self {
            repo,
            hasher,
            lock,
            outbox,
            audit,
        }
    }

    /// An admin creates a user with any role and state; an address not marked verified gets
    /// a verification link.
    pub async fn create(
        &self,
        admin: AdminAccess<'_>,
        account: NewAccount,
        role: Role,
        active: bool,
        email_verified: bool,
    ) -> Result<User, ServiceError> {
        let user = self.insert(account, role, active, email_verified).await?;
        let actor = admin.on(user.id).actor();
        self.audit
            .record(
                Event::new(EventKind::UserCreated)
                    .by(Some(actor.id()))
                    .about(user.id),
                actor.origin(),
            )
            .await;
        if !user.email_verified {
            self.outbox.verify_later(&user);
        }
        Ok(user)
    }

    /// Stores a new user: a fresh id, every timestamp now, the password hashed.
    pub(super) async fn insert(
        &self,
        account: NewAccount,
        role: Role,
        active: bool,
        email_verified: bool,
    ) -> Result<User, ServiceError> {
        let words = AccountWords {
            email: &account.email,
            username: account.username.as_ref(),
            name: &account.name,
        };
        password_policy::check(&account.password, &words, "password")?;
        let password_hash = self.hasher.hash(account.password.password()).await?;
        let at = domain::now();
        let user = User {
            id: UserId::generate(),
            name: account.name,
            username: account.username,
            email: account.email,
            role,
            active,
            password_hash,
            created_at: at,
            updated_at: at,
            last_login_at: None,
            password_changed_at: at,
            locked_until: None,
            email_verified,
            mfa_enabled: false,
        };
        self.repo.create_user(&user).await?;
        Ok(user)
    }

    /// The target's record: the actor's own as authentication read it, else a fresh read.
    pub async fn get(&self, access: AccountAccess<'_>) -> Result<User, ServiceError> {
        if let Some(own) = access.own_record() {
            return Ok(own.clone());
        }
        self.repo
            .user_by_id(&access.target())
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Users matching `filter`, in `sort` `order`, from `position`.
    pub async fn list(
        &self,
        _: AdminAccess<'_>,
        filter: UserFilter,
        (sort, order): (SortField, SortOrder),
        per_page: u32,
        position: Position,
    ) -> Result<UserPage, ServiceError> {
        let cursors = Cursors::new(&format!(
            "users|{:?}|{:?}|{:?}|{sort:?}|{order:?}",
            filter.q, filter.role, filter.active
        ));
        let (offset, after) = cursors.start::<2>(&position, per_page)?;
        let after = after
            .map(|[key, id]| {
                let key = match sort {
                    SortField::CreatedAt => key
                        .parse::<i64>()
                        .ok()
                        .and_then(domain::from_unix_millis)
                        .map(SortKey::CreatedAt),
                    SortField::Name | SortField::Email => Some(SortKey::Text(key)),
                };
                match (key, UserId::parse(&id)) {
                    (Some(key), Ok(id)) => Ok(UserCursor { key, id }),
                    _ => Err(bad_cursor()),
                }
            })
            .transpose()?;
        let query = ListQuery {
            filter,
            sort,
            order,
            after,
            offset,
            limit: per_page + 1,
        };
        let found = self.repo.list_users(&query).await?;
        Ok(cursors.listing(found, &position, per_page, |user| {
            let key = match SortKey::of(user, sort) {
                SortKey::CreatedAt(at) => domain::unix_millis(at).to_string(),
                SortKey::Text(text) => text,
            };
            vec![key, user.id.to_hex()]
        }))
    }

    pub async fn update(
        &self,
        access: AccountAccess<'_>,
        changes: UserChanges,
    ) -> Result<User, ServiceError> {
        self.update_if(access, changes, None).await
    }

    /// Applies `changes` if the user is still at a version `if_match` names (`None`: any,
    /// last write wins). The version is checked against a fresh read, and the write is
    /// guarded by that read in the database, so that a write racing in between also fails
    /// with [`ServiceError::PreconditionFailed`] and nothing changes.
    pub async fn update_if(
        &self,
        access: AccountAccess<'_>,
        changes: UserChanges,
        if_match: Option<&Precondition>,
    ) -> Result<User, ServiceError> {
        let admin_only =
            changes.role.is_some() || changes.active.is_some() || changes.email_verified.is_some();
        if !access.by_admin() && admin_only {
            return Err(ServiceError::Forbidden(Refusal::AdminOnlyFields));
        }
        if changes.is_empty() {
            // Nothing to change: not even `updated_at` moves.
            let user = self.get(access).await?;
            check_version(if_match, &user)?;
            return Ok(user);
        }
        let target = self.get(access).await?;
        check_version(if_match, &target)?;
        let new_email = changes
            .email
            .as_ref()
            .filter(|email| **email != target.email);
        if access.own_record().is_some() && (changes.password.is_some() || new_email.is_some()) {
            // A new password or address for oneself needs the current password.
            self.lock
                .confirm_current(access.actor(), changes.current_password.as_deref())
                .await?;
        }
        if let Some(password) = &changes.password {
            // Judged against the account as it will be once changed.
            let words = AccountWords {
                email: changes.email.as_ref().unwrap_or(&target.email),
                username: match &changes.username {
                    Some(username) => username.as_ref(),
                    None => target.username.as_ref(),
                },
                name: changes.name.as_ref().unwrap_or(&target.name),
            };
            password_policy::check(password, &words, "password")?;
        }
        let email_changed = new_email.is_some();
        let patch = self.patch(changes, email_changed).await?;
        let updated = match if_match {
            Some(_) => {
                self.repo
                    .update_user_if(&access.target(), &patch, &target)
                    .await?
            }
            None => self.repo.update_user(&access.target(), &patch).await?,
        };
        let user = updated.ok_or(ServiceError::NotFound)?;
        self.changed(&access, &target, &user).await?;
        Ok(user)
    }

    /// What follows a change: audit events, notices, and the end of every session and every
    /// pending reset link when the password changed or the user was deactivated (and of the
    /// links when the address changed).
    async fn changed(
        &self,
        access: &AccountAccess<'_>,
        before: &User,
        after: &User,
    ) -> Result<(), ServiceError> {
        let actor = access.actor();
        let event = |kind| Event::new(kind).by(Some(actor.id())).about(after.id);
        let fields = changed_fields(before, after);
        if !fields.is_empty() {
            let updated = event(EventKind::UserUpdated).detail("fields", fields.clone());
            self.audit.record(updated, actor.origin()).await;
        }
        if before.active != after.active {
            let kind = if after.active {
                EventKind::UserActivated
            } else {
                EventKind::UserDeactivated
            };
            self.audit.record(event(kind), actor.origin()).await;
        }
        if fields.contains(&"password") {
            self.audit
                .record(event(EventKind::PasswordChanged), actor.origin())
                .await;
            self.outbox
                .notify_later(&after.email, Mail::PasswordChanged);
            // A new password ends every session that the old one opened.
            self.end_sessions(
                after.id,
                "password_changed",
                Some(actor.id()),
                actor.origin(),
            )
            .await?;
        }
        let deactivated = before.active && !after.active;
        if deactivated {
            self.end_sessions(after.id, "deactivated", Some(actor.id()), actor.origin())
                .await?;
        }
        // A reset link mailed before is for a password, an address or an account that is
        // no more: whoever still holds it (an old mailbox, a read mail) must not get in.
        if deactivated || fields.contains(&"password") || fields.contains(&"email") {
            self.repo
                .void_reset_tokens(&after.id, domain::now())
                .await?;
        }
        if fields.contains(&"email") {
            self.outbox.notify_later(&before.email, Mail::EmailChanged);
            if !after.email_verified {
                self.outbox.verify_later(after);
            }
        }
        Ok(())
    }

    /// Ends every live session of a user, recording it when there were any.
    pub(super) async fn end_sessions(
        &self,
        id: UserId,
        reason: &str,
        by: Option<UserId>,
        origin: &Origin,
    ) -> Result<(), ServiceError> {
        let ended = self.repo.end_user_sessions(&id, domain::now()).await?;
        if ended > 0 {
            self.audit
                .record(
                    Event::new(EventKind::SessionEnded)
                        .by(by)
                        .about(id)
                        .detail("reason", reason)
                        .detail("sessions", ended),
                    origin,
                )
                .await;
        }
        Ok(())
    }

    /// The values a change stores: every field asked for, `updated_at`, and for a new
    /// password its hash and `password_changed_at`. Hashed last, so that a request refused
    /// earlier costs no bcrypt work.
    /// A new address is unverified, unless an admin says otherwise in the same change.
    async fn patch(
        &self,
        changes: UserChanges,
        email_changed: bool,
    ) -> Result<UserPatch, ServiceError> {
        let at = domain::now();
        let mut patch = UserPatch::new();
        let email_verified = match (email_changed, changes.email_verified) {
            (true, verified) => Some(verified.unwrap_or(false)),
            (false, verified) => verified,
        };
        let fields = [
            changes.name.map(UserField::Name),
            changes.username.map(UserField::Username),
            changes.email.map(UserField::Email),
            changes.role.map(UserField::Role),
            changes.active.map(UserField::Active),
            email_verified.map(UserField::EmailVerified),
        ];
        for field in fields.into_iter().flatten() {
            patch = patch.set(field);
        }
        if let Some(password) = &changes.password {
            let hash = self.hasher.hash(password.password()).await?;
            patch = patch
                .set(UserField::PasswordHash(hash))
                .set(UserField::PasswordChangedAt(at));
        }
        Ok(patch.set(UserField::UpdatedAt(at)))
    }

    pub async fn set_active(
        &self,
        admin: AdminAccess<'_>,
        id: UserId,
        active: bool,
    ) -> Result<User, ServiceError> {
        self.set_active_if(admin, id, active, None).await
    }

    /// [`UserService::set_active`] under `if_match`, as for [`UserService::update_if`].
    pub async fn set_active_if(
        &self,
        admin: AdminAccess<'_>,
        id: UserId,
        active: bool,
        if_match: Option<&Precondition>,
    ) -> Result<User, ServiceError> {
        let changes = UserChanges {
            active: Some(active),
            ..UserChanges::default()
        };
        self.update_if(admin.on(id), changes, if_match).await
    }

    /// Deletes the user with their sessions; their audit events stay.
    pub async fn delete(&self, access: AccountAccess<'_>) -> Result<(), ServiceError> {
        self.delete_if(access, None).await
    }

    /// [`UserService::delete`] under `if_match`, as for [`UserService::update_if`].
    pub async fn delete_if(
        &self,
        access: AccountAccess<'_>,
        if_match: Option<&Precondition>,
    ) -> Result<(), ServiceError> {
        let deleted = match if_match {
            Some(_) => {
                let target = self.get(access).await?;
                check_version(if_match, &target)?;
                self.repo.delete_user_if(&access.target(), &target).await?
            }
            None => self.repo.delete_user(&access.target()).await?,
        };
        if !deleted {
            return Err(ServiceError::NotFound);
        }
        let actor = access.actor();
        self.audit
            .record(
                Event::new(EventKind::UserDeleted)
                    .by(Some(actor.id()))
                    .about(access.target()),
                actor.origin(),
            )
            .await;
        Ok(())
    }

    /// Creates the configured admin unless a user with that email exists already, whom it
    /// leaves as they are (created once, never overwritten).
    pub async fn ensure_admin(&self, account: NewAccount) -> Result<EnsuredAdmin, ServiceError> {
        let existing = |user: Option<User>| match user {
            Some(user) if user.is_active_admin() => EnsuredAdmin::Exists,
            _ => EnsuredAdmin::NotAnActiveAdmin,
        };
        if let Some(user) = self.repo.user_by_email(&account.email).await? {
            return Ok(existing(Some(user)));
        }
        let email = account.email.clone();
        // The operator who configured it vouches for the address.
        match self.insert(account, Role::Admin, true, true).await {
            Ok(_) => Ok(EnsuredAdmin::Created),
            // Another instance (or a registration) took the address between our read and
            // our write.
            Err(ServiceError::Taken(_)) => Ok(existing(self.repo.user_by_email(&email).await?)),
            Err(e) => Err(e),
        }
    }
}
