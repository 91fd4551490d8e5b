use actix_web::{HttpResponse, get, web};
use serde::Serialize;

use crate::{
    error::{AppError, Problem},
    state::AppState,
};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusResponse {
    #[schema(example = "ok")]
    pub status: &'static str,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(ready);
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
pub(crate) async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    state.repo.ping().await?;
    Ok(HttpResponse::Ok().json(StatusResponse { status: "ready" }))
}
