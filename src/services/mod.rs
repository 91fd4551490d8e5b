//! The use cases behind the routes: who may do what, what makes a token valid, what an
//! update changes. No HTTP here.

mod accounts;
mod actor;
mod audit;
mod error;
mod idempotency;
mod keys;
mod listing;
mod lockout;
mod mfa;
mod outbox;
mod password_policy;
mod passwords;
mod tokens;
mod transfer;
mod users;

#[cfg(test)]
mod tests;

pub use crate::storage::{StoredAnswer, UniqueField};
pub use accounts::{
    AccessToken, AccountService, AccountSettings, LoginId, LoginOutcome, Registration, SessionView,
    TokenPair,
};
pub use actor::{AccountAccess, Actor, AdminAccess};
pub use audit::{AuditLog, AuditPage};
pub use error::{Conflict, Credential, Refusal, ServiceError};
pub use idempotency::{Begun, Held, Idempotency, IdempotencyKey, IdempotencyScope};
pub use keys::{
    KeyAlgorithm, KeyError, KeyMaterial, Keyring, KeyringError, PrivateKey, PublicKey,
    SigningAlgorithm,
};
pub use listing::{Listing, Position};
pub use lockout::{Lockout, LoginLock};
pub use mfa::{Enrolment, MfaService};
pub use outbox::VerificationSettings;
pub use passwords::PasswordHasher;
pub use tokens::{
    AccessClaims, OpaqueToken, TokenError, TokenRole, TokenService, TokenSettings, hash_token,
};
pub use transfer::{BATCH, ExportPage, ImportReport, Transfer, UserRecord};
pub use users::{EnsuredAdmin, NewAccount, UserChanges, UserPage, UserService};

use crate::{
    mail::{MailSettings, Mailer},
    storage::DynRepository,
};

/// What the services are configured with, each part going only to the service that uses it.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    pub bcrypt_cost: u32,
    pub tokens: TokenSettings,
    pub accounts: AccountSettings,
    pub mail: MailSettings,
    /// The issuer named in authenticator apps.
    pub mfa_issuer: String,
    /// How long audit events are kept.
    pub audit_retention: std::time::Duration,
}

/// Every service, over one repository.
pub struct Services {
    pub accounts: AccountService,
    pub users: UserService,
    pub mfa: MfaService,
    pub audit: AuditLog,
    pub tokens: TokenService,
    pub transfer: Transfer,
    pub idempotency: Idempotency,
    repo: DynRepository,
}

impl Services {
    /// Needs the async runtime (the hasher makes its timing hash on its pool; the mailer
    /// starts its connection pool).
    pub async fn new(settings: ServiceSettings, repo: DynRepository) -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(settings.bcrypt_cost).await?;
        let mailer = Mailer::new(settings.mail);
        let outbox = outbox::Outbox::new(
            repo.clone(),
            mailer.clone(),
            settings.accounts.verification.clone(),
            settings.accounts.mail_throttle,
        );
        let audit = AuditLog::new(repo.clone(), settings.audit_retention);
        let lock = LoginLock::new(
            repo.clone(),
            hasher.clone(),
            audit.clone(),
            settings.accounts.lockout,
        );
        let users = UserService::new(
            repo.clone(),
            hasher.clone(),
            lock.clone(),
            outbox.clone(),
            audit.clone(),
        );
        let transfer = transfer::Transfer::new(repo.clone(), hasher.clone());
        let mfa = MfaService::new(
            repo.clone(),
            lock.clone(),
            audit.clone(),
            outbox.clone(),
            settings.mfa_issuer,
        );
        let tokens = TokenService::new(&settings.tokens);
        let accounts = AccountService::new(
            accounts::AccountParts {
                repo: repo.clone(),
                users: users.clone(),
                mfa: mfa.clone(),
                hasher,
                lock,
                tokens: tokens.clone(),
                mailer,
                outbox,
                audit: audit.clone(),
            },
            settings.accounts,
        );
        Ok(Self {
            accounts,
            users,
            mfa,
            audit,
            tokens,
            transfer,
            idempotency: Idempotency::new(repo.clone()),
            repo,
        })
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.repo.ping().await?)
    }
}
