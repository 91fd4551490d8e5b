//! The use cases behind the routes: who may do what, what makes a token valid, what an
//! update changes. No HTTP here.

mod accounts;
mod actor;
mod error;
mod outbox;
mod password_policy;
mod passwords;
mod tokens;
mod users;

#[cfg(test)]
mod tests;

pub use crate::storage::UniqueField;
pub use accounts::{AccountService, AccountSettings, Lockout, LoginId, TokenPair};
pub use actor::{AccountAccess, Actor, AdminAccess};
pub use error::{Credential, Refusal, ServiceError};
pub use outbox::VerificationSettings;
pub use passwords::PasswordHasher;
pub use tokens::{AccessClaims, OpaqueToken, TokenRole, TokenService, TokenSettings, hash_token};
pub use users::{NewAccount, UserChanges, UserService};

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
}

/// Every service, over one repository.
pub struct Services {
    pub accounts: AccountService,
    pub users: UserService,
    repo: DynRepository,
}

impl Services {
    /// Needs the async runtime (the hasher calibrates on the blocking pool; the mailer
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
        let users = UserService::new(repo.clone(), hasher.clone(), outbox.clone());
        let accounts = AccountService::new(
            repo.clone(),
            users.clone(),
            hasher,
            TokenService::new(&settings.tokens),
            mailer,
            outbox,
            settings.accounts,
        );
        Ok(Self {
            accounts,
            users,
            repo,
        })
    }

    /// Readiness: the database answers.
    pub async fn ready(&self) -> Result<(), ServiceError> {
        Ok(self.repo.ping().await?)
    }
}
