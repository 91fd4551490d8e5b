use actix_web::{HttpResponse, get, web};
use serde::Serialize;

use super::{
    AppState,
    error::{ApiError, Problem},
};
use crate::services::ServiceError;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// The paths of the routes below: the probes, which the rate limit leaves alone.
pub const PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(ready).service(metrics);
}

/// Liveness: the process is up.
#[utoipa::path(
    tag = "operations", operation_id = "health", summary = "Liveness",
    responses((status = 200, description = "The process is up", body = StatusResponse))
)]
#[get("/health")]
pub(crate) async fn health() -> HttpResponse {
    HttpResponse::Ok().json(StatusResponse { status: "ok" })
}

/// Readiness: the database answers a trivial query.
#[utoipa::path(
    tag = "operations", operation_id = "ready", summary = "Readiness: the database answers",
    responses((status = 200, description = "Ready", body = StatusResponse), (status = 503, description = "The database does not answer", body = Problem, content_type = "application/problem+json"))
)]
#[get("/ready")]
pub(crate) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.ready().await?;
    Ok(HttpResponse::Ok().json(StatusResponse { status: "ready" }))
}

/// Prometheus text format.
#[utoipa::path(
    tag = "operations", operation_id = "metrics",
    responses((status = 200, description = "Prometheus metrics", content_type = "text/plain", body = String))
)]
#[get("/metrics")]
pub(crate) async fn metrics() -> Result<HttpResponse, ApiError> {
    let (content_type, body) = crate::metrics::render().map_err(ServiceError::internal)?;
    Ok(HttpResponse::Ok().content_type(content_type).body(body))
}
