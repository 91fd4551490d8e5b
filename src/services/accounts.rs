use std::sync::Arc;

use crate::{
    auth::{OpaqueToken, PasswordHasher, TokenService, hash_token},
    config::Settings,
    domain::{self, Email, Password, User, UserUpdate, Username},
    error::AppError,
    mail::Mailer,
    storage::{DynRepository, RefreshTokenRecord, RefreshTokenUse, ResetTokenRecord},
};

const LOGIN_FAILED: &str = "invalid credentials";
const REFRESH_REFUSED: &str = "the refresh token is invalid, expired or revoked";
const RESET_REFUSED: &str = "the reset token is invalid, expired or already used";

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

/// Registration, login, token rotation and password reset.
#[derive(Clone)]
pub struct AccountService {
    repo: DynRepository,
    hasher: PasswordHasher,
    tokens: TokenService,
    mailer: Mailer,
    settings: Arc<Settings>,
}

impl AccountService {
    pub fn new(
        repo: DynRepository,
        hasher: PasswordHasher,
        tokens: TokenService,
        mailer: Mailer,
        settings: Arc<Settings>,
    ) -> Self {
        Self {
            repo,
            hasher,
            tokens,
            mailer,
            settings,
        }
    }

    pub async fn login(&self, id: LoginId, password: &str) -> Result<TokenPair, AppError> {
        let user = match &id {
            LoginId::Email(email) => self.repo.user_by_email(email).await?,
            LoginId::Username(username) => self.repo.user_by_username(username).await?,
        };
        // Verify even for an unknown user (against a dummy hash), so both fail alike and in
        // about the same time.
        let matched = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
            .map_err(AppError::Internal)?;
        let user = match user {
            Some(user) if matched && user.active => user,
            _ => {
                crate::metrics::record_login("failure");
                return Err(AppError::InvalidCredentials(LOGIN_FAILED));
            }
        };
        crate::metrics::record_login("success");
        let upgraded_hash = if self.hasher.needs_rehash(&user.password_hash) {
            let password = Password::parse(password).map_err(AppError::internal)?;
            Some(
                self.hasher
                    .hash(&password)
                    .await
                    .map_err(AppError::Internal)?,
            )
        } else {
            None
        };
        self.repo
            .record_login(&user.id, domain::now(), upgraded_hash)
            .await?;
        // A new session: every token rotated from this one shares its family id.
        let family_id = hex::encode(rand::random::<[u8; 16]>());
        self.issue_pair(&user, family_id).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AppError> {
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
                        self.issue_pair(&user, record.family_id).await
                    }
                    _ => Err(AppError::InvalidCredentials(REFRESH_REFUSED)),
                }
            }
            RefreshTokenUse::Replayed { family_id } => {
                tracing::warn!("a spent refresh token was presented again; revoking its session");
                self.repo.revoke_refresh_family(&family_id).await?;
                Err(AppError::InvalidCredentials(REFRESH_REFUSED))
            }
            RefreshTokenUse::Spent(_) | RefreshTokenUse::Revoked | RefreshTokenUse::Unknown => {
                Err(AppError::InvalidCredentials(REFRESH_REFUSED))
            }
        }
    }

    /// Revokes one refresh token. Unknown tokens are accepted silently (RFC 7009 style):
    /// the caller learns nothing about which tokens exist.
    pub async fn logout(&self, refresh_token: &str) -> Result<(), AppError> {
        Ok(self
            .repo
            .revoke_refresh_token(&hash_token(refresh_token))
            .await?)
    }

    /// Starts a reset in the background and returns at once: the caller learns nothing,
    /// not even from timing, about whether `email` belongs to an account. Errors are logged.
    /// (A reset still in flight at shutdown is dropped; the user asks again.)
    pub fn forgot_password(&self, email: Email) {
        let accounts = self.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            if let Err(e) = accounts.start_reset(&email).await {
                tracing::error!(error = format!("{e:#}"), "password reset could not start");
            }
        }));
    }

    /// Stores a reset token for an active user with that address and mails the link.
    async fn start_reset(&self, email: &Email) -> anyhow::Result<()> {
        let Some(user) = self.repo.user_by_email(email).await? else {
            return Ok(());
        };
        if !user.active {
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
        let link = format!(
            "{}?token={}",
            self.settings.password_reset_url, token.secret
        );
        self.mailer
            .send_reset_link(user.email.as_str(), &link)
            .await;
        Ok(())
    }

    pub async fn reset_password(
        &self,
        token: &str,
        new_password: &Password,
    ) -> Result<(), AppError> {
        let Some(user_id) = self
            .repo
            .consume_reset_token(&hash_token(token), domain::now())
            .await?
        else {
            return Err(AppError::InvalidCredentials(RESET_REFUSED));
        };
        let password_hash = self
            .hasher
            .hash(new_password)
            .await
            .map_err(AppError::Internal)?;
        let update = UserUpdate {
            password_hash: Some(password_hash),
            ..UserUpdate::default()
        };
        if self.repo.update_user(&user_id, update).await?.is_none() {
            return Err(AppError::InvalidCredentials(RESET_REFUSED));
        }
        // Access tokens die with the password change (they carry the old change time);
        // refresh tokens are revoked here.
        self.repo.revoke_user_refresh_tokens(&user_id).await?;
        Ok(())
    }

    async fn issue_pair(&self, user: &User, family_id: String) -> Result<TokenPair, AppError> {
        let access_token = self.tokens.issue_access(user).map_err(AppError::Internal)?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        domain::{Role, UserName},
        state::AppState,
        storage::{Repository, SqliteRepository},
    };

    /// A refresh that spends its token just before a reset revokes the user's tokens must
    /// not hand out a new session afterwards.
    #[tokio::test]
    async fn refresh_tokens_older_than_the_password_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Arc::new(
            SqliteRepository::open(dir.path().join("users.db"))
                .await
                .unwrap(),
        );
        let settings = Settings::from_vars([("BCRYPT_COST".to_owned(), "4".to_owned())]).unwrap();
        let state = AppState::new(Arc::new(settings), repo.clone())
            .await
            .unwrap();
        let email = Email::parse("race@example.com").unwrap();
        let user = state
            .users
            .create(crate::services::CreateUser {
                name: UserName::parse("Race").unwrap(),
                email: email.clone(),
                username: None,
                password: Password::parse("first password").unwrap(),
                role: Role::User,
                active: true,
            })
            .await
            .unwrap();
        let pair = state
            .accounts
            .login(LoginId::Email(email), "first password")
            .await
            .unwrap();
        // The password changes, as a reset would, but this token escapes the revocation.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let update = UserUpdate {
            password_hash: Some(
                "$2b$04$changedchangedchangedchangedchangedchangedchangedchange".into(),
            ),
            ..UserUpdate::default()
        };
        repo.update_user(&user.id, update).await.unwrap();
        let refused = state.accounts.refresh(&pair.refresh_token).await;
        assert!(
            matches!(refused, Err(AppError::InvalidCredentials(_))),
            "{refused:?}"
        );
    }
}
