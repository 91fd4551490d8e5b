//! HTTP routes: thin handlers that turn requests into domain calls and results into JSON.

mod auth;
mod docs;
mod health;
pub mod json;
mod users;

use actix_web::{HttpRequest, HttpResponse, http::StatusCode, web};

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

/// Unknown routes (and known paths with another method) answer with a problem document.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route for {} {}", req.method(), req.path()),
    )
    .response()
}
