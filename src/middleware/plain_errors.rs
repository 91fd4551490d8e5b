//! Error answers made outside the service's own handlers without a body of ours (the CORS
//! middleware's refusals: a 400 whose body is one line of text) turned into problem
//! documents, as every other error is. HTML pages and problem documents pass untouched.

use actix_web::{
    Error,
    body::{BoxBody, EitherBody, MessageBody, to_bytes_limited},
    dev::{ServiceRequest, ServiceResponse},
    http::header::{self, HeaderValue},
    middleware::Next,
};

use crate::routes::Problem;

/// The longest plain-text body kept as a problem's `detail`.
const MAX_DETAIL_BYTES: usize = 1024;

/// Middleware.
pub async fn as_problem<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, BoxBody>>, Error> {
    let response = next.call(req).await?;
    if !response.status().is_client_error() && !response.status().is_server_error() {
        return Ok(response.map_into_left_body());
    }
    let plain = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|kind| kind.as_bytes().starts_with(b"text/plain"));
    if !plain {
        return Ok(response.map_into_left_body());
    }
    let (req, res) = response.into_parts();
    let status = res.status();
    let kept = res.headers().clone();
    let detail = match to_bytes_limited(res.into_body(), MAX_DETAIL_BYTES).await {
        Ok(Ok(bytes)) if !bytes.is_empty() => String::from_utf8_lossy(&bytes).into_owned(),
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let mut problem = Problem::new(status, detail).response();
    // Whatever else it said (Vary, the request id) still holds.
    for (name, value) in &kept {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            problem.headers_mut().append(name.clone(), value.clone());
        }
    }
    if !problem.headers().contains_key(header::CACHE_CONTROL) {
        problem
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(ServiceResponse::new(req, problem).map_into_right_body())
}
