//! HTTP routes: thin handlers that turn requests into domain calls and results into JSON.

mod auth;
mod docs;
mod health;
pub mod json;
mod users;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{StatusCode, header, header::HeaderValue},
    web,
};

use crate::error::Problem;

pub use docs::{ApiDoc, document};
pub use users::UserResponse;

/// The operational routes, outside the rate limit.
pub fn configure_operations(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
    docs::configure(cfg);
    cfg.service(crate::metrics::metrics);
}

/// The API routes under `/api`.
pub fn configure_api(cfg: &mut web::ServiceConfig) {
    auth::configure(cfg);
    users::configure(cfg);
}

/// Requests no route took: 405 with `Allow` for a known path (as the OpenAPI document lists
/// it) asked with another method, else 404. Both as problem documents.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = docs::allowed_methods(req.path());
    if allowed.is_empty() {
        return Problem::new(
            StatusCode::NOT_FOUND,
            format!("no route for {}", req.path()),
        )
        .response();
    }
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} is not allowed here; use {}",
            req.method(),
            allowed.join(", ")
        ),
    )
    .response();
    if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
