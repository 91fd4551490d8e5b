//! HTTP routes: thin handlers that turn requests into domain calls and results into JSON.

mod audit;
mod auth;
mod conditional;
mod docs;
mod error;
mod extract;
mod health;
mod idempotency;
pub mod json;
mod jwks;
mod mfa;
mod pages;
mod query;
mod schemas;
mod sessions;
mod users;
mod web_session;

use actix_web::{
    HttpRequest, HttpResponse,
    http::{
        Method, StatusCode,
        header::{self, HeaderValue},
    },
    web,
};

pub use docs::{ApiDoc, document};
pub use error::{ApiError, FieldError, Problem};
pub use extract::ClientAddress;
pub use users::UserResponse;
pub use web_session::{SESSION_COOKIE, WebSettings};

/// The request headers the API reads, which a page on another origin may send (CORS).
pub const CORS_REQUEST_HEADERS: [&str; 5] = [
    "authorization",
    "content-type",
    "if-match",
    "if-none-match",
    crate::services::IdempotencyKey::HEADER,
];

/// The response headers the API gives beyond the ones every browser shows, which a page on
/// another origin may read (CORS).
pub const CORS_RESPONSE_HEADERS: [&str; 6] = [
    "etag",
    "location",
    "retry-after",
    "www-authenticate",
    "x-request-id",
    idempotency::REPLAYED,
];

/// What every handler reaches: the services.
pub type AppState = crate::services::Services;

/// `/health`, `/ready` and `/metrics`: outside the rate limit, for probes and scrapers.
pub fn configure_probes(cfg: &mut web::ServiceConfig) {
    health::configure(cfg);
}

/// The key set, the OpenAPI document and the docs.
pub fn configure_documents(cfg: &mut web::ServiceConfig) {
    jwks::configure(cfg);
    docs::configure(cfg);
}

/// The API routes under `/api`.
pub fn configure_api(cfg: &mut web::ServiceConfig) {
    auth::configure(cfg);
    // Before the users' `{id}` routes, which `me` would match too.
    sessions::configure(cfg);
    mfa::configure(cfg);
    audit::configure(cfg);
    users::configure(cfg);
}

/// The web pages and their files.
pub fn configure_pages(cfg: &mut web::ServiceConfig) {
    pages::configure(cfg);
}

/// The web pages' session endpoints.
pub fn configure_web(cfg: &mut web::ServiceConfig) {
    web_session::configure(cfg);
}

/// Requests no route took: 405 with `Allow` for a known path (as the OpenAPI document lists
/// it) asked with another method, else 404. Both as problem documents.
pub async fn not_found(req: HttpRequest) -> HttpResponse {
    let allowed = docs::allowed_methods(req.path());
    if allowed.is_empty() {
        return no_route(&req);
    }
    method_not_allowed(req.method(), &allowed)
}

/// 404 as a problem document.
fn no_route(req: &HttpRequest) -> HttpResponse {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", req.path()),
    )
    .response()
}

/// 405 as a problem document, with the methods that would do in `Allow`.
fn method_not_allowed(method: &Method, allowed: &[&str]) -> HttpResponse {
    let mut allowed = allowed.to_vec();
    // What answers GET answers HEAD too (the service asks it as GET).
    if allowed.contains(&"GET") && !allowed.contains(&"HEAD") {
        allowed.push("HEAD");
    }
    let allowed = allowed.join(", ");
    let mut response = Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here; use {allowed}"),
    )
    .response();
    if let Ok(value) = HeaderValue::from_str(&allowed) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
