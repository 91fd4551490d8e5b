//! The signed-in caller: the bearer token is parsed here and judged by the accounts service.

use std::{future::Future, pin::Pin};

use actix_web::{FromRequest, HttpRequest, dev::Payload, http::header, web};

use super::{AppState, error::ApiError};
use crate::services::{Actor, ServiceError};

/// The actor behind a valid bearer token; 401 otherwise.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Actor);

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("no application state")))?;
            let token = token.ok_or(ServiceError::Unauthenticated)?;
            Ok(SignedIn(state.accounts.authenticate(&token).await?))
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
