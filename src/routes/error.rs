//! The one mapping of errors to HTTP: every failure becomes an RFC 9457 problem document,
//! and database failures are counted here, whichever route met them.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde::Serialize;

use crate::{
    metrics,
    services::{Credential, Refusal, ServiceError},
};

/// One bad field of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Every way a request can fail: the HTTP layer's own refusals, and the services' errors.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or a query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 413
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 403: a request to the web session endpoints that another site made the browser send.
    #[error("this request did not come from this service's own pages")]
    CrossSite,
    /// 422, every bad field at once.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl ApiError {
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

/// The body of every error response (RFC 9457).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(example = json!({"type": "about:blank", "title": "Unprocessable Entity", "status": 422,
    "detail": "the request is invalid", "errors": [{"field": "email", "message": "must be a valid email address"}]}))]
pub struct Problem {
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    pub kind: &'static str,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// One entry per bad field: validation, conflicts, and a refused `current_password`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(required = false)]
    pub errors: Vec<FieldError>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            // RFC 9457 §4.2.1: no semantics beyond the status code.
            kind: "about:blank",
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
        }
    }

    pub fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.errors = errors;
        self
    }

    /// A response builder with the status and problem content type set.
    pub fn response(&self) -> HttpResponse {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut builder = HttpResponse::build(status);
        builder.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        if status == StatusCode::UNAUTHORIZED {
            builder.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            builder.insert_header((header::RETRY_AFTER, "5"));
        }
        builder.json(self)
    }
}

/// The status of each service error: the one place where they meet HTTP.
fn service_status(error: &ServiceError) -> StatusCode {
    match error {
        ServiceError::Unauthenticated | ServiceError::InvalidCredentials(_) => {
            StatusCode::UNAUTHORIZED
        }
        ServiceError::Forbidden(_) | ServiceError::EmailNotVerified => StatusCode::FORBIDDEN,
        ServiceError::NotFound | ServiceError::NoSuchSession => StatusCode::NOT_FOUND,
        ServiceError::BadQuery { .. } | ServiceError::BadHeader { .. } => StatusCode::BAD_REQUEST,
        ServiceError::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::IdempotencyKeyInFlight => StatusCode::CONFLICT,
        ServiceError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        ServiceError::Taken(_) | ServiceError::LastAdmin | ServiceError::Conflict(_) => {
            StatusCode::CONFLICT
        }
        ServiceError::LoginLocked { .. } => StatusCode::TOO_MANY_REQUESTS,
        ServiceError::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
        ServiceError::Unavailable(_) | ServiceError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        ServiceError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Problem types that clients tell apart by their last word (RFC 9457 suggests a tag URI
/// for a type that is not meant to be looked up).
pub const LOGIN_LOCKED: &str = "tag:user-service,2026:problems/login-locked";
pub const EMAIL_NOT_VERIFIED: &str = "tag:user-service,2026:problems/email-not-verified";
pub const HASHING_BUSY: &str = "tag:user-service,2026:problems/hashing-busy";
pub const IDEMPOTENCY_KEY_REUSED: &str = "tag:user-service,2026:problems/idempotency-key-reused";
pub const IDEMPOTENCY_KEY_IN_FLIGHT: &str =
    "tag:user-service,2026:problems/idempotency-key-in-flight";
pub const PRECONDITION_FAILED: &str = "tag:user-service,2026:problems/precondition-failed";
/// The `mfa_token` of a login's second step is spent, expired or unknown: a new code will
/// not help, the login starts again.
pub const MFA_TOKEN_INVALID: &str = "tag:user-service,2026:problems/mfa-token-invalid";

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Service(error) => service_status(error),
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut errors = Vec::new();
        match self {
            ApiError::Validation(fields) => errors.clone_from(fields),
            ApiError::Service(error) => {
                if let Some(kind) = error.database_failure() {
                    metrics::record_database_error(kind);
                }
                match error {
                    ServiceError::Internal(cause) => {
                        tracing::error!(error = format!("{cause:#}"), "request failed");
                    }
                    ServiceError::Unavailable(cause) => {
                        tracing::warn!(error = format!("{cause:#}"), "database unavailable");
                    }
                    ServiceError::Taken(field) => {
                        errors.push(FieldError::new(field.as_str(), "is already taken"));
                    }
                    ServiceError::Invalid { field, message } => {
                        errors.push(FieldError::new(*field, *message));
                    }
                    // Named, so that a form can mark the field.
                    ServiceError::Forbidden(Refusal::CurrentPasswordWrong) => {
                        errors.push(FieldError::new("current_password", "is missing or wrong"));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
        // A refused field reads like any other invalid request; the field says why.
        let detail = match self {
            ApiError::Service(ServiceError::Invalid { .. }) => "the request is invalid".to_owned(),
            _ => self.to_string(),
        };
        let mut problem = Problem::new(self.status_code(), detail).with_errors(errors);
        if let ApiError::Service(ServiceError::EmailNotVerified) = self {
            problem.kind = EMAIL_NOT_VERIFIED;
        }
        if let ApiError::Service(ServiceError::IdempotencyKeyReused) = self {
            problem.kind = IDEMPOTENCY_KEY_REUSED;
        }
        if let ApiError::Service(ServiceError::IdempotencyKeyInFlight) = self {
            problem.kind = IDEMPOTENCY_KEY_IN_FLIGHT;
            let mut response = problem.response();
            // The first request is at most a few seconds from its answer.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
            return response;
        }
        if let ApiError::Service(ServiceError::PreconditionFailed) = self {
            problem.kind = PRECONDITION_FAILED;
        }
        if let ApiError::Service(ServiceError::InvalidCredentials(Credential::MfaToken)) = self {
            problem.kind = MFA_TOKEN_INVALID;
        }
        if let ApiError::Service(ServiceError::Busy) = self {
            problem.kind = HASHING_BUSY;
            let mut response = problem.response();
            // A place in the queue frees as soon as one hash ends: well within a second.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(1));
            return response;
        }
        if let ApiError::Service(ServiceError::LoginLocked { retry_after }) = self {
            problem.kind = LOGIN_LOCKED;
            let mut response = problem.response();
            // Whole seconds left, rounded up, and at least 1.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(seconds.max(1)),
            );
            return response;
        }
        problem.response()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    #[actix_web::test]
    async fn internal_errors_reveal_nothing() {
        let error = ApiError::from(ServiceError::internal(anyhow::anyhow!(
            "secret table users_v2 is corrupt"
        )));
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let body = to_bytes(response.into_body()).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("users_v2"), "{text}");
        assert!(text.contains("\"status\":500"), "{text}");
    }

    async fn problem_of(response: HttpResponse) -> serde_json::Value {
        serde_json::from_slice(&to_bytes(response.into_body()).await.unwrap()).unwrap()
    }

    #[actix_web::test]
    async fn duplicates_become_conflicts_naming_the_field() {
        let error = ApiError::from(ServiceError::Taken(crate::services::UniqueField::Username));
        assert_eq!(error.status_code(), StatusCode::CONFLICT);
        let problem = problem_of(error.error_response()).await;
        assert_eq!(
            problem["errors"],
            serde_json::json!([{"field": "username", "message": "is already taken"}])
        );
        assert_eq!(problem["detail"], "username is already taken");
    }

    #[actix_web::test]
    async fn a_full_hashing_queue_asks_to_retry_shortly() {
        let error = ApiError::from(ServiceError::Busy);
        let response = error.error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers().get(header::RETRY_AFTER).unwrap(), "1");
        assert_eq!(
            response.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        let problem = problem_of(response).await;
        assert_eq!(problem["type"], HASHING_BUSY);
        assert_eq!(problem["status"], 503);
    }
}
