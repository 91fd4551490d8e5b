//! The signed-in caller: the bearer token is parsed here and judged by the accounts service.

use std::{
    future::{Future, Ready, ready},
    net::IpAddr,
    pin::Pin,
};

use actix_web::{FromRequest, HttpMessage, HttpRequest, dev::Payload, http::header, web};

use super::{AppState, error::ApiError};
use crate::{
    domain::Origin,
    services::{Actor, ServiceError},
};

/// The client's address as the request middleware resolved it (`TRUSTED_PROXIES` honoured),
/// kept in the request's extensions.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddress(pub IpAddr);

/// Where the request came from: the client's address and user agent.
fn origin_of(req: &HttpRequest) -> Origin {
    let ip = req
        .extensions()
        .get::<ClientAddress>()
        .map(|address| address.0)
        .or_else(|| req.peer_addr().map(|peer| peer.ip()));
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok());
    Origin::new(ip, user_agent)
}

/// Where an anonymous request came from, for sessions and the audit log.
#[derive(Debug, Clone)]
pub struct RequestOrigin(pub Origin);

impl FromRequest for RequestOrigin {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(Self(origin_of(req))))
    }
}

/// The actor behind a valid bearer token; 401 otherwise.
#[derive(Debug, Clone)]
pub struct SignedIn(pub Actor);

impl FromRequest for SignedIn {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = bearer_token(req).map(str::to_owned);
        let origin = origin_of(req);
        Box::pin(async move {
            let state = state
                .ok_or_else(|| ServiceError::internal(anyhow::anyhow!("no application state")))?;
            let token = token.ok_or(ServiceError::Unauthenticated)?;
            Ok(SignedIn(state.accounts.authenticate(&token, origin).await?))
        })
    }
}

fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
