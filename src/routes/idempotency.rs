//! The `Idempotency-Key` header of the create operations: reading it, and running a create
//! once per key (the rules are in `services::Idempotency`).

use std::future::Future;

use actix_web::{
    HttpRequest, HttpResponse,
    body::to_bytes,
    http::{StatusCode, header},
};

use super::{AppState, error::ApiError};
use crate::services::{Begun, IdempotencyKey, IdempotencyScope, ServiceError, StoredAnswer};

/// The header as the OpenAPI document lists it (never built: only its description is used).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct KeyHeader {
    /// Makes the request safe to retry: the same key again within 24 hours, from the same
    /// caller and with the same body, gets the first answer again (with
    /// `Idempotent-Replayed: true`) and creates nothing. Only successful answers are kept: a
    /// request that failed may be retried under its key, with the same body or another.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]{1,255}$",
        example = "0b7c5d0e-6f5c-4bb8-a1c4-4f3f0a2b9e11"
    )]
    idempotency_key: Option<String>,
}

/// Set to `true` on an answer given again for a repeated key.
pub const REPLAYED: &str = "Idempotent-Replayed";

/// The request's key, if it has one; 400 naming the header when it is malformed or repeated.
pub fn key_of(req: &HttpRequest) -> Result<Option<IdempotencyKey>, ApiError> {
    let mut values = req.headers().get_all(IdempotencyKey::HEADER);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ServiceError::BadHeader {
            header: IdempotencyKey::HEADER,
            message: "must be given once",
        }
        .into());
    }
    Ok(Some(IdempotencyKey::parse(first.as_bytes())?))
}

/// Runs `create` (whose request has the body `body`), once per key: without a key, just
/// runs it; with one, claims the key in `scope` first and either replays the answer stored
/// under it, refuses (422 another body, 409 still running), or runs `create` and stores a
/// successful answer (a failure frees the key).
pub async fn once(
    state: &AppState,
    req: &HttpRequest,
    key: Option<IdempotencyKey>,
    scope: IdempotencyScope,
    body: &[u8],
    create: impl Future<Output = Result<HttpResponse, ApiError>>,
) -> Result<HttpResponse, ApiError> {
    let Some(key) = key else {
        return create.await;
    };
    let begun = state
        .idempotency
        .begin(scope, &key, req.method().as_str(), req.path(), body)
        .await?;
    let held = match begun {
        Begun::Replay(answer) => return Ok(replay(answer)),
        Begun::New(held) => held,
    };
    match create.await {
        Ok(response) if response.status().is_success() => {
            let (response, answer) = answer_of(response).await?;
            held.finish(&answer).await;
            Ok(response)
        }
        Ok(response) => {
            held.release().await;
            Ok(response)
        }
        Err(error) => {
            held.release().await;
            Err(error)
        }
    }
}

/// The response, and what of it is stored: status, body, `Location`, `ETag`.
async fn answer_of(response: HttpResponse) -> Result<(HttpResponse, StoredAnswer), ApiError> {
    let (head, body) = response.into_parts();
    let bytes = to_bytes(body)
        .await
        .map_err(|e| ServiceError::internal(anyhow::anyhow!("reading an answer: {e}")))?;
    let header = |name| {
        head.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let answer = StoredAnswer {
        status: head.status().as_u16(),
        body: String::from_utf8_lossy(&bytes).into_owned(),
        location: header(header::LOCATION),
        etag: header(header::ETAG),
    };
    Ok((head.set_body(bytes).map_into_boxed_body(), answer))
}

/// A stored answer, given again.
fn replay(answer: StoredAnswer) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
    let mut response = HttpResponse::build(status);
    response
        .content_type("application/json")
        .insert_header((REPLAYED, "true"));
    if let Some(location) = answer.location {
        response.insert_header((header::LOCATION, location));
    }
    if let Some(etag) = answer.etag {
        response.insert_header((header::ETAG, etag));
    }
    response.body(answer.body)
}
