//! Two-factor sign-in: enrolment, recovery codes, switching off.

use actix_web::{HttpResponse, delete, post, web};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    AppState,
    auth::code,
    error::{ApiError, Problem},
    extract::SignedIn,
    json::{FieldErrors, JsonBody},
    users::{UserPath, user_id},
};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(start_totp)
        .service(confirm_totp)
        .service(regenerate_recovery_codes)
        .service(disable)
        .service(reset);
}

/// The password of the signed-in user, asked before a change of their credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CurrentPasswordRequest {
    /// Missing or wrong: 403.
    current_password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"secret": "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
    "otpauth_url": "otpauth://totp/user-service:mario%40example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=user-service"}))]
pub struct EnrolmentResponse {
    /// Base32, for typing into an authenticator app.
    pub secret: String,
    /// The same for a QR code.
    pub otpauth_url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    /// Ten single-use codes, shown only this once.
    #[schema(min_items = 10, max_items = 10)]
    pub recovery_codes: Vec<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConfirmRequest {
    /// The current code of the authenticator app.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 64)]
    code: Option<String>,
}

#[utoipa::path(
    context_path = "/api", tag = "mfa", operation_id = "start_totp", summary = "Start TOTP enrolment",
    request_body = CurrentPasswordRequest, security(("bearer_auth" = [])),
    responses((status = 200, description = "A new pending secret; MFA is not on until confirmed", body = EnrolmentResponse), (status = 403, description = "current_password missing or wrong", body = Problem, content_type = "application/problem+json"), (status = 409, description = "MFA is on already", body = Problem, content_type = "application/problem+json"))
)]
#[post("/users/me/mfa/totp")]
pub(crate) async fn start_totp(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<CurrentPasswordRequest>()?;
    let enrolment = state
        .mfa
        .start(&actor, request.current_password.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(EnrolmentResponse {
        secret: enrolment.secret,
        otpauth_url: enrolment.otpauth_url,
    }))
}

#[utoipa::path(
    context_path = "/api", tag = "mfa", operation_id = "confirm_totp", summary = "Confirm TOTP enrolment with a code",
    request_body = ConfirmRequest, security(("bearer_auth" = [])),
    responses((status = 200, description = "MFA is on; the recovery codes, shown once", body = RecoveryCodesResponse), (status = 409, description = "No enrolment started, or MFA is on already", body = Problem, content_type = "application/problem+json"), (status = 422, description = "Wrong code", body = Problem, content_type = "application/problem+json"))
)]
#[post("/users/me/mfa/totp/confirm")]
pub(crate) async fn confirm_totp(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<ConfirmRequest>()?;
    let mut errors = FieldErrors::default();
    let code = errors.required("code", request.code.as_deref(), code);
    let code = errors.finish(|| code)?;
    let recovery_codes = state.mfa.confirm(&actor, &code).await?;
    Ok(HttpResponse::Ok().json(RecoveryCodesResponse { recovery_codes }))
}

#[utoipa::path(
    context_path = "/api", tag = "mfa", operation_id = "regenerate_recovery_codes", summary = "A new set of recovery codes",
    request_body = CurrentPasswordRequest, security(("bearer_auth" = [])),
    responses((status = 200, description = "The new set; the old one stops working", body = RecoveryCodesResponse), (status = 403, description = "current_password missing or wrong", body = Problem, content_type = "application/problem+json"), (status = 409, description = "MFA is not on", body = Problem, content_type = "application/problem+json"))
)]
#[post("/users/me/mfa/recovery-codes")]
pub(crate) async fn regenerate_recovery_codes(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<CurrentPasswordRequest>()?;
    let recovery_codes = state
        .mfa
        .regenerate_recovery_codes(&actor, request.current_password.as_deref())
        .await?;
    Ok(HttpResponse::Ok().json(RecoveryCodesResponse { recovery_codes }))
}

#[utoipa::path(
    context_path = "/api", tag = "mfa", operation_id = "disable_mfa", summary = "Switch two-factor sign-in off",
    request_body = CurrentPasswordRequest, security(("bearer_auth" = [])),
    responses((status = 204, description = "MFA is off"), (status = 403, description = "current_password missing or wrong", body = Problem, content_type = "application/problem+json"), (status = 409, description = "MFA is not on", body = Problem, content_type = "application/problem+json"))
)]
#[post("/users/me/mfa/disable")]
pub(crate) async fn disable(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    body: JsonBody,
) -> Result<HttpResponse, ApiError> {
    let request = body.parse::<CurrentPasswordRequest>()?;
    state
        .mfa
        .disable(&actor, request.current_password.as_deref())
        .await?;
    Ok(HttpResponse::NoContent().finish())
}

#[utoipa::path(
    context_path = "/api", tag = "mfa", operation_id = "reset_mfa", summary = "Switch a user's MFA off (admin; a lost device)",
    params(UserPath), security(("bearer_auth" = [])),
    responses((status = 204, description = "That user's MFA is off"), (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"), (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"))
)]
#[delete("/users/{id}/mfa")]
pub(crate) async fn reset(
    state: web::Data<AppState>,
    SignedIn(actor): SignedIn,
    path: web::Path<UserPath>,
) -> Result<HttpResponse, ApiError> {
    let admin = actor.admin()?;
    state.mfa.reset(admin, user_id(&path.id)?).await?;
    Ok(HttpResponse::NoContent().finish())
}
