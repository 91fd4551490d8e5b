use std::time::Duration;

use url::Url;

use super::{
    Actor, AdminAccess, ServiceError, UserService, VerificationSettings,
    error::{Credential, Refusal},
    outbox::{self, Outbox},
    password_policy::{self, AccountWords},
    passwords::PasswordHasher,
    tokens::{OpaqueToken, TokenService, hash_token},
    users::NewAccount,
};
use crate::{
    domain::{
        self, Email, Password, Role, User, UserField, UserId, UserPatch, Username, unix_millis,
    },
    mail::{Mail, Mailer},
    metrics,
    storage::{DynRepository, RefreshTokenRecord, RefreshTokenUse, ResetTokenRecord},
};

/// How failed logins lock an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    /// Failed logins in a row that lock it.
    pub threshold: u32,
    /// How long the lock lasts.
    pub duration: Duration,
}

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

/// The key under which an account's login attempts are counted: one for its email and its
/// username alike.
fn account_key(id: &UserId) -> String {
    format!("user:{id}")
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

/// Registration, authentication, token rotation and password reset: every rule about
/// credentials and tokens.
#[derive(Clone)]
pub struct AccountService {
    repo: DynRepository,
    users: UserService,
    hasher: PasswordHasher,
    tokens: TokenService,
    mailer: Mailer,
    outbox: Outbox,
    settings: AccountSettings,
}

impl AccountService {
    pub(super) fn new(
        repo: DynRepository,
        users: UserService,
        hasher: PasswordHasher,
        tokens: TokenService,
        mailer: Mailer,
        outbox: Outbox,
        settings: AccountSettings,
    ) -> Self {
        Self {
            repo,
            users,
            hasher,
            tokens,
            mailer,
            outbox,
            settings,
        }
    }

    /// Self-service sign-up: an active user with the user role.
    pub async fn register(&self, account: NewAccount) -> Result<User, ServiceError> {
        if !self.settings.allow_registration {
            return Err(ServiceError::Forbidden(Refusal::RegistrationClosed));
        }
        let user = self.users.insert(account, Role::User, true, false).await?;
        self.outbox.verify_later(&user);
        Ok(user)
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
    pub async fn verify_email(&self, token: &str) -> Result<User, ServiceError> {
        let refused = || ServiceError::InvalidCredentials(Credential::VerificationToken);
        let now = domain::now();
        let Some((id, email)) = self
            .repo
            .consume_verification_token(&hash_token(token), now)
            .await?
        else {
            return Err(refused());
        };
        match self.repo.user_by_id(&id).await? {
            Some(user) if user.email == email => {
                if user.email_verified {
                    return Ok(user);
                }
                let verified = UserPatch::new()
                    .set(UserField::EmailVerified(true))
                    .set(UserField::UpdatedAt(now));
                self.repo
                    .update_user(&id, &verified)
                    .await?
                    .ok_or_else(refused)
            }
            _ => Err(refused()),
        }
    }

    /// The actor behind an access token. The token must be well signed and unexpired, and
    /// its user must still exist, be active and have the password the token was issued
    /// under. Every reason to refuse is the same error; the reason is logged at debug level.
    pub async fn authenticate(&self, access_token: &str) -> Result<Actor, ServiceError> {
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
        let user = self
            .repo
            .user_by_id(&id)
            .await?
            .ok_or_else(|| refuse("user no longer exists"))?;
        if !user.active {
            return Err(refuse("user is deactivated"));
        }
        if claims.pwd != unix_millis(user.password_changed_at) {
            return Err(refuse("token predates a password change"));
        }
        Ok(Actor::new(user))
    }

    /// Logs in by email or username. With a lockout configured, the attempt is counted
    /// before the password is checked (see [`Repository::count_login_attempt`]): past the
    /// threshold the answer is [`ServiceError::LoginLocked`] and the password is not looked
    /// at, so that of any number of simultaneous attempts at most the threshold are checked.
    /// A name that is nobody's is counted and locked the same way.
    ///
    /// [`Repository::count_login_attempt`]: crate::storage::Repository::count_login_attempt
    pub async fn login(&self, id: LoginId, password: &str) -> Result<TokenPair, ServiceError> {
        let user = match &id {
            LoginId::Email(email) => self.repo.user_by_email(email).await?,
            LoginId::Username(username) => self.repo.user_by_username(username).await?,
        };
        let now = domain::now();
        let key = match (&user, &id) {
            (Some(user), _) => account_key(&user.id),
            (None, LoginId::Email(email)) => format!("email:{email}"),
            (None, LoginId::Username(username)) => format!("username:{}", username.key()),
        };
        let mut newly_locked = None;
        if let Some(lockout) = self.settings.lockout {
            let attempts = self
                .repo
                .count_login_attempt(&key, now, lockout.threshold, lockout.duration)
                .await?;
            if attempts.count > lockout.threshold {
                metrics::record_login("locked");
                let until = attempts.locked_until.unwrap_or(now + lockout.duration);
                return Err(ServiceError::LoginLocked {
                    retry_after: (until - now).try_into().unwrap_or_default(),
                });
            }
            newly_locked = attempts.locked_until;
        }
        // Verify even for an unknown user (against a dummy hash), so both fail alike and in
        // about the same time.
        let matched = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(ServiceError::Internal)?;
        let user = match user {
            Some(user) if matched && user.active => user,
            user => {
                metrics::record_login("failure");
                if let (Some(user), Some(until)) = (user, newly_locked) {
                    // This failure locked the account: the user record shows until when.
                    let lock = UserPatch::new().set(UserField::LockedUntil(Some(until)));
                    self.repo.update_user(&user.id, &lock).await?;
                }
                return Err(ServiceError::InvalidCredentials(Credential::Login));
            }
        };
        metrics::record_login("success");
        if self.settings.lockout.is_some() {
            self.repo.clear_login_attempts(&key).await?;
        }
        self.ensure_verified(&user)?;
        // Neither the login time nor a stronger hash of the same password is a change of
        // the profile or the password: `updated_at` and `password_changed_at` stay.
        let mut patch = UserPatch::new().set(UserField::LastLoginAt(now));
        if user.locked_until.is_some() {
            patch = patch.set(UserField::LockedUntil(None));
        }
        if self.hasher.needs_rehash(&user.password_hash) {
            let password = Password::parse(password).map_err(ServiceError::internal)?;
            let hash = self
                .hasher
                .hash(&password)
                .await
                .map_err(ServiceError::Internal)?;
            patch = patch.set(UserField::PasswordHash(hash));
        }
        self.repo.update_user(&user.id, &patch).await?;
        // A new session: every token rotated from this one shares its family id.
        let family_id = hex::encode(rand::random::<[u8; 16]>());
        self.issue_pair(&user, family_id).await
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
    pub async fn unlock(&self, _: AdminAccess<'_>, id: UserId) -> Result<User, ServiceError> {
        self.end_lock(&id).await?.ok_or(ServiceError::NotFound)
    }

    async fn end_lock(&self, id: &UserId) -> Result<Option<User>, ServiceError> {
        self.repo.clear_login_attempts(&account_key(id)).await?;
        let unlocked = UserPatch::new().set(UserField::LockedUntil(None));
        Ok(self.repo.update_user(id, &unlocked).await?)
    }

    /// Rotates a refresh token: a live one is spent for a new pair of the same session; one
    /// presented again after it was spent ends that session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, ServiceError> {
        let refused = ServiceError::InvalidCredentials(Credential::RefreshToken);
        let now = domain::now();
        match self
            .repo
            .use_refresh_token(&hash_token(refresh_token), now)
            .await?
        {
            RefreshTokenUse::Spent(record) if record.expires_at > now => {
                let user = self.repo.user_by_id(&record.user_id).await?;
                match user {
                    // A token older than the password would survive a reset that raced it
                    // (the reset revokes, then this refresh issues anew): refuse it.
                    Some(user) if user.active && record.created_at >= user.password_changed_at => {
                        self.ensure_verified(&user)?;
                        self.issue_pair(&user, record.family_id).await
                    }
                    _ => Err(refused),
                }
            }
            RefreshTokenUse::Replayed { family_id } => {
                tracing::warn!("a spent refresh token was presented again; revoking its session");
                self.repo.revoke_refresh_family(&family_id).await?;
                Err(refused)
            }
            RefreshTokenUse::Spent(_) | RefreshTokenUse::Revoked | RefreshTokenUse::Unknown => {
                Err(refused)
            }
        }
    }

    /// Revokes one refresh token. Unknown tokens are accepted silently (RFC 7009 style):
    /// the caller learns nothing about which tokens exist.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), ServiceError> {
        Ok(self
            .repo
            .revoke_refresh_token(&hash_token(refresh_token))
            .await?)
    }

    /// Starts a reset in the background and returns at once: the caller learns nothing,
    /// not even from timing, about whether `email` belongs to an account. While the
    /// database is unavailable the work is tried again for up to [`RESET_RETRY_BUDGET`];
    /// a failure for good is logged and counted. (A reset still in flight at shutdown is
    /// dropped; the user asks again.)
    pub fn forgot_password(&self, email: Email) {
        let accounts = self.clone();
        outbox::background("password_reset", async move {
            retry_while_unavailable(RESET_RETRY_BUDGET, || accounts.start_reset(&email)).await
        });
    }

    /// Stores a reset token for an active user with that address and mails the link.
    async fn start_reset(&self, email: &Email) -> Result<(), ServiceError> {
        let Some(user) = self.repo.user_by_email(email).await? else {
            return Ok(());
        };
        if !user.active || !self.outbox.may_send("reset", &user.email).await? {
            return Ok(());
        }
        let token = OpaqueToken::generate();
        let now = domain::now();
        self.repo
            .insert_reset_token(ResetTokenRecord {
                token_hash: token.hash,
                user_id: user.id,
                created_at: now,
                expires_at: now + self.settings.reset_token_ttl,
            })
            .await?;
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
        new_password: &Password,
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
        let password_hash = self
            .hasher
            .hash(new_password)
            .await
            .map_err(ServiceError::Internal)?;
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
        // Access tokens die with the password change (they carry the old change time);
        // refresh tokens are revoked here.
        self.repo.revoke_user_refresh_tokens(&user_id).await?;
        Ok(())
    }

    async fn issue_pair(&self, user: &User, family_id: String) -> Result<TokenPair, ServiceError> {
        let access_token = self
            .tokens
            .issue_access(user)
            .map_err(ServiceError::Internal)?;
        let refresh = OpaqueToken::generate();
        let now = domain::now();
        self.repo
            .insert_refresh_token(RefreshTokenRecord {
                token_hash: refresh.hash,
                family_id,
                user_id: user.id,
                created_at: now,
                expires_at: now + self.settings.refresh_token_ttl,
            })
            .await?;
        Ok(TokenPair {
            access_token,
            expires_in: self.tokens.access_ttl().as_secs(),
            refresh_token: refresh.secret,
        })
    }
}
