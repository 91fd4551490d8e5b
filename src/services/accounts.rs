use std::time::Duration;

use url::Url;

use super::{
    AccountAccess, Actor, AdminAccess, ServiceError, UserService, VerificationSettings,
    audit::{AuditLog, Event},
    error::{Credential, Refusal},
    lockout::{Lockout, LoginLock},
    mfa::{CHALLENGE_TTL, MAX_CODE_ATTEMPTS, MfaService, SecondFactor},
    outbox::{self, Outbox},
    password_policy::{self, AccountWords},
    passwords::PasswordHasher,
    tokens::{OpaqueToken, TokenService, hash_token},
    users::{self, NewAccount},
};
use crate::{
    domain::{
        self, Email, EventKind, NewPassword, Origin, Password, Precondition, Role, Session,
        SessionId, User, UserField, UserId, UserPatch, Username, unix_millis,
    },
    mail::{Mail, Mailer},
    metrics,
    storage::{
        DynRepository, OneTimeTokenRecord, RefreshTokenRecord, RefreshTokenUse, StorageError,
    },
};

/// How often a guarded write is read and tried again when other writes keep coming first.
const GUARDED_WRITE_TRIES: usize = 5;

/// What the account service is configured with.
#[derive(Debug, Clone)]
pub struct AccountSettings {
    pub allow_registration: bool,
    pub refresh_token_ttl: Duration,
    pub reset_token_ttl: Duration,
    /// The page a reset link opens; the token is added as `?token=`.
    pub password_reset_url: Url,
    /// `None`: logins are never locked.
    pub lockout: Option<Lockout>,
    pub verification: VerificationSettings,
    /// Refuse login and refresh (403) to users whose address is not verified.
    pub require_verified_email: bool,
    /// At most one mail of a kind (reset, verification) per address per this long.
    pub mail_throttle: Option<Duration>,
}

/// How long a password reset asked for while the database is away keeps being tried.
pub const RESET_RETRY_BUDGET: Duration = Duration::from_secs(60);

/// Runs `work` until it succeeds, fails for another reason than an unavailable database,
/// or `budget` is spent, pausing between tries (0.5 s, doubling, at most 8 s).
pub(super) async fn retry_while_unavailable<T, F, Fut>(
    budget: Duration,
    mut work: F,
) -> Result<T, ServiceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ServiceError>>,
{
    let deadline = tokio::time::Instant::now() + budget;
    let mut pause = Duration::from_millis(500);
    loop {
        match work().await {
            Err(ServiceError::Unavailable(cause))
                if tokio::time::Instant::now() + pause < deadline =>
            {
                tracing::warn!(
                    error = format!("{cause:#}"),
                    "database unavailable; trying again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(8));
            }
            result => return result,
        }
    }
}

/// How a user names themselves at login.
#[derive(Debug, Clone)]
pub enum LoginId {
    Email(Email),
    Username(Username),
}

/// What a successful login or refresh hands out.
#[derive(Debug, Clone)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
}

/// An access token alone, for a session that goes on with the refresh token it has.
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub access_token: String,
    pub expires_in: u64,
}

/// What a login with the right password leads to.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    Tokens(TokenPair),
    /// MFA is on: the pair comes from [`AccountService::login_mfa`] with this token.
    MfaRequired {
        mfa_token: String,
        expires_in: u64,
    },
}

/// A live session as its owner sees it.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub session: Session,
    /// The session of the token that asked.
    pub current: bool,
}

/// Why a login failed, as the audit log says it.
#[derive(Debug, Clone, Copy)]
enum Failure {
    /// Wrong password, unknown name or a deactivated user: one answer for all.
    Password,
    Locked,
    MfaCode,
}

/// Registration, authentication, token rotation and password reset: every rule about
/// credentials and tokens.
#[derive(Clone)]
pub struct AccountService {
    repo: DynRepository,
    users: UserService,
    mfa: MfaService,
    hasher: PasswordHasher,
    lock: LoginLock,
    tokens: TokenService,
    mailer: Mailer,
    outbox: Outbox,
    audit: AuditLog,
    settings: AccountSettings,
}

/// What the account service works with.
pub(super) struct AccountParts {
    pub repo: DynRepository,
    pub users: UserService,
    pub mfa: MfaService,
    pub hasher: PasswordHasher,
    pub lock: LoginLock,
    pub tokens: TokenService,
    pub mailer: Mailer,
    pub outbox: Outbox,
    pub audit: AuditLog,
}

impl AccountService {
    pub(super) fn new(parts: AccountParts, settings: AccountSettings) -> Self {
        let AccountParts {
            repo,
            users,
            mfa,
            hasher,
            lock,
            tokens,
            mailer,
            outbox,
            audit,
        } = parts;
        Self {
            repo,
            users,
            mfa,
            hasher,
            lock,
            tokens,
            mailer,
            outbox,
            audit,
            settings,
        }
    }

    /// Self-service sign-up, when it is open. Asked for before the new account's fields are
    /// judged, so that a closed registration answers the same whatever is sent.
    pub fn registration(&self) -> Result<Registration<'_>, ServiceError> {
        if !self.settings.allow_registration {
            return Err(ServiceError::Forbidden(Refusal::RegistrationClosed));
        }
        Ok(Registration { accounts: self })
    }

    /// Mails a fresh verification link, after the answer, when `email` belongs to an active
    /// user whose address is not verified; the caller learns nothing either way.
    pub fn resend_verification(&self, email: Email) {
        let accounts = self.clone();
        outbox::background("email_verification", async move {
            match accounts.repo.user_by_email(&email).await? {
                Some(user) if user.active && !user.email_verified => {
                    accounts.outbox.send_verification(&user).await
                }
                _ => Ok(()),
            }
        });
    }

    /// Spends a verification token: its address is now verified, if it is still the user's.
    /// The mark is written only while the user is as read, so that a change of address
    /// landing in between cannot take it: another write first means reading again.
    pub async fn verify_email(&self, token: &str, origin: &Origin) -> Result<User, ServiceError> {
        let refused = || ServiceError::InvalidCredentials(Credential::VerificationToken);
        let now = domain::now();
        let Some((id, email)) = self
            .repo
            .consume_verification_token(&hash_token(token), now)
            .await?
        else {
            return Err(refused());
        };
        for _ in 0..GUARDED_WRITE_TRIES {
            let verified = UserPatch::new()
                .set(UserField::EmailVerified(true))
                .set(UserField::UpdatedAt(domain::now()));
            let user = match self.repo.user_by_id(&id).await? {
                Some(user) if user.email == email => user,
                _ => return Err(refused()),
            };
            if user.email_verified {
                return Ok(user);
            }
            match self.repo.update_user_if(&id, &verified, &user).await {
                Ok(Some(user)) => {
                    self.audit
                        .record(
                            Event::new(EventKind::EmailVerified)
                                .about(id)
                                .detail("email", user.email.as_str()),
                            origin,
                        )
                        .await;
                    return Ok(user);
                }
                Ok(None) => return Err(refused()),
                Err(StorageError::Changed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Other writes came first every time: rare enough to say so rather than wait.
        Err(ServiceError::PreconditionFailed)
    }

    /// The actor behind an access token. The token must be well signed and unexpired, its
    /// session live, and its user must still exist, be active and have the password the
    /// token was issued under. The user and the session are read in one round trip. Every
    /// reason to refuse is the same error; the reason is logged at debug level.
    pub async fn authenticate(
        &self,
        access_token: &str,
        origin: Origin,
    ) -> Result<Actor, ServiceError> {
        let refuse = |reason: &str| {
            tracing::debug!(reason, "bearer token refused");
            ServiceError::Unauthenticated
        };
        let claims = self
            .tokens
            .verify_access(access_token)
            .map_err(|e| refuse(&format!("token rejected: {e}")))?;
        let id = claims
            .sub
            .parse()
            .map_err(|_| refuse("malformed subject"))?;
        let session = SessionId::parse(&claims.sid).map_err(|_| refuse("malformed session"))?;
        let (user, live) = self
            .repo
            .user_with_session(&id, &session, domain::now())
            .await?
            .ok_or_else(|| refuse("user no longer exists"))?;
        if !user.active {
            return Err(refuse("user is deactivated"));
        }
        if claims.pwd != unix_millis(user.password_changed_at) {
            return Err(refuse("token predates a password change"));
        }
        if !live {
            return Err(refuse("the session has ended"));
        }
        Ok(Actor::new(user, session, origin))
    }

    /// Logs in by email or username. With a lockout configured, the attempt is counted
    /// before the password is checked (see [`Repository::count_login_attempt`]): past the
    /// threshold the answer is [`ServiceError::LoginLocked`] and the password is not looked
    /// at, so that of any number of simultaneous attempts at most the threshold are checked.
    /// A name that is nobody's is counted and locked the same way. With MFA on, the right
    /// password leads to the second step and its attempt is taken back: only wrong passwords
    /// and wrong codes count, and only a passed second step ends the count.
    ///
    /// [`Repository::count_login_attempt`]: crate::storage::Repository::count_login_attempt
    pub async fn login(
        &self,
        id: LoginId,
        password: &str,
        origin: &Origin,
    ) -> Result<LoginOutcome, ServiceError> {
        let user = match &id {
            LoginId::Email(email) => self.repo.user_by_email(email).await?,
            LoginId::Username(username) => self.repo.user_by_username(username).await?,
        };
        let key = match (&user, &id) {
            (Some(user), _) => LoginLock::key(&user.id),
            (None, LoginId::Email(email)) => format!("email:{email}"),
            (None, LoginId::Username(username)) => format!("username:{}", username.key()),
        };
        // A place to check the password first: an attempt the hashing queue has no room for
        // answers 503 and does not count toward the lock.
        let slot = self.hasher.reserve()?;
        let newly_locked = self.count_attempt(&key, user.as_ref(), origin).await?;
        // Verify even for an unknown user (against a dummy hash), so both fail alike and in
        // about the same time.
        let matched = self
            .hasher
            .verify_in(
                slot,
                password,
                user.as_ref().map(|u| u.password_hash.as_str()),
            )
            .await?;
        let user = match user {
            Some(user) if matched && user.active => user,
            user => {
                self.failed(user.as_ref(), Failure::Password, newly_locked, origin)
                    .await?;
                return Err(ServiceError::InvalidCredentials(Credential::Login));
            }
        };
        if user.mfa_enabled {
            // Taken back first, so that nothing failing after it leaves it counted.
            self.lock.forgive(&key).await?;
        }
        if self.hasher.needs_rehash(&user.password_hash) {
            // A stronger hash of the same password is not a change of the password:
            // `password_changed_at` stays.
            let password = Password::parse(password).map_err(ServiceError::internal)?;
            let hash = self.hasher.hash(&password).await?;
            let rehashed = UserPatch::new().set(UserField::PasswordHash(hash));
            self.repo.update_user(&user.id, &rehashed).await?;
        }
        if user.mfa_enabled {
            self.ensure_verified(&user)?;
            let token = OpaqueToken::generate();
            let now = domain::now();
            self.repo
                .insert_mfa_challenge(OneTimeTokenRecord {
                    token_hash: token.hash.clone(),
                    user_id: user.id,
                    created_at: now,
                    expires_at: now + CHALLENGE_TTL,
                })
                .await
                .map_err(|e| refusal_if_gone(e, Credential::Login))?;
            // The second step stands for this password only, as a session does.
            if !self.still_as_checked(&user).await? {
                self.repo
                    .consume_mfa_challenge(&token.hash, domain::now())
                    .await?;
                return Err(ServiceError::InvalidCredentials(Credential::Login));
            }
            return Ok(LoginOutcome::MfaRequired {
                mfa_token: token.secret,
                expires_in: CHALLENGE_TTL.as_secs(),
            });
        }
        self.signed_in(&user, None, origin)
            .await
            .map(LoginOutcome::Tokens)
    }

    /// The second step of a login with MFA on: the `mfa_token` of the first and a current
    /// TOTP code or an unused recovery code. Each `mfa_token` takes
    /// [`MAX_CODE_ATTEMPTS`] codes at most; each code counts toward the login lock.
    pub async fn login_mfa(
        &self,
        mfa_token: &str,
        code: &str,
        origin: &Origin,
    ) -> Result<TokenPair, ServiceError> {
        let token_hash = hash_token(mfa_token);
        let refused = || ServiceError::InvalidCredentials(Credential::MfaToken);
        let Some(id) = self
            .repo
            .attempt_mfa_challenge(&token_hash, domain::now(), MAX_CODE_ATTEMPTS)
            .await?
        else {
            return Err(refused());
        };
        let user = self
            .repo
            .user_by_id(&id)
            .await?
            .filter(|user| user.active && user.mfa_enabled)
            .ok_or_else(refused)?;
        let newly_locked = self
            .count_attempt(&LoginLock::key(&user.id), Some(&user), origin)
            .await?;
        let Some(code) = self.mfa.check(&user, code).await? else {
            self.failed(Some(&user), Failure::MfaCode, newly_locked, origin)
                .await?;
            return Err(ServiceError::InvalidCredentials(Credential::MfaCode));
        };
        // The challenge before the code: of two codes sent with one `mfa_token`, the one
        // whose request loses it spends nothing. Then the code, which another sign-in of
        // the user's may have spent meanwhile. Either way this `mfa_token` is gone, and
        // its code was right: no failure, and the attempt is taken back.
        let now = domain::now();
        let factor = match self.repo.consume_mfa_challenge(&token_hash, now).await? {
            true => self.mfa.spend(&user.id, code).await?,
            false => None,
        };
        let Some(factor) = factor else {
            self.lock.forgive(&LoginLock::key(&user.id)).await?;
            return Err(refused());
        };
        self.signed_in(&user, Some(factor), origin).await
    }

    /// Counts a login attempt against `key` (see [`LoginLock::count`]); one refused for the
    /// lock is recorded as such.
    async fn count_attempt(
        &self,
        key: &str,
        user: Option<&User>,
        origin: &Origin,
    ) -> Result<Option<time::OffsetDateTime>, ServiceError> {
        let counted = self.lock.count(key).await;
        if let Err(ServiceError::LoginLocked { .. }) = counted {
            self.failed(user, Failure::Locked, None, origin).await?;
        }
        counted
    }

    /// Counts and records a failed login; when it locked the account, the user record
    /// shows until when.
    async fn failed(
        &self,
        user: Option<&User>,
        failure: Failure,
        newly_locked: Option<time::OffsetDateTime>,
        origin: &Origin,
    ) -> Result<(), ServiceError> {
        let subject = user.map(|user| user.id);
        let (outcome, reason) = match failure {
            Failure::Password => ("failure", "invalid_credentials"),
            Failure::Locked => ("locked", "locked"),
            Failure::MfaCode => ("failure", "wrong_code"),
        };
        metrics::record_login(outcome);
        let mut event = Event::new(EventKind::LoginFailed).detail("reason", reason);
        if let Some(id) = subject {
            event = event.about(id);
            if let Failure::MfaCode = failure {
                self.mfa.failed(None, id, "login", origin).await;
            }
        }
        self.audit.record(event, origin).await;
        if let (Some(id), Some(until)) = (subject, newly_locked) {
            self.lock.locked(id, until, origin).await?;
        }
        Ok(())
    }

    /// A login passed every check: a new session starts, the count of failures ends and
    /// the login is stamped, unless the user changed meanwhile (see
    /// [`AccountService::still_as_checked`]).
    async fn signed_in(
        &self,
        user: &User,
        factor: Option<SecondFactor>,
        origin: &Origin,
    ) -> Result<TokenPair, ServiceError> {
        let refused = if factor.is_some() {
            Credential::MfaToken
        } else {
            Credential::Login
        };
        self.ensure_verified(user)?;
        let now = domain::now();
        let session = Session {
            id: SessionId::generate(),
            user_id: user.id,
            created_at: now,
            last_used_at: now,
            expires_at: now + self.settings.refresh_token_ttl,
            origin: origin.clone(),
        };
        self.repo
            .create_session(&session)
            .await
            .map_err(|e| refusal_if_gone(e, refused))?;
        if !self.still_as_checked(user).await? {
            self.repo
                .end_session(&user.id, &session.id, domain::now())
                .await?;
            return Err(ServiceError::InvalidCredentials(refused));
        }
        self.lock.clear(&user.id).await?;
        // The login time is not a change of the profile: `updated_at` stays. The lock the
        // count just ended goes off the user too, even one `user` was read without: an
        // attempt that failed meanwhile may have started it.
        let patch = UserPatch::new()
            .set(UserField::LastLoginAt(now))
            .set(UserField::LockedUntil(None));
        self.repo.update_user(&user.id, &patch).await?;
        metrics::record_login("success");
        let mut event = Event::new(EventKind::LoginSucceeded)
            .about(user.id)
            .detail("session_id", session.id.as_str());
        if let Some(factor) = factor {
            event = event.detail("second_factor", factor.as_str());
        }
        self.audit.record(event, origin).await;
        self.issue_pair(user, session.id, refused).await
    }

    /// Whether `user`, whose password a login checked, is still there, active and with that
    /// password. A new password, a deactivation or a removal writes the user and then ends
    /// their sessions and pending second steps: one that landed after `user` was read ended
    /// them before the login's own existed. Asked once that exists, a change is seen here
    /// or has ended it.
    async fn still_as_checked(&self, user: &User) -> Result<bool, ServiceError> {
        Ok(self
            .repo
            .user_by_id(&user.id)
            .await?
            .is_some_and(|current| {
                current.active && current.password_changed_at == user.password_changed_at
            }))
    }

    /// `REQUIRE_VERIFIED_EMAIL`: no tokens for an address not yet verified.
    fn ensure_verified(&self, user: &User) -> Result<(), ServiceError> {
        if self.settings.require_verified_email && !user.email_verified {
            Err(ServiceError::EmailNotVerified)
        } else {
            Ok(())
        }
    }

    /// An admin ends a user's login lock, and the failures counted toward one.
    pub async fn unlock(&self, admin: AdminAccess<'_>, id: UserId) -> Result<User, ServiceError> {
        self.unlock_if(admin, id, None).await
    }

    /// [`AccountService::unlock`] if the user is still at a version `if_match` names, checked
    /// as by [`super::UserService::update_if`]: the lock is lifted by a write guarded by the
    /// user as read, and the failures counted are forgotten only once it is.
    pub async fn unlock_if(
        &self,
        admin: AdminAccess<'_>,
        id: UserId,
        if_match: Option<&Precondition>,
    ) -> Result<User, ServiceError> {
        let user = match if_match {
            None => self.end_lock(&id).await?,
            Some(_) => {
                let read = self
                    .repo
                    .user_by_id(&id)
                    .await?
                    .ok_or(ServiceError::NotFound)?;
                users::check_version(if_match, &read)?;
                let unlocked = UserPatch::new().set(UserField::LockedUntil(None));
                let user = self.repo.update_user_if(&id, &unlocked, &read).await?;
                self.lock.clear(&id).await?;
                user
            }
        }
        .ok_or(ServiceError::NotFound)?;
        let actor = admin.on(id).actor();
        self.audit
            .record(
                Event::new(EventKind::UserUnlocked)
                    .by(Some(actor.id()))
                    .about(id),
                actor.origin(),
            )
            .await;
        Ok(user)
    }

    async fn end_lock(&self, id: &UserId) -> Result<Option<User>, ServiceError> {
        self.lock.clear(id).await?;
        let unlocked = UserPatch::new().set(UserField::LockedUntil(None));
        Ok(self.repo.update_user(id, &unlocked).await?)
    }

    /// Rotates a refresh token: a live one is spent for a new pair of the same session; one
    /// presented again after it was spent ends that session.
    pub async fn refresh(
        &self,
        refresh_token: &str,
        origin: &Origin,
    ) -> Result<TokenPair, ServiceError> {
        let found = self
            .repo
            .use_refresh_token(&hash_token(refresh_token), domain::now())
            .await?;
        let (user, session) = self.session_of_refresh_token(found, origin).await?;
        self.issue_pair(&user, session, Credential::RefreshToken)
            .await
    }

    /// A fresh access token for the session of a refresh token that stays as it is. For the
    /// web pages, which keep one refresh token in a cookie that every open tab shares:
    /// rotating it on each page load would let one tab spend what another still holds, and
    /// the reuse rule would end the session. The token must pass every check a refresh makes.
    pub async fn access_token(
        &self,
        refresh_token: &str,
        origin: &Origin,
    ) -> Result<AccessToken, ServiceError> {
        let found = self
            .repo
            .peek_refresh_token(&hash_token(refresh_token))
            .await?;
        let (user, session) = self.session_of_refresh_token(found, origin).await?;
        self.issue_access(&user, &session)
    }

    /// The user and session a presented refresh token is good for: a live token (spent by a
    /// refresh, or only looked at) of a live session, not expired, issued after the user's
    /// last password change, of an active user (verified, when that is required). A token
    /// presented again after it was spent ends its session.
    async fn session_of_refresh_token(
        &self,
        found: RefreshTokenUse,
        origin: &Origin,
    ) -> Result<(User, SessionId), ServiceError> {
        let refused = ServiceError::InvalidCredentials(Credential::RefreshToken);
        let now = domain::now();
        match found {
            RefreshTokenUse::Spent(record) | RefreshTokenUse::Live(record)
                if record.expires_at > now =>
            {
                let user = self.repo.user_by_id(&record.user_id).await?;
                match user {
                    // A token older than the password would survive a reset that raced it
                    // (the reset revokes, then this refresh issues anew): refuse it.
                    Some(user) if user.active && record.created_at >= user.password_changed_at => {
                        self.ensure_verified(&user)?;
                        Ok((user, record.session_id))
                    }
                    _ => Err(refused),
                }
            }
            RefreshTokenUse::Replayed {
                session_id,
                user_id,
            } => {
                tracing::warn!("a spent refresh token was presented again; ending its session");
                self.repo.end_session(&user_id, &session_id, now).await?;
                self.audit
                    .record(
                        Event::new(EventKind::RefreshReused)
                            .about(user_id)
                            .detail("session_id", session_id.as_str()),
                        origin,
                    )
                    .await;
                Err(refused)
            }
            RefreshTokenUse::Spent(_)
            | RefreshTokenUse::Live(_)
            | RefreshTokenUse::Revoked
            | RefreshTokenUse::Unknown => Err(refused),
        }
    }

    /// Ends the session of a refresh token. Unknown tokens are accepted silently (RFC 7009
    /// style): the caller learns nothing about which tokens exist.
    pub async fn logout(&self, refresh_token: &str, origin: &Origin) -> Result<(), ServiceError> {
        let ended = self
            .repo
            .end_session_of_token(&hash_token(refresh_token), domain::now())
            .await?;
        if let Some((user_id, session_id)) = ended {
            self.session_ended(Some(user_id), user_id, &session_id, "logout", origin)
                .await;
        }
        Ok(())
    }

    /// The live sessions of an account, newest first.
    pub async fn sessions(
        &self,
        access: AccountAccess<'_>,
    ) -> Result<Vec<SessionView>, ServiceError> {
        let id = self.existing(&access).await?;
        let current = access.actor().session();
        Ok(self
            .repo
            .live_sessions(&id, domain::now())
            .await?
            .into_iter()
            .map(|session| SessionView {
                current: session.id == *current,
                session,
            })
            .collect())
    }

    /// Ends one of the actor's own sessions; not found unless it is theirs and live.
    pub async fn end_session(
        &self,
        actor: &Actor,
        session: &SessionId,
    ) -> Result<(), ServiceError> {
        if !self
            .repo
            .end_session(&actor.id(), session, domain::now())
            .await?
        {
            return Err(ServiceError::NoSuchSession);
        }
        self.session_ended(
            Some(actor.id()),
            actor.id(),
            session,
            "signed_out",
            actor.origin(),
        )
        .await;
        Ok(())
    }

    /// Ends every session of an account (the asking one too, when it is the actor's own).
    pub async fn end_sessions(&self, access: AccountAccess<'_>) -> Result<(), ServiceError> {
        let id = self.existing(&access).await?;
        let actor = access.actor();
        self.users
            .end_sessions(
                id,
                "signed_out_everywhere",
                Some(actor.id()),
                actor.origin(),
            )
            .await
    }

    /// The target of `access`, which must exist.
    async fn existing(&self, access: &AccountAccess<'_>) -> Result<UserId, ServiceError> {
        if access.own_record().is_none() && self.repo.user_by_id(&access.target()).await?.is_none()
        {
            return Err(ServiceError::NotFound);
        }
        Ok(access.target())
    }

    async fn session_ended(
        &self,
        by: Option<UserId>,
        subject: UserId,
        session: &SessionId,
        reason: &str,
        origin: &Origin,
    ) {
        self.audit
            .record(
                Event::new(EventKind::SessionEnded)
                    .by(by)
                    .about(subject)
                    .detail("session_id", session.as_str())
                    .detail("reason", reason),
                origin,
            )
            .await;
    }

    /// Starts a reset in the background and returns at once: the caller learns nothing,
    /// not even from timing, about whether `email` belongs to an account. While the
    /// database is unavailable the work is tried again for up to [`RESET_RETRY_BUDGET`];
    /// a failure for good is logged and counted. (A reset still in flight at shutdown is
    /// dropped; the user asks again.)
    pub fn forgot_password(&self, email: Email, origin: Origin) {
        let accounts = self.clone();
        outbox::background("password_reset", async move {
            retry_while_unavailable(RESET_RETRY_BUDGET, || accounts.start_reset(&email, &origin))
                .await
        });
    }

    /// Stores a reset token for an active user with that address and mails the link.
    async fn start_reset(&self, email: &Email, origin: &Origin) -> Result<(), ServiceError> {
        let user = self.repo.user_by_email(email).await?;
        let mut event = Event::new(EventKind::PasswordResetRequested);
        if let Some(user) = &user {
            event = event.about(user.id);
        }
        self.audit.record(event, origin).await;
        let Some(user) = user else {
            return Ok(());
        };
        if !user.active || !self.outbox.may_send("reset", &user.email).await? {
            return Ok(());
        }
        let token = OpaqueToken::generate();
        let now = domain::now();
        let stored = self
            .repo
            .insert_reset_token(OneTimeTokenRecord {
                token_hash: token.hash,
                user_id: user.id,
                created_at: now,
                expires_at: now + self.settings.reset_token_ttl,
            })
            .await;
        match stored {
            // Removed since: nobody to mail.
            Err(StorageError::UserGone) => return Ok(()),
            stored => stored?,
        }
        let mut link = self.settings.password_reset_url.clone();
        link.query_pairs_mut().append_pair("token", &token.secret);
        self.mailer
            .send(&user.email, Mail::ResetLink(link.as_str()))
            .await;
        Ok(())
    }

    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &NewPassword,
        origin: &Origin,
    ) -> Result<(), ServiceError> {
        let refused = || ServiceError::InvalidCredentials(Credential::ResetToken);
        let token_hash = hash_token(token);
        // The new password is judged before the token is spent, so that a refused one
        // costs the user nothing.
        let owner = match self
            .repo
            .reset_token_owner(&token_hash, domain::now())
            .await?
        {
            Some(id) => self.repo.user_by_id(&id).await?,
            None => None,
        };
        let Some(owner) = owner else {
            return Err(refused());
        };
        password_policy::check(new_password, &AccountWords::of(&owner), "new_password")?;
        let Some(user_id) = self
            .repo
            .consume_reset_token(&token_hash, domain::now())
            .await?
        else {
            return Err(refused());
        };
        let password_hash = self.hasher.hash(new_password.password()).await?;
        let at = domain::now();
        let patch = UserPatch::new()
            .set(UserField::PasswordHash(password_hash))
            .set(UserField::PasswordChangedAt(at))
            .set(UserField::UpdatedAt(at));
        if self.repo.update_user(&user_id, &patch).await?.is_none() {
            return Err(refused());
        }
        // A reset also ends a login lock.
        if let Some(user) = self.end_lock(&user_id).await? {
            self.outbox.notify_later(&user.email, Mail::PasswordChanged);
        }
        self.audit
            .record(Event::new(EventKind::PasswordReset).about(user_id), origin)
            .await;
        // Every session ends with the password that opened it.
        self.users
            .end_sessions(user_id, "password_reset", None, origin)
            .await
    }

    fn issue_access(
        &self,
        user: &User,
        session_id: &SessionId,
    ) -> Result<AccessToken, ServiceError> {
        Ok(AccessToken {
            access_token: self
                .tokens
                .issue_access(user, session_id)
                .map_err(ServiceError::Internal)?,
            expires_in: self.tokens.access_ttl().as_secs(),
        })
    }

    /// Tokens for a session of `user`; refused as `credential` when the user is gone.
    async fn issue_pair(
        &self,
        user: &User,
        session_id: SessionId,
        credential: Credential,
    ) -> Result<TokenPair, ServiceError> {
        let AccessToken {
            access_token,
            expires_in,
        } = self.issue_access(user, &session_id)?;
        let refresh = OpaqueToken::generate();
        let now = domain::now();
        self.repo
            .insert_refresh_token(RefreshTokenRecord {
                token_hash: refresh.hash,
                session_id,
                user_id: user.id,
                created_at: now,
                expires_at: now + self.settings.refresh_token_ttl,
            })
            .await
            .map_err(|e| refusal_if_gone(e, credential))?;
        Ok(TokenPair {
            access_token,
            expires_in,
            refresh_token: refresh.secret,
        })
    }
}

/// A write about a user who is gone, refused as `credential` would be: the user is gone
/// as far as the caller can tell. Other failures stay as they are.
fn refusal_if_gone(error: StorageError, credential: Credential) -> ServiceError {
    match error {
        StorageError::UserGone => ServiceError::InvalidCredentials(credential),
        other => other.into(),
    }
}

/// An open registration, from [`AccountService::registration`].
pub struct Registration<'a> {
    accounts: &'a AccountService,
}

impl Registration<'_> {
    /// An active user with the user role.
    pub async fn register(
        self,
        account: NewAccount,
        origin: &Origin,
    ) -> Result<User, ServiceError> {
        let accounts = self.accounts;
        let user = accounts
            .users
            .insert(account, Role::User, true, false)
            .await?;
        accounts
            .audit
            .record(Event::new(EventKind::UserRegistered).about(user.id), origin)
            .await;
        accounts.outbox.verify_later(&user);
        Ok(user)
    }
}
