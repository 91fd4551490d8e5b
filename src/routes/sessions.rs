//! Sessions a user (or an admin) can see and end.

use actix_web::{HttpResponse, delete, get, web};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    error::{ApiError, Problem},
    extract::SignedIn,
    users::{UserPath, user_id},
};
use crate::{
    domain::SessionId,
    services::{ServiceError, SessionView},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    // The `me` routes first: `me` would also match `{id}`.
    cfg.service(my_sessions)
        .service(end_my_sessions)
        .service(end_my_session)
        .service(user_sessions)
        .service(end_user_sessions);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// The login, or the last refresh.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub last_used_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
    /// The client's address at login.
    pub ip: Option<String>,
    /// The client's user agent at login (at most 256 characters).
    pub user_agent: Option<String>,
    /// The session of the token making this request.
    pub current: bool,
}

impl From<SessionView> for SessionResponse {
    fn from(view: SessionView) -> Self {
        let session = view.session;
        Self {
            id: session.id.to_string(),
            created_at: session.created_at,
            last_used_at: session.last_used_at,
            expires_at: session.expires_at,
            ip: session.origin.ip.map(|ip| ip.to_string()),
            user_agent: session.origin.user_agent,
            current: view.current,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SessionList {
    /// Live sessions, newest first.
    pub items: Vec<SessionResponse>,
}

fn listed(sessions: Vec<SessionView>) -> HttpResponse {
    HttpResponse::Ok().json(SessionList {
        items: sessions.into_iter().map(SessionResponse::from).collect(),
    })
}

/// The `{sid}` of a session's path.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub(crate) struct SessionPath {
    /// 32 lower-case hex characters; any other value is not found.
    #[param(pattern = "^[0-9a-f]{32}$")]
    sid: String,
}

#[utoipa::path(
    context_path = "/api", tag = "sessions", operation_id = "list_my_sessions", summary = "The signed-in user's live sessions",
    security(("bearer_auth" = [])),
    responses((status = 200, description = "Live sessions, newest first", body = SessionList))
)]
#[get("/users/me/sessions")]
pub(crate) async fn my_sessions(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<HttpResponse, ApiError> {
    Ok(listed(
        state.accounts.sessions(actor.access(actor.id())?).await?,
    ))
}

#[utoipa::path(
    context_path = "/api", tag = "sessions", operation_id = "end_my_sessions", summary = "Sign out everywhere (this session too)",
    security(("bearer_auth" = [])),
    responses((status = 204, description = "Every session of the user has ended"))
)]
#[delete("/users/me/sessions")]
pub(crate) async fn end_my_sessions(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
) -> Result<HttpResponse, ApiError> {
    state
        .accounts
        .end_sessions(actor.access(actor.id())?)
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    context_path = "/api", tag = "sessions", operation_id = "end_my_session", summary = "End one of the signed-in user's sessions",
    params(SessionPath), security(("bearer_auth" = [])),
    responses((status = 204, description = "The session has ended"), (status = 404, description = "Not a live session of this user", body = Problem, content_type = "application/problem+json"))
)]
#[delete("/users/me/sessions/{sid}")]
pub(crate) async fn end_my_session(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<SessionPath>,
) -> Result<HttpResponse, ApiError> {
    let session = SessionId::parse(&path.sid).map_err(|_| ServiceError::NoSuchSession)?;
    state.accounts.end_session(&actor, &session).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    context_path = "/api", tag = "sessions", operation_id = "list_user_sessions", summary = "A user's live sessions (admin)",
    params(UserPath), security(("bearer_auth" = [])),
    responses((status = 200, description = "Live sessions, newest first", body = SessionList), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"))
)]
#[get("/users/{id}/sessions")]
pub(crate) async fn user_sessions(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let access = actor.admin()?.on(user_id(&path.id)?);
    Ok(listed(state.accounts.sessions(access).await?))
}

#[utoipa::path(
    context_path = "/api", tag = "sessions", operation_id = "end_user_sessions", summary = "End every session of a user (admin)",
    params(UserPath), security(("bearer_auth" = [])),
    responses((status = 204, description = "Every session of the user has ended"), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"))
)]
#[delete("/users/{id}/sessions")]
pub(crate) async fn end_user_sessions(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let access = actor.admin()?.on(user_id(&path.id)?);
    state.accounts.end_sessions(access).await?;
    Ok(HttpResponse::NoContent().finish())
}
