//! The audit log: every event for admins, their own for users.

use actix_web::{HttpResponse, get, web};
use serde::{Deserialize, Serialize};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};
use utoipa::{IntoParams, ToSchema};

use super::{
    AppState,
    error::{ApiError, Problem},
    extract::SignedIn,
    query::{self, Params},
};
use crate::{
    domain::{AuditEvent, AuditFilter, EventDetails, EventKind, UserId},
    services::{AuditPage, Position},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(list_events).service(my_events);
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventResponse {
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    #[serde(rename = "type")]
    #[schema(schema_with = event_type_schema)]
    pub kind: &'static str,
    /// The signed-in user who acted; `null` for an anonymous request.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub actor_id: Option<String>,
    /// The user the event is about; `null` when it is nobody's.
    #[schema(pattern = "^[0-9a-f]{24}$")]
    pub subject_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Facts about the event (changed field names, a session id, a reason); never a secret.
    #[schema(value_type = Object)]
    pub details: EventDetails,
}

fn event_type_schema() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .enum_values(Some(EventKind::ALL.iter().map(|kind| kind.as_str())))
        .build()
}

impl From<AuditEvent> for AuditEventResponse {
    fn from(event: AuditEvent) -> Self {
        Self {
            id: event.id.to_string(),
            at: event.at,
            kind: event.kind.as_str(),
            actor_id: event.actor_id.map(|id| id.to_hex()),
            subject_id: event.subject_id.map(|id| id.to_hex()),
            ip: event.origin.ip.map(|ip| ip.to_string()),
            user_agent: event.origin.user_agent,
            details: event.details,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEventPage {
    /// Newest first.
    pub items: Vec<AuditEventResponse>,
    /// `null` when the page was asked for with `after`.
    pub page: Option<u32>,
    pub per_page: u32,
    pub total: u64,
    pub total_pages: u64,
    /// Pass as `after` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

impl From<AuditPage> for AuditEventPage {
    fn from(page: AuditPage) -> Self {
        Self {
            items: page
                .items
                .into_iter()
                .map(AuditEventResponse::from)
                .collect(),
            page: page.page,
            per_page: page.per_page,
            total: page.total,
            total_pages: page.total_pages,
            next_cursor: page.next_cursor,
        }
    }
}

/// Filters and paging, as sent; each bad value is a 400 naming it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Events this user did or underwent (admins only).
    #[param(value_type = Option<String>, pattern = "^[0-9a-f]{24}$")]
    user_id: Option<String>,
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = event_type_schema)]
    kind: Option<String>,
    /// From this instant on (inclusive), RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Before this instant (exclusive), RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// 1-based page number; not with `after`.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000, default = 1)]
    page: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    per_page: Option<String>,
    /// The `next_cursor` of the page before (keyset paging); not with `page`.
    #[param(value_type = Option<String>, min_length = 1)]
    after: Option<String>,
}

/// A user's own events take no `user_id`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct OwnAuditParams {
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = event_type_schema)]
    kind: Option<String>,
    /// From this instant on (inclusive), RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    since: Option<String>,
    /// Before this instant (exclusive), RFC 3339.
    #[param(value_type = Option<String>, format = DateTime)]
    until: Option<String>,
    /// 1-based page number; not with `after`.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000000, default = 1)]
    page: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 100, default = 20)]
    per_page: Option<String>,
    /// The `next_cursor` of the page before (keyset paging); not with `page`.
    #[param(value_type = Option<String>, min_length = 1)]
    after: Option<String>,
}

fn instant(name: &str, raw: Option<&str>) -> Result<Option<OffsetDateTime>, ApiError> {
    raw.map(|raw| {
        OffsetDateTime::parse(raw, &Rfc3339)
            .map_err(|_| query::bad(name, "must be an RFC 3339 date-time"))
    })
    .transpose()
}

impl AuditParams {
    fn parse(self) -> Result<(AuditFilter, u32, Position), ApiError> {
        let user_id = self
            .user_id
            .map(|raw| UserId::parse(&raw).map_err(|_| query::bad("user_id", "must be a user id")))
            .transpose()?;
        let own = OwnAuditParams {
            kind: self.kind,
            since: self.since,
            until: self.until,
            page: self.page,
            per_page: self.per_page,
            after: self.after,
        };
        let (mut filter, per_page, position) = own.parse()?;
        filter.user_id = user_id;
        Ok((filter, per_page, position))
    }
}

impl OwnAuditParams {
    fn parse(self) -> Result<(AuditFilter, u32, Position), ApiError> {
        let kind = self
            .kind
            .map(|raw| {
                EventKind::parse(&raw).map_err(|_| query::bad("type", "must be an event type"))
            })
            .transpose()?;
        let filter = AuditFilter {
            kind,
            since: instant("since", self.since.as_deref())?,
            until: instant("until", self.until.as_deref())?,
            ..AuditFilter::default()
        };
        let (per_page, position) = query::paging(self.page, self.per_page, self.after)?;
        Ok((filter, per_page, position))
    }
}

#[utoipa::path(
    context_path = "/api", tag = "audit", operation_id = "list_audit_events", summary = "The audit log (admin)",
    params(AuditParams), security(("bearer_auth" = [])),
    responses((status = 200, description = "A page of events, newest first", body = AuditEventPage), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"))
)]
#[get("/audit-events")]
pub(crate) async fn list_events(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    params: Params<AuditParams>,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    let (filter, per_page, position) = params.0.parse()?;
    let page = state.audit.list(admin, filter, per_page, position).await?;
    Ok(HttpResponse::Ok().json(AuditEventPage::from(page)))
}

#[utoipa::path(
    context_path = "/api", tag = "audit", operation_id = "list_my_audit_events", summary = "Security events about the signed-in user",
    params(OwnAuditParams), security(("bearer_auth" = [])),
    responses((status = 200, description = "A page of events, newest first", body = AuditEventPage))
)]
#[get("/users/me/audit-events")]
pub(crate) async fn my_events(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    params: Params<OwnAuditParams>,
) -> Result<HttpResponse, ApiError> {
    let (filter, per_page, position) = params.0.parse()?;
    let page = state
        .audit
        .list_own(&actor, filter, per_page, position)
        .await?;
    Ok(HttpResponse::Ok().json(AuditEventPage::from(page)))
}
