use std::future::Future;
use std::pin::Pin;

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use crate::{
    domain::{User, unix_millis},
    error::AppError,
    state::AppState,
};

/// The signed-in user behind a valid bearer token. Every way a token can be bad gives the
/// same 401; the reason goes to the debug log only.
#[derive(Debug, Clone)]
pub struct AuthUser(pub User);

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, AppError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        Box::pin(async move {
            let state = state.ok_or_else(|| AppError::internal(anyhow::anyhow!("no app state")))?;
            let token = token.ok_or_else(|| refuse("no bearer token"))?;
            let claims = state
                .tokens
                .verify_access(&token)
                .map_err(|e| refuse(&format!("token rejected: {e}")))?;
            let id = claims
                .sub
                .parse()
                .map_err(|_| refuse("malformed subject"))?;
            let user = state
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
            Ok(AuthUser(user))
        })
    }
}

fn refuse(reason: &str) -> AppError {
    tracing::debug!(reason, "bearer token refused");
    AppError::Unauthenticated
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
