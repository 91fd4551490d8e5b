//! One error type for the HTTP layer, rendered as an RFC 9457 problem document.

use actix_web::{
    HttpResponse, ResponseError,
    http::{StatusCode, header},
};
use serde::Serialize;

use crate::storage::StorageError;

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

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400: the body is not JSON, or a query parameter is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// 401 for a missing or bad bearer token. The reason is logged, never sent.
    #[error("missing or invalid bearer token")]
    Unauthenticated,
    /// 401 for a failed login or a refused refresh/reset token: one body for every reason.
    #[error("{0}")]
    InvalidCredentials(&'static str),
    /// 403
    #[error("{0}")]
    Forbidden(String),
    /// 404
    #[error("{0}")]
    NotFound(String),
    /// 409, with the fields at fault.
    #[error("{message}")]
    Conflict {
        message: String,
        errors: Vec<FieldError>,
    },
    /// 413
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// 415
    #[error("the request body must be application/json")]
    UnsupportedMediaType,
    /// 422, every bad field at once.
    #[error("the request is invalid")]
    Validation(Vec<FieldError>),
    /// 503: the database does not answer.
    #[error("the service is temporarily unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// 500: a bug. The cause is logged; the client learns nothing of it.
    #[error("internal server error")]
    Internal(#[source] anyhow::Error),
}

impl AppError {
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    pub fn not_found() -> Self {
        Self::NotFound("no such user".to_owned())
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError::new(field, message)])
    }
}

impl From<StorageError> for AppError {
    fn from(error: StorageError) -> Self {
        match error {
            StorageError::Duplicate(field) => AppError::Conflict {
                message: format!("{field} is already taken"),
                errors: vec![FieldError::new(field.as_str(), "is already taken")],
            },
            StorageError::Unavailable(e) => {
                crate::metrics::record_database_error("unavailable");
                AppError::Unavailable(e)
            }
            StorageError::Internal(e) => {
                crate::metrics::record_database_error("internal");
                AppError::Internal(e)
            }
        }
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
    /// One entry per bad field (validation and conflicts only).
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

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthenticated | AppError::InvalidCredentials(_) => StatusCode::UNAUTHORIZED,
            AppError::Forbidden(_) => StatusCode::FORBIDDEN,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict { .. } => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::Internal(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
            }
            AppError::Unavailable(cause) => {
                tracing::warn!(error = format!("{cause:#}"), "database unavailable");
            }
            _ => {}
        }
        let errors = match self {
            AppError::Validation(errors) | AppError::Conflict { errors, .. } => errors.clone(),
            _ => Vec::new(),
        };
        Problem::new(self.status_code(), self.to_string())
            .with_errors(errors)
            .response()
    }
}

#[cfg(test)]
mod tests {
    use actix_web::body::to_bytes;

    use super::*;

    #[actix_web::test]
    async fn internal_errors_reveal_nothing() {
        let error = AppError::internal(anyhow::anyhow!("secret table users_v2 is corrupt"));
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

    #[test]
    fn duplicates_become_conflicts_naming_the_field() {
        let error = AppError::from(StorageError::Duplicate(
            crate::storage::UniqueField::Username,
        ));
        assert_eq!(error.status_code(), StatusCode::CONFLICT);
        let AppError::Conflict { errors, .. } = error else {
            panic!("not a conflict");
        };
        assert_eq!(
            errors,
            vec![FieldError::new("username", "is already taken")]
        );
    }
}
