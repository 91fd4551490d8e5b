use actix_web::{HttpResponse, get, web};
use serde_json::json;

use crate::{error::AppError, state::AppState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(health).service(ready);
}

/// Liveness: the process is up.
#[get("/health")]
async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Readiness: the database answers a trivial query.
#[get("/ready")]
async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    state.repo.ping().await?;
    Ok(HttpResponse::Ok().json(json!({ "status": "ready" })))
}
