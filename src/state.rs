//! What every request handler can reach.

use std::sync::Arc;

use crate::{
    auth::{PasswordHasher, TokenService},
    config::Settings,
    mail::Mailer,
    services::{AccountService, UserService},
    storage::DynRepository,
};

pub struct AppState {
    pub settings: Arc<Settings>,
    pub repo: DynRepository,
    pub tokens: TokenService,
    pub users: UserService,
    pub accounts: AccountService,
}

impl AppState {
    pub async fn new(settings: Arc<Settings>, repo: DynRepository) -> anyhow::Result<Self> {
        let hasher = PasswordHasher::new(settings.bcrypt_cost).await?;
        let tokens = TokenService::new(
            settings.jwt_secret.expose().as_bytes(),
            settings.access_token_ttl,
        );
        let mailer = Mailer::from_settings(&settings)?;
        Ok(Self {
            users: UserService::new(repo.clone(), hasher.clone()),
            accounts: AccountService::new(
                repo.clone(),
                hasher,
                tokens.clone(),
                mailer,
                Arc::clone(&settings),
            ),
            tokens,
            repo,
            settings,
        })
    }
}
